"""Who is speaking: JWT (HS256 by default) or, in dev mode only, a bare user id."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any

import jwt

from chat.contract import ContractError, ErrorCode, check_user_id
from chat.settings import Settings, comma_items

# A compact JWS is three base64url parts: anything else is refused before it is decoded.
MAX_TOKEN_CHARS = 8192
ADMIN_CLAIM = "admin"


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated user and the token claims that came with it."""

    user: str
    name: str | None = None
    claims: tuple[tuple[str, Any], ...] = ()

    def claim(self, key: str, default: Any = None) -> Any:
        """One claim of the user's token, or ``default``."""
        return dict(self.claims).get(key, default)

    def expired(self, now: float | None = None) -> bool:
        """True once the token's ``exp`` has passed (never for tokens without one)."""
        exp = self.claim("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            return False
        return (time.time() if now is None else now) >= exp

    @property
    def admin(self) -> bool:
        """True when the token grants ``"admin": true`` (dev identities never do)."""
        return self.claim(ADMIN_CLAIM) is True


def _check_user(user: object) -> str:
    return check_user_id(user, ErrorCode.UNAUTHORIZED)


def verify_token(token: object, settings: Settings) -> Identity:
    """Verify a JWT and return its identity, or raise ``unauthorized``."""
    if not isinstance(token, str) or not token:
        raise ContractError(ErrorCode.UNAUTHORIZED, "missing token")
    # PyJWT encodes a str token as UTF-8 first: a lone surrogate would raise outside its errors.
    if not token.isascii() or len(token) > MAX_TOKEN_CHARS:
        raise ContractError(
            ErrorCode.UNAUTHORIZED,
            f"invalid token: a JWT is at most {MAX_TOKEN_CHARS} ASCII characters",
        )
    if not settings.jwt_secret:
        raise ContractError(ErrorCode.UNAUTHORIZED, "tokens are not accepted: no secret configured")
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[settings.jwt_algorithm],
            options={"require": ["sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise ContractError(ErrorCode.UNAUTHORIZED, "token expired") from None
    except jwt.InvalidTokenError as exc:
        raise ContractError(ErrorCode.UNAUTHORIZED, f"invalid token: {exc}") from None
    name = claims.get("name")
    return Identity(
        user=_check_user(claims["sub"]),
        name=name if isinstance(name, str) else None,
        claims=tuple(sorted(claims.items())),
    )


def authenticate(auth: object, settings: Settings) -> Identity:
    """Identity from a Socket.IO ``auth`` object: ``{"token": ...}`` or (dev) ``{"user": ...}``."""
    if not isinstance(auth, dict):
        raise ContractError(
            ErrorCode.UNAUTHORIZED, "missing auth: connect with auth={token: <JWT>}"
        )
    if "token" in auth:
        return verify_token(auth["token"], settings)
    if settings.dev_auth and "user" in auth:
        return Identity(user=_check_user(auth["user"]))
    raise ContractError(ErrorCode.UNAUTHORIZED, "missing token")


def authenticate_http(headers: Any, settings: Settings) -> Identity:
    """Identity from HTTP headers: ``Authorization: Bearer`` or, in dev mode, ``X-User``."""
    header = headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            raise ContractError(ErrorCode.UNAUTHORIZED, "use Authorization: Bearer <JWT>")
        return verify_token(token.strip(), settings)
    user = headers.get("x-user")
    if settings.dev_auth and user:
        return Identity(user=_check_user(user))
    raise ContractError(ErrorCode.UNAUTHORIZED, "missing token: send Authorization: Bearer <JWT>")


ROOMS_CLAIM = "rooms"


@lru_cache(maxsize=64)
def room_patterns(spec: str) -> tuple[str, ...]:
    """The glob patterns of a comma-separated list, blanks dropped."""
    return comma_items(spec)


def is_private(room: str, settings: Settings) -> bool:
    """True when ``room`` matches one of the configured private-room patterns."""
    return any(fnmatchcase(room, p) for p in settings.private_rooms)


def _granted(claim: object) -> Iterable[str]:
    # A single string is accepted as a comma-separated list, as issuers often write scopes.
    if isinstance(claim, str):
        return room_patterns(claim)
    if isinstance(claim, list | tuple):
        return (p for p in claim if isinstance(p, str))
    return ()


def authorize_room(identity: Identity, room: str, settings: Settings) -> None:
    """Raise ``forbidden`` unless ``identity`` may read and write ``room``.

    Public rooms are open to every authenticated user. A room matching ``settings.private_rooms``
    (globs, ``CHAT_PRIVATE_ROOMS``) needs a token claim ``rooms``: a list of room
    names or globs (or one comma-separated string), one of which matches the room. Dev-mode
    identities carry no claims, so they never enter private rooms.
    """
    if not is_private(room, settings):
        return
    if any(fnmatchcase(room, pattern) for pattern in _granted(identity.claim(ROOMS_CLAIM))):
        return
    raise ContractError(ErrorCode.FORBIDDEN, f"room {room!r} is private and not granted to you")
