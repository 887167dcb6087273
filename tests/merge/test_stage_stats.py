"""The merge stage's counters in Redis (``Keys.merge_stats``): what a looping replay reads to tell it is dropped."""

from __future__ import annotations

import redis.asyncio as aioredis

from mixer.ingest.publish import Publisher
from mixer.keys import Keys
from mixer.merge.stage import STATS_TTL, MergeStage
from tests.helpers import FakeClock, make_post

CHATS = ("smbiz",)


async def stats(redis: aioredis.Redis, keys: Keys) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (await redis.hgetall(keys.merge_stats)).items()}


async def test_counters_are_written_at_most_once_a_second_and_only_when_they_changed(
    redis: aioredis.Redis, keys: Keys
) -> None:
    pub = Publisher(redis, keys, CHATS, 1000)
    await pub.publish([make_post("x:1"), make_post("x:2")])
    clock = FakeClock()
    clock.now += 60  # ahead of every entry published here: each is due at once (window 0)
    merge = MergeStage(redis, keys, CHATS, window=0, clock=clock)
    await merge.load_cursors()
    await merge.step(max_block=0.01)
    first = await stats(redis, keys)
    assert (first["read"], first["written"], first["at"]) == ("2", "2", str(int(clock.now * 1000)))
    assert 0 < await redis.ttl(keys.merge_stats) <= STATS_TTL

    await pub.publish([make_post("x:1")])  # a duplicate, counted half a second later: not written yet
    clock.now += 0.5
    await merge.step(max_block=0.01)
    assert merge.counters["duplicate"] == 1 and await stats(redis, keys) == first

    clock.now += 0.5  # a second after the last write: the next step writes them, idle or not
    await merge.step(max_block=0.01)
    second = await stats(redis, keys)
    assert (second["read"], second["written"], second["duplicate"], second["run"]) == ("3", "2", "1", first["run"])

    await redis.delete(keys.merge_stats)
    clock.now += 5  # nothing changed since: nothing written
    await merge.step(max_block=0.01)
    assert await stats(redis, keys) == {}


async def test_each_merge_stage_instance_names_its_counters(redis: aioredis.Redis, keys: Keys) -> None:
    runs = set()
    for key in ("x:1", "x:2"):
        await Publisher(redis, keys, CHATS, 1000).publish([make_post(key)])
        merge = MergeStage(redis, keys, CHATS, window=0, clock=FakeClock())
        await merge.load_cursors()
        await merge.step(max_block=0.01)
        runs.add((await stats(redis, keys))["run"])
    assert len(runs) == 2  # a restarted stage counts from 0 again: readers must not compare across it
