"""The OpenAPI description of the HTTP functions, built from the registry's routes.

Every ``HttpRoute`` of the registry must have an operation here (``build_spec`` raises
otherwise), so the description cannot silently miss a route. Function hosts serve it at
``GET /openapi.json``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from chat.contract import MAX_SEQ
from functions import analytics, history, search
from functions.registry import FUNCTIONS, Function
from functions.store.users import MAX_DISPLAY_NAME_CHARS
from functions.triggers import HttpRoute

# ECMA-262 regular expressions (OpenAPI's dialect): `$` matches only at the very end there.
_ROOM = {
    "name": "room",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"},
}


def _query(name: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema}


def _int(low: int, high: int = MAX_SEQ) -> dict[str, Any]:
    return {"type": "integer", "minimum": low, "maximum": high}


_DATE = {"type": "string", "format": "date"}
_WINDOW = [_query("since", _DATE), _query("until", _DATE)]
_JSON_OBJECT = {"application/json": {"schema": {"type": "object"}}}

# "METHOD /path" -> (summary, parameters, request body or None)
OPERATIONS: dict[str, tuple[str, list[dict[str, Any]], dict[str, Any] | None]] = {
    "GET /rooms/{room}/messages": (
        "A page of the room's messages: newest, before a seq, or after one (catch-up)",
        [
            _ROOM,
            _query("limit", _int(1, history.MAX_LIMIT)),
            _query("before_seq", _int(1)),
            _query("after_seq", _int(0)),
            _query("thread", {"type": "string", "format": "uuid"}),
        ],
        None,
    ),
    "GET /rooms/{room}/events": (
        "Every room event (message, message_updated, message_deleted, reaction) after a seq",
        [_ROOM, _query("after_seq", _int(0)), _query("limit", _int(1, history.MAX_LIMIT))],
        None,
    ),
    "GET /me/rooms": (
        "The caller's rooms: last seq, read position and unread count of each",
        [],
        None,
    ),
    "GET /rooms/{room}/search": (
        "Full-text search of the room's stored messages, best first, paged by cursor",
        [
            _ROOM,
            _query(
                "q", {"type": "string", "minLength": 1, "maxLength": search.MAX_QUERY_CHARS}, True
            ),
            _query("limit", _int(1, search.MAX_LIMIT)),
            _query("cursor", {"type": "string"}),
        ],
        None,
    ),
    "GET /rooms/{room}": ("The room's metadata and member count", [_ROOM], None),
    "PUT /rooms/{room}": (
        "Create the room or rename it (its creator or an admin); the caller joins",
        [_ROOM],
        {
            "required": False,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "display_name": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": MAX_DISPLAY_NAME_CHARS,
                            }
                        },
                    }
                }
            },
        },
    ),
    "GET /analytics/rooms/{room}/daily": (
        "The room's messages per UTC day over a window of days",
        [_ROOM, *_WINDOW],
        None,
    ),
    "GET /analytics/active-users": ("Users who posted, per UTC day", _WINDOW, None),
    "GET /analytics/busiest-rooms": (
        "Rooms by messages over a window of days",
        [*_WINDOW, _query("limit", _int(1, analytics.MAX_ROOMS))],
        None,
    ),
}

_ERROR = {
    "description": "an error with a stable code",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                    },
                    "retry_after_ms": {"type": "integer"},
                },
            }
        }
    },
}
# Every status an HTTP function answers with; a 500 is never one of them.
_ERRORS = {
    "400": "bad input (invalid_parameter, invalid_room, invalid_payload)",
    "401": "no or bad credentials (unauthorized)",
    "403": "not allowed (forbidden)",
    "404": "no such room (not_found)",
    "413": "body too large (payload_too_large)",
    "429": "too many requests (rate_limited, with retry_after_ms)",
    "503": "a dependency is unavailable or the query timed out (unavailable); retry",
}


def _operation(key: str) -> dict[str, Any]:
    try:
        summary, parameters, body = OPERATIONS[key]
    except KeyError:
        raise KeyError(f"route {key!r} has no OpenAPI operation in functions/openapi.py") from None
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": parameters,
        "responses": {
            "200": {"description": "success", "content": _JSON_OBJECT},
            **{code: {**_ERROR, "description": text} for code, text in _ERRORS.items()},
        },
    }
    if body is not None:
        op["requestBody"] = body
    return op


def build_spec(functions: Sequence[Function] = FUNCTIONS) -> dict[str, Any]:
    """The OpenAPI 3.0 document of every HTTP route of ``functions``."""
    paths: dict[str, dict[str, Any]] = {}
    for fn in functions:
        if not isinstance(fn.trigger, HttpRoute):
            continue
        for method, path in fn.trigger.parsed():
            op = _operation(f"{method} {path}")
            op["operationId"] = re.sub(r"[^A-Za-z0-9]+", "_", f"{method} {path}").strip("_")
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "chat HTTP functions",
            "version": "2",
            "description": "History, search, rooms and analytics. Errors are JSON "
            '{"error": {"code", "message"}}; bad input never answers 500.',
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "devUser": {"type": "apiKey", "in": "header", "name": "X-User"},
            }
        },
        "security": [{"bearer": []}, {"devUser": []}],
        "paths": paths,
    }
