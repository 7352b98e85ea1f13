"""Who may connect: valid tokens in, forged/expired/missing ones out; dev ids only in dev mode."""

from __future__ import annotations

import time

import jwt
import pytest

from chat.auth import authenticate, authenticate_http
from chat.contract import ContractError, ErrorCode
from chat.settings import Settings

SECRET = "unit-test-secret-of-sufficient-length"
PROD = Settings(environment="prod", jwt_secret=SECRET)
DEV = Settings(environment="dev", dev_auth=True, jwt_secret=SECRET)


def _token(secret: str = SECRET, **claims: object) -> str:
    return jwt.encode({"sub": "ann", **claims}, secret, algorithm="HS256")


def _refused(auth: object, settings: Settings) -> str:
    with pytest.raises(ContractError) as caught:
        authenticate(auth, settings)
    assert caught.value.code == ErrorCode.UNAUTHORIZED
    return caught.value.message


def test_a_valid_token_gives_the_user_and_name() -> None:
    identity = authenticate({"token": _token(name="Ann", exp=int(time.time()) + 60)}, PROD)
    assert (identity.user, identity.name) == ("ann", "Ann")
    assert identity.claim("name") == "Ann"


def test_forged_expired_missing_and_subjectless_tokens_are_refused() -> None:
    assert "invalid" in _refused(
        {"token": _token(secret="another-secret-of-the-same-sufficient-len")}, PROD
    )
    assert "expired" in _refused({"token": _token(exp=int(time.time()) - 5)}, PROD)
    assert "missing" in _refused({}, PROD)
    assert "missing" in _refused(None, PROD)
    no_sub = jwt.encode({"name": "x"}, SECRET, algorithm="HS256")
    assert "sub" in _refused({"token": no_sub}, PROD)
    assert "invalid" in _refused({"token": "not.a.jwt"}, PROD)


def test_bare_user_ids_only_in_dev_mode() -> None:
    assert authenticate({"user": "bob"}, DEV).user == "bob"
    _refused({"user": "bob"}, PROD)
    _refused({"user": ""}, DEV)
    _refused({"user": 5}, DEV)


def test_dev_auth_cannot_be_switched_on_in_prod() -> None:
    with pytest.raises(ValueError, match="CHAT_DEV_AUTH"):
        Settings(environment="prod", dev_auth=True)


def test_http_auth_takes_bearer_tokens_and_dev_headers() -> None:
    assert authenticate_http({"authorization": f"Bearer {_token()}"}, PROD).user == "ann"
    assert authenticate_http({"x-user": "bob"}, DEV).user == "bob"
    for headers in ({"x-user": "bob"}, {"authorization": "Basic abc"}, {}):
        with pytest.raises(ContractError):
            authenticate_http(headers, PROD)


def test_settings_read_the_environment_with_casts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_DEV_AUTH", "true")
    monkeypatch.setenv("CHAT_RECENT_LOG_LEN", "50")
    monkeypatch.setenv("CHAT_JWT_SECRET", "")
    settings = Settings.from_env(environment="test")
    assert settings.dev_auth is True
    assert settings.recent_log_len == 50
    assert settings.jwt_secret is None
    assert settings.environment == "test"
    monkeypatch.setenv("CHAT_DEV_AUTH", "maybe")
    with pytest.raises(ValueError, match="boolean"):
        Settings.from_env()


def test_prod_refuses_a_short_hmac_secret() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Settings(environment="prod", jwt_secret="short")
