"""Scripts' KEYS and ARGV named once: the Lua binding and the Python call follow one order."""

from __future__ import annotations

import pytest

from chat import names
from chat.lua import Signature
from chat.settings import Settings
from functions import message
from functions.batch import StreamRecord

pytestmark = pytest.mark.unit


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
        ({"keys": ()}, "keys is empty"),
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
