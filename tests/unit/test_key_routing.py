"""Where keys live, without a server: slots, owners and node URLs of the configured Redis."""

from __future__ import annotations

import hashlib

import redis.asyncio as aioredis

from chat import names
from chat.settings import Settings
from chat.shards import Script, Shards


def _standalone(url: str) -> Shards:
    settings = Settings(redis_url=url)
    return Shards(settings, aioredis.from_url(url))


async def test_a_standalone_redis_owns_every_key_at_its_address() -> None:
    shards = _standalone("redis://127.0.0.1:6390/0")
    assert not shards.cluster
    assert shards.slot(names.seq_key("a")) == shards.slot(names.rate_limit_key("u", "send")) == 0
    assert await shards.owner("anything") == "127.0.0.1:6390"
    assert shards.node("127.0.0.1:6390") is shards.client


def test_node_urls_keep_the_scheme_credentials_and_database() -> None:
    shards = _standalone("rediss://:s3cret@cfg.example.internal:6379/0")
    assert shards.url_for("10.0.3.7:6380") == "rediss://:s3cret@10.0.3.7:6380/0"
    assert _standalone("redis://127.0.0.1:1/2").url_for("h:2") == "redis://h:2/2"


def test_a_script_call_is_routed_by_its_first_key_and_runs_by_sha() -> None:
    script = Script("return KEYS[1]")
    assert script.sha == hashlib.sha1(b"return KEYS[1]").hexdigest()
    call = script.call(["k{a}", "j{a}"], ["x", 1])
    assert call.key == "k{a}"
    assert call.args == ("EVALSHA", script.sha, 2, "k{a}", "j{a}", "x", 1)


def test_a_rooms_keys_and_an_inbound_partition_with_its_dead_letters_share_a_slot() -> None:
    from redis.crc import key_slot

    room = "lobby"
    slots = {
        key_slot(k.encode())
        for k in (names.seq_key(room), names.recent_log_key(room), names.room_channel(room))
    }
    assert len(slots) == 1
    stream = names.partition(names.INBOUND_STREAM, 3)
    dead = names.partition_key(names.INBOUND_STREAM, 3, names.INBOUND_DEAD_LETTER)
    assert key_slot(stream.encode()) == key_slot(dead.encode())
    assert {names.partition_of(f"r{i}", 8) for i in range(64)} == set(range(8))
    # Every process must agree: crc32, not Python's per-process salted hash().
    assert names.partition_of("lobby", 8) == 7
