"""Pure rules of the realtime tier: room authorization, rate-limit specs, presence entries."""

from __future__ import annotations

import time

import pytest

from chat import frames
from chat.auth import Identity, authorize_room, is_private
from chat.contract import ContractError, ErrorCode
from chat.ratelimit import Limit, parse_limits
from chat.settings import Settings
from realtime.presence import member, parse_member, snapshot
from realtime.server import socket_origins

SETTINGS = Settings(private_rooms=("private:*", "team-*.secret"))


def _who(**claims: object) -> Identity:
    return Identity(user="ann", claims=tuple(sorted(claims.items())))


def _forbidden(identity: Identity, room: str) -> None:
    with pytest.raises(ContractError) as caught:
        authorize_room(identity, room, SETTINGS)
    assert caught.value.code == ErrorCode.FORBIDDEN
    assert room in caught.value.message


def test_public_rooms_are_open_to_everyone() -> None:
    assert not is_private("lobby", SETTINGS)
    authorize_room(Identity(user="dev-user"), "lobby", SETTINGS)
    authorize_room(_who(rooms=[]), "team-a.public", SETTINGS)


def test_private_rooms_need_a_matching_rooms_claim() -> None:
    assert is_private("private:ops", SETTINGS) and is_private("team-a.secret", SETTINGS)
    _forbidden(Identity(user="dev-user"), "private:ops")
    _forbidden(_who(rooms=["private:dev"]), "private:ops")
    _forbidden(_who(rooms="private:dev"), "private:ops")
    _forbidden(_who(rooms=42), "private:ops")
    _forbidden(_who(rooms=[None, 7]), "team-a.secret")
    authorize_room(_who(rooms=["private:ops"]), "private:ops", SETTINGS)
    authorize_room(_who(rooms=["private:*"]), "private:anything", SETTINGS)
    authorize_room(_who(rooms="lobby, team-*.secret"), "team-b.secret", SETTINGS)


def test_glob_matching_is_case_sensitive_and_whole_name() -> None:
    _forbidden(_who(rooms=["PRIVATE:OPS"]), "private:ops")
    _forbidden(_who(rooms=["private:op"]), "private:ops")
    assert not is_private("x-private:ops", SETTINGS)


def test_no_private_pattern_means_no_private_room() -> None:
    assert not is_private("private:ops", Settings(private_rooms=()))


def test_expiry_is_read_from_the_exp_claim() -> None:
    now = time.time()
    assert _who(exp=now - 1).expired(now)
    assert not _who(exp=now + 60).expired(now)
    assert not _who().expired(now)
    assert not _who(exp="soon").expired(now)


def test_rate_limit_specs_parse_and_bad_ones_name_the_part() -> None:
    limits = parse_limits("send.user=20:40, typing.socket=0.5:3,")
    assert limits == {("send", "user"): Limit(20, 40), ("typing", "socket"): Limit(0.5, 3)}
    assert limits["send", "user"].interval_ms == 50
    assert limits["send", "user"].tolerance_ms == 2000
    for bad in ("send.room=1:2", "send.user=1", "send.user=-1:2", "send=1:2", "x.user=0:3"):
        with pytest.raises(ValueError, match=r"rate limit|per_s"):
            parse_limits(bad)
    with pytest.raises(ValueError, match="twice"):
        parse_limits("send.user=1:2,send.user=3:4")
    with pytest.raises(ValueError, match="burst"):
        Limit(1, 0)


def test_the_default_settings_parse() -> None:
    limits = parse_limits(Settings().rate_limits)
    assert {"send", "typing", "join"} <= {event for event, _ in limits}


def test_presence_entries_keep_any_user_id_intact() -> None:
    entry = member("gateway-1", "sid-1", "ann:with\tno tab but @ and spaces")
    assert parse_member(entry) == ("gateway-1", "sid-1", "ann:with\tno tab but @ and spaces")


def test_presence_script_replies_decode_into_users_and_missing_members() -> None:
    got = snapshot("r", [1, 2, "ann", "bob", "n\ts\tcid"])
    assert (got.changed, got.users, got.missing) == (True, ["ann", "bob"], ["n\ts\tcid"])
    quiet = snapshot("r", [0, 0])
    assert (quiet.changed, quiet.users, quiet.missing) == (False, [], [])


def test_acceptance_time_of_a_message_is_read_from_its_ts() -> None:
    packet = '2["message",{"id":"i","text":"\\"ts\\":\\"x","ts":"2026-01-02T03:04:05.678Z"}]'
    assert frames.accepted_at(packet) == pytest.approx(1767323045.678)
    assert frames.accepted_at('2["message",{"ts":"yesterday"}]') is None
    assert frames.accepted_at('2["presence",{}]') is None


def test_settings_refuse_a_presence_ttl_within_two_heartbeats() -> None:
    with pytest.raises(ValueError, match="CHAT_PRESENCE_TTL_S"):
        Settings(presence_heartbeat_s=5, presence_ttl_s=10)


def test_socket_origins_default_to_the_pages_own_and_never_reflect_any_with_credentials() -> None:
    assert socket_origins(()) == (None, True)
    assert socket_origins(("https://a.example", "https://b.example")) == (
        ["https://a.example", "https://b.example"],
        True,
    )
    assert socket_origins(("*",)) == ("*", False)
