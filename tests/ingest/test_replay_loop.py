"""A looping replay through a real merge stage: every pass adds posts to the feed, a later run too, and a replay whose
posts are all dropped as duplicates says so (then says when they get through again).

The recorded night has texts long enough for the merge stage's text dedupe (repeats within 10 minutes fold into the
first card); ``short_night`` has texts too short for it, so what is tested there is the keys alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis.asyncio as aioredis

from mixer.ingest.dropwatch import MergeStats, watch_drops
from mixer.ingest.publish import Publisher
from mixer.ingest.recorded import read_records
from mixer.ingest.replay import Replayer, ReplayOptions
from mixer.keys import Keys
from mixer.merge.stage import MergeStage
from mixer.runner import ingest_replay
from mixer.streams import dedicated_client
from tests.helpers import FIXTURES, eventually, feed_posts
from tests.ingest.test_replay import posts_at, write
from tests.servers import CHATS, settings_for

RECORDING = FIXTURES / "recorded" / "pstweetchat_2019-03-01.jsonl"
CHAT = "pstweetchat"
POSTS = sum(not isinstance(r, Exception) for r in read_records(RECORDING))  # 10


@asynccontextmanager
async def merging(redis_url: str, keys: Keys) -> AsyncIterator[MergeStage]:
    """A real merge stage on its own connection, running until the block ends."""
    conn = dedicated_client(redis_url, 1000)
    stage = MergeStage(conn, keys, [CHAT], window=0.05, stats_every=0)  # counters in Redis after every step
    task = asyncio.create_task(stage.run())
    try:
        yield stage
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await conn.aclose()


async def replay(redis: aioredis.Redis, keys: Keys, path: Path = RECORDING, **options: object) -> Replayer:
    replayer = Replayer(Publisher(redis, keys, [CHAT], 10_000), [path], ReplayOptions(speed=0, min_pass=0, **options))  # type: ignore[arg-type]
    await replayer.run()
    return replayer


async def merged(
    stage: MergeStage, at_least: int, redis: aioredis.Redis | None = None, keys: Keys | None = None
) -> None:
    """Until the merge stage has decided on ``at_least`` posts (written or dropped as duplicates), and with ``redis``
    until its counters in Redis say so too."""
    await eventually(lambda: stage.counters["written"] + stage.counters["duplicate"] >= at_least)
    if redis is not None and keys is not None:

        async def published() -> bool:
            stats = MergeStats.parse(await redis.hgetall(keys.merge_stats))
            return stats is not None and stats.written + stats.duplicate >= at_least

        await eventually(published)


def short_night(tmp_path: Path) -> Path:
    """Ten posts in the replayed chat whose texts ("post p3") are too short for the merge stage's text dedupe."""
    return write(tmp_path / "short.jsonl", posts_at(*range(POSTS), chats=(CHAT,)))


