"""The "dropped as duplicates" notice of a replay: the pure decision, the readings it compares, and its loop."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from mixer.ingest.dropwatch import DropWatch, MergeStats, all_dropped, watch_drops
from mixer.ingest.replay import new_run_tag
from mixer.keys import Keys


def stats(written: int, duplicate: int, run: str = "a", at: int = 0) -> MergeStats:
    return MergeStats(run, at, written, duplicate)


def test_an_interval_whose_posts_all_became_duplicates_is_all_dropped() -> None:
    assert all_dropped(published=1200, written=0, duplicate=1200) is True
    assert all_dropped(published=1200, written=0, duplicate=1000) is True  # the rest merged after the reading


def test_posts_reaching_the_feed_or_an_idle_interval_are_not_all_dropped() -> None:
    assert all_dropped(published=1200, written=1, duplicate=1199) is False
    assert all_dropped(published=0, written=0, duplicate=0) is None  # nothing published: nothing to say
    assert all_dropped(published=1200, written=0, duplicate=100) is None  # not merged yet, or held/blocked


def test_the_watch_says_dropped_once_and_resumed_once() -> None:
    watch = DropWatch(" (hint)")
    assert watch.observe(0, stats(0, 0), 10) is None  # a first reading: nothing to compare
    line = watch.observe(1200, stats(0, 1200), 10)
    assert line == ("replay: the merge stage dropped all 1,200 posts published in the last 10 s as duplicates (hint)")
    assert watch.observe(2400, stats(0, 2400), 10) is None  # still dropped: said once
    assert watch.observe(3600, stats(1000, 2400), 10) == (
        "replay: resumed: posts reach the feed again (1,000 written in the last 10 s)"
    )
    assert watch.observe(4800, stats(2200, 2400), 10) is None


def test_the_watch_says_nothing_without_a_merge_stage_or_across_its_restart() -> None:
    watch = DropWatch()
    for published in (0, 1200, 2400):
        assert watch.observe(published, None, 10) is None  # no stats key: no merge stage running
    assert watch.observe(3600, stats(0, 5000, run="a"), 10) is None
    assert watch.observe(4800, stats(0, 100, run="b"), 10) is None  # a new instance counts from 0 again
    assert watch.observe(6000, stats(0, 1300, run="b"), 10) is not None


def test_merge_stats_parse_reads_the_hash_and_refuses_what_it_is_not() -> None:
    raw = {b"run": b"9f3a", b"at": b"1700000000000", b"written": b"12", b"duplicate": b"3", b"read": b"15"}
    assert MergeStats.parse(raw) == MergeStats("9f3a", 1_700_000_000_000, 12, 3)
    assert MergeStats.parse({}) is None
    assert MergeStats.parse({b"run": b"x", b"at": b"soon"}) is None


def test_run_tags_are_short_base36_and_differ_a_millisecond_apart() -> None:
    assert new_run_tag(1_800_000_000.0) == "mywpiww0"
    assert new_run_tag(1_800_000_000.001) != new_run_tag(1_800_000_000.0)
    assert new_run_tag(0) == "0"


async def test_watch_drops_reports_nothing_while_no_merge_stage_runs(redis: aioredis.Redis, keys: Keys) -> None:
    lines: list[str] = []
    readings = 0
    published = 0
    five = asyncio.Event()

    async def next_reading(seconds: float) -> None:
        nonlocal readings, published
        readings += 1
        published += 1000  # the replay publishes; nobody merges
        if readings == 5:
            five.set()
            await asyncio.Event().wait()  # until cancelled

    watcher = asyncio.create_task(watch_drops(redis, keys, lambda: published, lines.append, sleep=next_reading))
    try:
        await asyncio.wait_for(five.wait(), 5)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    assert lines == []
    assert not await redis.exists(keys.merge_stats)
