"""Settings: typed casts that name their variable, unknown variables refused, one spelling."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from chat.ratelimit import parse_limits
from chat.settings import PROCESS_VARIABLES, Settings, env_name, env_values

REPO = Path(__file__).resolve().parents[2]
# Where variables are spelled out: the code and its tests, the image, the compose stack.
SPELLED_IN = ("chat", "functions", "realtime", "infra", "devstack", "bench", "scripts", "tests")
VARIABLE = re.compile(r"\bCHAT_[A-Z0-9_]*[A-Z0-9]\b")


def test_variables_are_cast_to_their_fields_types() -> None:
    settings = Settings.from_env(
        {
            "CHAT_INBOUND_PARTITIONS": "4",
            "CHAT_DEV_AUTH": "true",
            "CHAT_JWT_SECRET": "",
            "CHAT_CORS_ORIGINS": " https://a.example , https://b.example ,",
            "CHAT_PRIVATE_ROOMS": "",
            "CHAT_REDIS_URL": "redis://cache:6379/1",
        }
    )
    assert settings.inbound_partitions == 4
    assert settings.dev_auth is True
    assert settings.jwt_secret is None
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.private_rooms == ()
    assert settings.redis_url == "redis://cache:6379/1"
    assert Settings.from_env({}).private_rooms == ("private:*",)


def test_a_bad_value_names_its_variable() -> None:
    with pytest.raises(ValueError, match=r"^CHAT_INBOUND_PARTITIONS: not an integer: 'x'$"):
        Settings.from_env({"CHAT_INBOUND_PARTITIONS": "x"})
    with pytest.raises(ValueError, match=r"^CHAT_DEV_AUTH: not a boolean: 'maybe' \(use true"):
        Settings.from_env({"CHAT_DEV_AUTH": "maybe"})


def test_a_value_out_of_range_names_its_variable() -> None:
    cases = {
        "CHAT_INBOUND_PARTITIONS": ("0", "must be positive, not 0"),
        "CHAT_RETENTION_DAYS": ("-1", r"must be >= 0 \(0: keep every message\), not -1"),
        "CHAT_REDIS_MODE": ("sentinel", "must be standalone or cluster, not 'sentinel'"),
        "CHAT_ENVIRONMENT": ("staging", "must be dev or test or prod, not 'staging'"),
        "CHAT_PRESENCE_TTL_S": ("4", "must exceed two presence heartbeats"),
    }
    for variable, (raw, message) in cases.items():
        with pytest.raises(ValueError, match=f"^{variable} {message}"):
            Settings.from_env({variable: raw})


def test_an_unknown_chat_variable_is_refused_and_a_close_name_suggested() -> None:
    with pytest.raises(ValueError) as refused:
        Settings.from_env({"CHAT_REDIS_ULR": "redis://elsewhere", "CHAT_NOTHING_LIKE_IT": "1"})
    message = str(refused.value)
    assert "CHAT_REDIS_ULR (did you mean CHAT_REDIS_URL?)" in message
    assert "CHAT_NOTHING_LIKE_IT" in message and "fix or unset it" in message
    # Only the prefix is ours: other variables are no business of Settings.
    assert Settings.from_env({"CHATTY": "1", "REDIS_URL": "x"}) == Settings.from_env({})


def test_process_variables_are_known_and_change_no_setting() -> None:
    environ = {env_name(name): "x" for name in PROCESS_VARIABLES}
    assert set(environ) == {
        "CHAT_AWS_SECRETS",
        "CHAT_FUNCTION",
        "CHAT_BRIDGE_FUNCTION",
        "CHAT_BRIDGE_LAMBDA",
        "CHAT_LOG_JSON",
        "CHAT_LOG_LEVEL",
    }
    assert Settings.from_env(environ) == Settings.from_env({})


def test_a_list_setting_takes_a_tuple_not_a_comma_string() -> None:
    with pytest.raises(TypeError, match=r"tuple of strings.*CHAT_CORS_ORIGINS=a,b"):
        Settings(cors_origins="https://a.example")  # type: ignore[arg-type]


def test_env_values_read_back_as_the_same_settings() -> None:
    # A value of every type, none of them the default.
    wanted = Settings(
        environment="test",
        inbound_partitions=3,
        dev_auth=True,
        jwt_secret="s" * 32,
        cors_origins=("https://a.example", "https://b.example"),
        private_rooms=("team-*", "private:*"),
        node_id="node-7",
    )
    environ = env_values(**{f.name: getattr(wanted, f.name) for f in fields(Settings)})
    assert Settings.from_env(environ) == wanted
    assert env_values(jwt_secret=None, dev_auth=False) == {
        "CHAT_JWT_SECRET": "",
        "CHAT_DEV_AUTH": "false",
    }


def test_env_name_knows_settings_and_process_variables_only() -> None:
    assert env_name("redis_url") == "CHAT_REDIS_URL"
    assert env_name("function") == "CHAT_FUNCTION"
    for wrong in ("redis_ulr", "REDIS_URL", "prefix"):
        with pytest.raises(KeyError, match="no setting named"):
            env_name(wrong)


def test_a_bad_rate_limit_names_its_variable() -> None:
    assert parse_limits(Settings().rate_limits)
    with pytest.raises(ValueError, match=r"'send\.room=1:2' \(CHAT_RATE_LIMITS\)"):
        parse_limits("send.room=1:2")


def test_every_chat_variable_spelled_in_the_tree_is_known() -> None:
    files = [p for d in SPELLED_IN for p in (REPO / d).rglob("*.py")]
    files += [REPO / "compose.yaml", REPO / "Dockerfile", REPO / "Makefile"]
    files += sorted((REPO / "scripts").glob("*.sh"))
    files += sorted((REPO / "deploy").glob("*"))
    known = {env_name(f.name) for f in fields(Settings)} | {
        env_name(name) for name in PROCESS_VARIABLES
    }
    unknown: dict[str, set[str]] = {}
    for path in files:
        if path == Path(__file__).resolve() or not path.is_file():
            continue
        for variable in VARIABLE.findall(path.read_text(errors="replace")):
            if variable not in known:
                unknown.setdefault(variable, set()).add(str(path.relative_to(REPO)))
    assert not unknown, f"declare these in chat/settings.py or fix their spelling: {unknown}"