async def test_three_passes_of_a_looped_replay_put_three_times_the_posts_in_the_feed(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    async with merging(redis_url, keys) as stage:
        await replay(redis, keys, loop=True, max_passes=3, run_tag="r1")
        await merged(stage, 3 * POSTS)
    posts = await feed_posts(redis, keys)
    assert len(posts) == len({p.key for p in posts}) == 3 * POSTS
    assert {p.key.rpartition("~")[2] for p in posts} == {"r1.0", "r1.1", "r1.2"}
    assert sum(p.text.endswith(" (pass 3)") for p in posts) == POSTS  # so the text dedupe keeps each pass's cards


async def test_with_tagged_texts_a_run_right_after_another_still_adds_a_card_for_every_post(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    async with merging(redis_url, keys) as stage:
        for run, passes in (("r1", 2), ("r2", 1)):  # texts long enough for the text dedupe, seen seconds ago
            await replay(redis, keys, loop=True, max_passes=passes, run_tag=run, tag_texts=True)
        await merged(stage, 3 * POSTS)
    posts = await feed_posts(redis, keys)
    assert len(posts) == 3 * POSTS
    assert sum(p.text.endswith(" [r2.0]") and p.key.endswith("~r2.0") for p in posts) == POSTS


async def test_a_second_run_of_a_looped_replay_still_adds_posts(
    tmp_path: Path, redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    night = short_night(tmp_path)
    async with merging(redis_url, keys) as stage:
        await replay(redis, keys, night, loop=True, max_passes=2, run_tag="r1")
        await merged(stage, 2 * POSTS)
        # A restart (a new run tag, as `mixer replay --loop` gives each run) begins at pass 0 again: new keys still.
        await replay(redis, keys, night, loop=True, max_passes=1, run_tag="r2")
        await merged(stage, 3 * POSTS)
    keys_in_feed = [p.key for p in await feed_posts(redis, keys)]
    assert len(keys_in_feed) == len(set(keys_in_feed)) == 3 * POSTS
    assert {k.rpartition("~")[2] for k in keys_in_feed} == {"r1.0", "r1.1", "r2.0"}


async def test_mixer_run_replay_tags_its_run_so_a_restart_still_adds_posts(
    tmp_path: Path, redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    settings = settings_for(keys.prefix, redis_url=redis_url, chats=(CHATS[0].__class__(CHAT, "PS", "#2f6fde"),))
    night = short_night(tmp_path)
    async with merging(redis_url, keys) as stage:
        for run in (1, 2):  # `mixer run --replay` started, stopped after a pass, started again
            replaying = asyncio.create_task(ingest_replay(settings, redis_url, [night], speed=0))
            await merged(stage, run * POSTS)
            replaying.cancel()
            await asyncio.gather(replaying, return_exceptions=True)
    posts = await feed_posts(redis, keys)
    assert len(posts) == len({p.key for p in posts}) >= 2 * POSTS
    assert len({p.key.rpartition("~")[2].partition(".")[0] for p in posts}) == 2  # two runs, two tags


async def test_keep_keys_keeps_a_second_run_deduplicated_and_the_merge_stage_publishes_its_counters(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    async with merging(redis_url, keys) as stage:
        # Two runs, merged one after the other: repeats within the reorder window would be held as one post (twins).
        await replay(redis, keys, loop=True, max_passes=1, keep_keys=True, run_tag="ignored")
        await merged(stage, POSTS)
        await replay(redis, keys, loop=True, max_passes=1, keep_keys=True, run_tag="ignored")
        await merged(stage, 2 * POSTS)
        assert sorted(p.key for p in await feed_posts(redis, keys)) == sorted(p.key for p in read_records(RECORDING))
        assert stage.counters["duplicate"] == POSTS
    stats = MergeStats.parse(await redis.hgetall(keys.merge_stats))
    assert stats is not None and stats.written + stats.duplicate >= 1  # written at the first batch at least
    assert 0 < await redis.ttl(keys.merge_stats) <= 30


async def test_a_replay_dropped_as_duplicates_says_so_once_then_says_when_posts_get_through(
    tmp_path: Path, redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    night = short_night(tmp_path)
    lines: list[str] = []
    published = 0
    readings = asyncio.Event()
    read_once = asyncio.Event()

    async def next_reading(seconds: float) -> None:  # the watcher's sleep: a reading each time the test asks
        read_once.set()
        await readings.wait()
        readings.clear()

    async def reading() -> None:
        read_once.clear()
        readings.set()
        await eventually(read_once.is_set)

    async with merging(redis_url, keys) as stage:
        watcher = asyncio.create_task(
            watch_drops(redis, keys, lambda: published, lines.append, hint=" (hint)", sleep=next_reading)
        )
        try:
            published += (await replay(redis, keys, night)).progress.published  # the first run: written
            await merged(stage, POSTS, redis, keys)
            await reading()
            assert lines == []  # never dropped: nothing to say
            published += (await replay(redis, keys, night)).progress.published  # the same keys again: all duplicates
            await merged(stage, 2 * POSTS, redis, keys)
            await reading()
            assert len(lines) == 1 and "dropped all 10 posts published" in lines[0] and lines[0].endswith("(hint)")
            published += (await replay(redis, keys, night)).progress.published
            await merged(stage, 3 * POSTS, redis, keys)
            await reading()
            assert len(lines) == 1  # still dropped: said once
            published += (await replay(redis, keys, night, run_tag="new")).progress.published
            await merged(stage, 4 * POSTS, redis, keys)
            await reading()
            assert len(lines) == 2 and lines[1].startswith("replay: resumed")
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
