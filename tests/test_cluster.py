"""chatmixer on a real Redis Cluster (3 masters, 3 replicas on loopback, started once for this module): a
``redis+cluster://`` client serves one event's slot for blocking reads, MULTI/WATCH and pipelines; events
spread over the shards; the whole split deployment survives ``kill -9`` of the master owning its slot."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from mixer import connect
from mixer.keys import Keys
from mixer.streams import dedicated_client, read_new
from tests.redis_topologies import RedisCluster, through_failover


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    topology = RedisCluster()
    try:
        yield topology.start()
    finally:
        topology.close()


@pytest.fixture
async def event(cluster: RedisCluster, keys: Keys) -> AsyncIterator[tuple[Keys, aioredis.Redis]]:
    client = connect.client(cluster.url, keys.feed, socket_timeout=5)
    try:
        yield keys, client
    finally:
        async for key in client.scan_iter(match=keys.pattern(), count=1000):
            await client.delete(key)
        await client.aclose()


def every_key(keys: Keys) -> list[str]:
    """Every key name ``keys`` can make (each method called with a sample argument)."""
    names = []
    for name, member in inspect.getmembers(type(keys)):
        if name.startswith("_") or name in ("pattern", "tag", "prefix"):
            continue
        if isinstance(member, property):
            names.append(getattr(keys, name))
        elif callable(member):
            arity = len(inspect.signature(member).parameters) - 1
            names.append(getattr(keys, name)(*["sample"] * arity))
    return names


async def test_every_key_of_an_event_shares_one_slot_and_two_events_land_on_different_shards(
    cluster: RedisCluster,
) -> None:
    client = connect.client(cluster.url)
    try:
        slots = {}
        for prefix in ("mixer", "pstweetchat"):
            found = {int(await client.execute_command("CLUSTER", "KEYSLOT", key)) for key in every_key(Keys(prefix))}
            assert len(found) == 1, (prefix, found)
            slots[prefix] = found.pop()
        assert slots["mixer"] != slots["pstweetchat"]
        masters = {cluster.master_of(Keys(prefix).feed) for prefix in slots}
        assert len(masters) == 2  # these two prefixes hash to slots on different shards
    finally:
        await client.aclose()


async def test_blocking_read_transaction_and_pipeline_work_on_the_slots_master(
    event: tuple[Keys, aioredis.Redis], cluster: RedisCluster
) -> None:
    keys, client = event
    reader = dedicated_client(cluster.url, 5000, keys.feed)
    try:
        waiting = asyncio.create_task(read_new(reader, {keys.feed: "$", keys.chat("a"): "$"}, 5000, 10))
        await asyncio.sleep(0.2)  # let XREAD BLOCK reach the server: a write before it would not wake it
        await client.xadd(keys.chat("a"), {"p": b"x"})
        assert list(await waiting) == [keys.chat("a")]
        async with client.pipeline(transaction=True) as tx:
            await tx.watch(keys.merge_cursor)
            tx.multi()
            tx.hset(keys.merge_cursor, "a", "1-0")
            tx.xadd(keys.feed, {"p": b"y"})
            await tx.execute()
        async with client.pipeline(transaction=False) as pipe:
            pipe.xlen(keys.feed)
            pipe.hget(keys.merge_cursor, "a")
            assert await pipe.execute() == [1, b"1-0"]
    finally:
        await reader.aclose()


async def test_a_client_not_told_its_key_learns_the_slot_from_moved(
    event: tuple[Keys, aioredis.Redis], cluster: RedisCluster
) -> None:
    keys, client = event
    await client.xadd(keys.feed, {"p": b"x"})
    roaming = connect.client(cluster.url, socket_timeout=5)
    try:
        owner = cluster.master_of(keys.feed)
        if cluster.ports.index(owner) != 0:  # the first seed does not own the slot: one MOVED teaches it
            with pytest.raises(RedisConnectionError, match="MOVED"):
                await roaming.xlen(keys.feed)
        assert await roaming.xlen(keys.feed) == 1
    finally:
        await roaming.aclose()


async def test_the_split_deployment_survives_killing_the_master_of_its_slot(
    cluster: RedisCluster, tmp_path: Path
) -> None:
    keys = Keys("cluster-failover")
    outcome = await through_failover(tmp_path, cluster.url, keys.prefix, lambda: cluster.kill_master(keys.feed))
    print(outcome.line("redis cluster"))
    assert outcome.deaths == []
    assert outcome.gaps == [0, 0], "a screen missed posts without being told reset"
    assert outcome.lost == [] and outcome.twice == []
