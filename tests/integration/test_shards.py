"""Running commands where keys live, on the stack's real Redis (one node or a cluster)."""

from __future__ import annotations

import dataclasses
import uuid

from chat.shards import UNREPLICATED, Command, Script, Shards


async def test_scripts_run_on_nodes_that_never_saw_them_and_keep_per_node_order(
    shards: Shards,
) -> None:
    tag = uuid.uuid4().hex
    # A script no node has loaded: each node that answers NOSCRIPT loads it and runs it.
    script = Script(f"-- {tag}\nreturn redis.call('RPUSH', KEYS[1], ARGV[1])")
    keys = [f"test:shards:{tag}:{{k{i % 5}}}" for i in range(40)]
    replies = await shards.run([script.call([k], [str(i)]) for i, k in enumerate(keys)])
    assert replies == [i // 5 + 1 for i in range(40)]
    for j in range(5):
        key = keys[j]
        assert await shards.client.lrange(key, 0, -1) == [str(i) for i in range(j, 40, 5)]
    await shards.run([Command(k, ("DEL", k)) for k in set(keys)])


async def test_a_write_waits_for_the_replicas_a_failover_needs(shards: Shards) -> None:
    key = f"test:shards:{uuid.uuid4().hex}"
    node = shards.node(await shards.owner(key))
    replicas = int((await node.info("replication")).get("connected_slaves", 0))
    before = UNREPLICATED._value.get()
    (reply,) = await shards.run([Command(key, ("SET", key, "1"))], wait_replicas=1)
    assert reply in (True, "OK")
    # With a replica, WAIT confirmed the write; without one (a single Redis), nothing could be
    # promoted with less, so it is acked and counted as unreplicated.
    assert UNREPLICATED._value.get() - before == (0 if replicas else 1)
    shards.settings = dataclasses.replace(shards.settings, redis_wait_timeout_ms=50)
    await shards.run([Command(key, ("DEL", key))], wait_replicas=1)
