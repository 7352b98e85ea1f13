"""The dead letter: a record a function gave up on, kept with why, how often and where from.

- On a Redis stream trigger it is an entry of the dead-letter stream: the original entry's
  fields, plus ``_error``, ``_attempts``, ``_source_id`` (the entry's id) and ``_function``.
  Replayed, it goes back on the stream without those, carrying ``_origin_id``: the id it was
  first appended as, so a handler that remembers work by entry id knows it again.
- On a Kafka trigger it is a record of the dead-letter topic: the original key and value,
  with the headers ``error``, ``attempts``, ``source`` (``topic/partition/offset``) and
  ``function``. Replayed, it goes back to the topic with the header ``replay_of``.

The runtime writes both (the stream runner, the failure policy, Lambda's adapter); the
``dead-letters`` command lists and replays them through the same functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

ERROR_FIELD = "_error"
ATTEMPTS_FIELD = "_attempts"
SOURCE_FIELD = "_source_id"
FUNCTION_FIELD = "_function"
# Fields the runtime adds to a dead-lettered entry (everything else is the original entry).
RUNTIME_FIELDS = (ERROR_FIELD, ATTEMPTS_FIELD, SOURCE_FIELD, FUNCTION_FIELD)
ORIGIN_FIELD = "_origin_id"

ERROR_HEADER = "error"
ATTEMPTS_HEADER = "attempts"
SOURCE_HEADER = "source"
FUNCTION_HEADER = "function"
REPLAY_HEADER = "replay_of"
# The payload keys of a Kafka dead letter as ``DeadLetter.payload`` shows it.
KEY, VALUE = "key", "value"

# A record's headers as the Kafka client gives them: pairs, or a mapping.
Headers = Iterable[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None]
# An error longer than this is cut: a dead letter says why, it does not hold a log.
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter: where it sits, what failed, how often, and its original payload."""

    id: str
    source: str
    error: str
    attempts: int
    payload: dict[str, str]


def stream_entry(
    fields: Mapping[str, str], entry_id: str, reason: str, attempts: int, function: str
) -> dict[str, str]:
    """The dead-letter stream entry of the entry ``entry_id`` with ``fields``."""
    entry = _original(fields)
    entry[ERROR_FIELD] = reason[:MAX_ERROR_CHARS]
    entry[ATTEMPTS_FIELD] = str(attempts)
    entry[SOURCE_FIELD] = entry_id
    entry[FUNCTION_FIELD] = function
    return entry


def from_stream_entry(letter_id: str, fields: Mapping[str, str]) -> DeadLetter:
    """A dead-letter stream entry as a dead letter named ``letter_id``."""
    return DeadLetter(
        id=letter_id,
        source=fields.get(SOURCE_FIELD, ""),
        error=fields.get(ERROR_FIELD, ""),
        attempts=int(fields.get(ATTEMPTS_FIELD) or 0),
        payload=_original(fields),
    )


def replay_entry(entry_id: str, fields: Mapping[str, str]) -> dict[str, str]:
    """The stream entry that replays the dead-letter entry ``entry_id``."""
    entry = _original(fields)
    entry[ORIGIN_FIELD] = fields.get(ORIGIN_FIELD) or fields.get(SOURCE_FIELD, entry_id)
    return entry


def kafka_headers(
    reason: str, attempts: int, source: str, function: str
) -> dict[str, str | bytes | None]:
    """The headers of the dead-letter record of the record ``source``."""
    return {
        ERROR_HEADER: reason[:MAX_ERROR_CHARS],
        ATTEMPTS_HEADER: str(attempts),
        SOURCE_HEADER: source,
        FUNCTION_HEADER: function,
    }


def from_kafka(
    letter_id: str,
    key: bytes | None,
    value: bytes | None,
    headers: Headers,
) -> DeadLetter:
    """A dead-letter topic record as a dead letter named ``letter_id``."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    named = {k: _text(v) for k, v in pairs}
    return DeadLetter(
        id=letter_id,
        source=named.get(SOURCE_HEADER, ""),
        error=named.get(ERROR_HEADER, ""),
        attempts=int(named.get(ATTEMPTS_HEADER) or 0),
        payload={
            KEY: key.decode("utf-8", "surrogateescape") if key is not None else "",
            VALUE: (value or b"").decode("utf-8", "surrogateescape"),
        },
    )


def kafka_replay(letter: DeadLetter) -> tuple[str | None, bytes, dict[str, str | bytes | None]]:
    """The key, value and headers that put a Kafka dead letter back on its topic."""
    return (
        letter.payload.get(KEY) or None,
        letter.payload.get(VALUE, "").encode("utf-8", "surrogateescape"),
        {REPLAY_HEADER: letter.id},
    )


def _text(header: str | bytes | None) -> str:
    if isinstance(header, str):
        return header
    return (header or b"").decode("utf-8", "replace")


def _original(fields: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k not in RUNTIME_FIELDS}
