"""Scripts' KEYS and ARGV named once: the Lua binding and the Python call follow one order."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from chat import names, ratelimit
from chat.lua import Signature
from chat.ratelimit import Limit, RateLimiter, Spend, parse_limits
from chat.settings import Settings
from chat.shards import Shards
from functions import message
from functions.batch import StreamRecord


def test_the_preamble_binds_each_key_and_argument_to_its_name() -> None:
    signature = Signature(keys=("room_key", "log_key"), args=("user",))
    assert signature.preamble() == (
        "local room_key, log_key = KEYS[1], KEYS[2]\nlocal user = ARGV[1]\n"
    )
    assert signature.script("return user").source.endswith("local user = ARGV[1]\nreturn user")


def test_an_item_loop_binds_each_items_names_after_the_fixed_ones() -> None:
    signature = Signature(keys=("k",), args=("a", "b"), item_keys=("ik",), item_args=("x", "y"))
    assert signature.preamble().endswith("local item_count = (#KEYS - 1) / 1\n")
    assert signature.each_item() == (
        "for i = 1, item_count do\n"
        "  local ik = KEYS[1 + 1 * (i - 1) + 1]\n"
        "  local x, y = ARGV[2 + 2 * (i - 1) + 1], ARGV[2 + 2 * (i - 1) + 2]\n"
    )


def test_order_lays_named_values_out_as_declared() -> None:
    signature = Signature(keys=("k",), args=("a", "b"), item_keys=("ik",), item_args=("x",))
    keys, args = signature.order(
        {"k": "K"}, {"b": 2, "a": 1}, [({"ik": "I1"}, {"x": "x1"}), ({"ik": "I2"}, {"x": "x2"})]
    )
    assert (keys, args) == (["K", "I1", "I2"], [1, 2, "x1", "x2"])
    with pytest.raises(ValueError, match="declares \\['a', 'b'\\]"):
        signature.order({"k": "K"}, {"a": 1})
    with pytest.raises(ValueError, match="got \\['c', 'k'\\]"):
        signature.order({"k": "K", "c": "C"}, {"a": 1, "b": 2})


@pytest.mark.parametrize(
    ("declared", "problem"),
    [
        ({"keys": ()}, "declares no keys"),
        ({"keys": ("k",), "item_args": ("x",)}, "needs item_keys"),
        ({"keys": ("end",)}, "cannot be a Lua local"),
        ({"keys": ("k",), "args": ("item_count",)}, "cannot be a Lua local"),
        ({"keys": ("room-key",)}, "cannot be a Lua local"),
        ({"keys": ("k",), "args": ("k",)}, "declared twice"),
    ],
)
def test_a_bad_signature_is_refused_when_declared(
    declared: dict[str, tuple[str, ...]], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        Signature(**declared)


def test_the_sequencing_call_follows_its_signature() -> None:
    # GIVEN a send decoded from its inbound entry
    settings = Settings()
    fields = {
        "room": "lobby",
        "text": "hi",
        "client_msg_id": "c-1",
        "sender": "ann",
        "ts": "2026-12-01T00:00:00.000Z",
    }
    item = message.decode(StreamRecord(id="4-0", fields=fields))
    # THEN the room's and the item's keys and arguments sit where the script binds their names
    seq = message.SEQUENCE
    assert dict(zip(seq.keys, message.room_keys("lobby"), strict=True)) == {
        "seq_key": names.seq_key("lobby"),
        "log_key": names.recent_log_key("lobby"),
        "states": names.message_state_key("lobby"),
        "live": names.live_key("lobby"),
    }
    assert dict(zip(seq.args, message.room_args("lobby", settings), strict=True)) == {
        "ttl": settings.dedup_ttl_s,
        "log_len": settings.recent_log_len,
        "channel": names.room_channel("lobby"),
        "publish": 0 if settings.redis_wait_replicas else 1,
        "max_emojis": settings.max_emojis_per_message,
    }
    assert item.args() == [getattr(item, name) for name in seq.item_args]
    assert dict(zip(seq.item_keys, item.keys(), strict=True)) == {
        "dedup": item.dedup,
        "own": names.own_key("lobby", "ann"),
        "reactions": names.reactions_key("lobby", item.id),
        "reactors": names.reactors_key("lobby", item.id),
    }


def test_the_rate_limit_call_follows_its_signature() -> None:
    # GIVEN a user's and a socket's limit on sends, and a user's on typing
    limits = parse_limits("send.user=20:40,send.socket=5:10,typing.user=2:4")
    limiter = RateLimiter(Shards(Settings(), Redis()), limits)
    # WHEN two sockets of one user send and one types, in one call
    events = [Spend("send", "ann", "s1"), Spend("typing", "ann", "s1"), Spend("send", "ann", "s2")]
    _, sha, key_count, *rest = limiter._call(events).args
    keys, args = rest[:key_count], rest[key_count:]
    # THEN each bucket is a key once, the user's send bucket shared by both sends
    assert sha == ratelimit._SPEND.sha
    assert keys == [
        names.rate_limit_key("ann", "send"),
        names.rate_limit_key("ann", "send:s:s1"),
        names.rate_limit_key("ann", "typing"),
        names.rate_limit_key("ann", "send:s:s2"),
    ]
    # AND the arguments read as the script binds their names
    assert dict(zip(ratelimit.SPEND.args, args, strict=False)) == {"event_count": 3}
    per_bucket = ("place", "interval_ms", "tolerance_ms")
    binding = "local place, interval_ms, tolerance_ms = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]"
    assert binding in ratelimit._SPEND.source
    charged: list[list[dict[str, object]]] = []
    at = len(ratelimit.SPEND.args)
    for _ in events:
        bucket_count, at = int(args[at]), at + 1
        charged.append([])
        for _ in range(bucket_count):
            fields = dict(zip(per_bucket, args[at : at + len(per_bucket)], strict=True))
            fields["bucket"] = keys[int(str(fields.pop("place"))) - 1]
            charged[-1].append(fields)
            at += len(per_bucket)
    assert at == len(args)

    def bucket(name: str, per_s: float, burst: int) -> dict[str, object]:
        limit = Limit(per_s, burst)
        return {
            "bucket": names.rate_limit_key("ann", name),
            "interval_ms": f"{limit.interval_ms:.3f}",
            "tolerance_ms": f"{limit.tolerance_ms:.3f}",
        }

    assert charged == [
        [bucket("send", 20, 40), bucket("send:s:s1", 5, 10)],
        [bucket("typing", 2, 4)],
        [bucket("send", 20, 40), bucket("send:s:s2", 5, 10)],
    ]
