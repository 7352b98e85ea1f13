"""One validator per field: whole-string matches, Unicode scalar values, stable codes."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat.auth import authenticate, authenticate_http
from chat.contract import (
    MAX_TEXT_CHARS,
    ROOM_RE,
    ContractError,
    ErrorCode,
    JoinRequest,
    SendRequest,
    TypingRequest,
    check_room,
    check_text,
    parse,
)
from chat.settings import Settings

SECRET = "unit-test-secret-of-at-least-32-bytes!"
SETTINGS = Settings(jwt_secret=SECRET, dev_auth=True)

# Every code point, lone surrogates and NUL included: what a JSON "\\uXXXX" escape can carry.
any_text = st.text(st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF))
room_like = st.one_of(
    st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True).map(lambda r: r + "\n"),
    any_text,
)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), any_text)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.one_of(st.lists(inner), st.dictionaries(any_text, inner)),
    max_leaves=10,
)
send_like = st.fixed_dictionaries(
    {"room": room_like, "text": any_text, "client_msg_id": any_text},
    optional={"extra": json_value},
)


def _storable(value: str) -> bool:
    """What UTF-8 encoders (Redis, Kafka clients) and PostgreSQL text take."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


@pytest.mark.parametrize(
    "room", ["x\n", "x\r\n", "\nx", "a" * 65, "", "a b", "é", "x\x00", "\ud800"]
)
def test_a_room_must_match_as_a_whole_string(room: str) -> None:
    with pytest.raises(ContractError) as caught:
        parse(JoinRequest, {"room": room})
    assert caught.value.code is ErrorCode.INVALID_ROOM
    with pytest.raises(ContractError):
        check_room(room)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("\ud800", ErrorCode.INVALID_TEXT),
        ("hi \udfff there", ErrorCode.INVALID_TEXT),
        ("a\x00b", ErrorCode.INVALID_TEXT),
        ("bell\x07", ErrorCode.INVALID_TEXT),
        (" \t\n ", ErrorCode.INVALID_TEXT),
        ("x" * (MAX_TEXT_CHARS + 1), ErrorCode.TEXT_TOO_LONG),
    ],
)
def test_text_refusals_have_their_codes(text: str, code: ErrorCode) -> None:
    with pytest.raises(ContractError) as caught:
        parse(SendRequest, {"room": "r", "text": text, "client_msg_id": "c"})
    assert caught.value.code is code


def test_text_is_kept_as_sent_without_normalisation() -> None:
    # "é" as e + combining acute stays two code points: dedup and storage see what was sent.
    decomposed = "cafe\u0301 \U0001f600 \u2028 tab\there"
    assert check_text(f"  {decomposed}\n") == decomposed


@settings(max_examples=400, deadline=None)
@given(send_like)
def test_a_send_is_accepted_storable_or_refused_with_a_stable_code(payload: dict[str, Any]) -> None:
    try:
        request = parse(SendRequest, payload)
    except ContractError as exc:
        assert exc.code in set(ErrorCode) and exc.message
        return
    assert ROOM_RE.fullmatch(request.room) and "\n" not in request.room
    assert 1 <= len(request.text) <= MAX_TEXT_CHARS and request.text == request.text.strip()
    assert _storable(request.text) and _storable(request.client_msg_id)
    assert 1 <= len(request.client_msg_id) <= 64


@settings(max_examples=200, deadline=None)
@given(json_value, st.sampled_from([JoinRequest, SendRequest, TypingRequest]))
def test_any_payload_shape_gets_a_code_never_an_exception(payload: Any, kind: type) -> None:
    try:
        parse(kind, payload)
    except ContractError as exc:
        assert exc.code in set(ErrorCode)


@settings(max_examples=200, deadline=None)
@given(any_text)
def test_any_token_is_refused_cleanly(token: str) -> None:
    for auth in ({"token": token}, {"token": token + "\ud800"}):
        with pytest.raises(ContractError) as caught:
            authenticate(auth, SETTINGS)
        assert caught.value.code is ErrorCode.UNAUTHORIZED


def test_a_lone_surrogate_in_a_token_or_its_claims_is_unauthorized_not_a_crash() -> None:
    good = jwt.encode({"sub": "ann"}, SECRET, algorithm="HS256")
    assert authenticate({"token": good}, SETTINGS).user == "ann"
    for token in ("\ud800", good + "\udc00", good[:10] + "\ud83d" + good[10:]):
        with pytest.raises(ContractError) as caught:
            authenticate({"token": token}, SETTINGS)
        assert caught.value.code is ErrorCode.UNAUTHORIZED
    surrogate_sub = jwt.encode({"sub": "\ud800"}, SECRET, algorithm="HS256")
    with pytest.raises(ContractError):
        authenticate_http({"authorization": f"Bearer {surrogate_sub}"}, SETTINGS)
    with pytest.raises(ContractError):
        authenticate({"user": "ann\ud800"}, SETTINGS)


def test_the_admin_claim_must_be_true_exactly() -> None:
    def identity(claims: dict[str, Any]) -> bool:
        token = jwt.encode({"sub": "ann", **claims}, SECRET, algorithm="HS256")
        return authenticate({"token": token}, SETTINGS).admin

    assert identity({"admin": True})
    assert not identity({"admin": "true"}) and not identity({"admin": 1}) and not identity({})
    assert not authenticate({"user": "ann"}, SETTINGS).admin


def test_any_origin_is_for_dev_only() -> None:
    assert Settings(cors_origins=("*",)).cors_origins == ("*",)
    for environment in ("test", "prod"):
        with pytest.raises(ValueError, match="CHAT_CORS_ORIGINS"):
            Settings(environment=environment, cors_origins=("*",))
        explicit = Settings(environment=environment, cors_origins=("https://chat.example.com",))
        assert explicit.cors_origins == ("https://chat.example.com",)
    # Nothing configured: no browser origin at all, never every origin.
    assert Settings(environment="prod").cors_origins == ()
