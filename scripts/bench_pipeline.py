"""Benchmark: posts/s through replay -> chat streams -> merge -> feed, beside its baselines.

One invocation prints, for the same posts (the bundled #PSTweetChat demo, N passes):
  parse           reading and validating the recording only (no Redis)
  xadd baseline   the same posts pre-encoded and XADDed in pipelines: the Redis ceiling
  replay          replay at --speed 0 into the chat streams (no merge)
  merge           the merge stage alone, draining the streams filled by the replay row
  pipeline        replay and merge together in one process, as `mixer run` does, until
                  every post is in the feed

It uses a throwaway key prefix and deletes its keys. Without --redis it starts an
embedded Redis, so it runs on any machine:

    .venv/bin/python scripts/bench_pipeline.py [--passes 10] [--runs 5] [--redis redis://127.0.0.1:6379/15]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import bench_merge
import redis.asyncio as aioredis

from mixer.codec import FIELD, pack_post
from mixer.ingest.publish import Publisher
from mixer.ingest.recorded import read_records
from mixer.ingest.replay import Replayer, ReplayOptions
from mixer.keys import Keys
from mixer.merge.collector import throughput_collector
from mixer.merge.stage import MergeStage
from mixer.models import Post
from mixer.settings import DEMO_RECORDING
from mixer.streams import dedicated_client

CHATS = ("pstweetchat", "powershell", "pshsummit", "devops")


Rows = dict[str, tuple[int, float]]  # row name -> (posts, seconds), in the order printed


def row(rows: Rows, name: str, posts: int, seconds: float, note: str = "") -> None:
    print(f"{name:<15} {posts:>9,} posts {seconds:>7.2f} s {posts / seconds:>10,.0f} posts/s  {note}")
    rows[name] = (posts, seconds)


@asynccontextmanager
async def scratch(url: str) -> AsyncIterator[tuple[aioredis.Redis, Keys]]:
    keys = Keys(prefix=f"bench-{uuid.uuid4().hex[:12]}")
    redis = aioredis.Redis.from_url(url)
    try:
        yield redis, keys
    finally:
        async for key in redis.scan_iter(match=keys.pattern(), count=1000):
            await redis.delete(key)
        await redis.aclose()


async def drain(stage: MergeStage, redis: aioredis.Redis, keys: Keys, expected: int) -> None:
    stage.fence = (keys.merge_lease, "bench")  # fenced by the merge lease, as merge_forever runs it
    await redis.set(keys.merge_lease, "bench")
    await stage.load_cursors()
    while await redis.xlen(keys.feed) < expected:
        await stage.step(max_block=0.05)


def merge_stage(url: str, keys: Keys) -> tuple[MergeStage, aioredis.Redis]:
    conn = dedicated_client(url, 1000)
    return MergeStage(conn, keys, CHATS, window=0.2, feed_maxlen=10_000_000, seen_max=10_000_000), conn


async def bench(url: str, passes: int, runs: int) -> None:
    """``runs`` runs of every row; with several, each row's median too (these VMs swing 10% and more between runs
    of the same code: one figure alone proves little)."""
    done: list[Rows] = []
    for n in range(runs):
        if runs > 1:
            print(f"run {n + 1}/{runs}")
        done.append(await one_run(url, passes))
    if runs > 1:
        print(f"median of {runs} runs")
        for name, (posts, _) in done[0].items():
            row({}, name, posts, statistics.median(rows[name][1] for rows in done))


async def one_run(url: str, passes: int) -> Rows:
    rows: Rows = {}
    started = time.perf_counter()
    posts = [p for _ in range(passes) for p in read_records(DEMO_RECORDING) if isinstance(p, Post)]
    row(rows, "parse", len(posts), time.perf_counter() - started, "(read + validate, no Redis)")
    unique = len(posts)
    # One recording of N passes, each with its own keys and a pass number in the text, so the merge
    # stage sees N times the night, not repeats to collapse.
    recording = Path(tempfile.mkdtemp()) / "night.jsonl"
    per_pass = len(posts) // passes
    with recording.open("w") as out:
        for i, post in enumerate(posts):
            n = i // per_pass
            data = post.to_dict() | {"key": f"{post.key}~{n}", "text": f"{post.text} (pass {n})"}
            out.write(json.dumps(data) + "\n")

    async with scratch(url) as (redis, keys):
        packed = [pack_post(p) for p in posts]
        started = time.perf_counter()
        for start in range(0, len(packed), 500):
            pipe = redis.pipeline(transaction=False)
            for raw in packed[start : start + 500]:
                pipe.xadd(keys.chat("pstweetchat"), {FIELD: raw})
            await pipe.execute()
        row(rows, "xadd baseline", len(packed), time.perf_counter() - started, "(pre-encoded, one stream)")

    async with scratch(url) as (redis, keys):
        publisher = Publisher(redis, keys, CHATS, maxlen=10_000_000)
        replayer = Replayer(publisher, [recording], ReplayOptions(speed=0))
        started = time.perf_counter()
        progress = await replayer.run()
        row(rows, "replay", progress.published, time.perf_counter() - started, "(-> chat streams)")
        stage, conn = merge_stage(url, keys)
        with throughput_collector():  # as merge_forever runs the stage (mixer.runner)
            started = time.perf_counter()
            await drain(stage, redis, keys, unique)
        row(rows, "merge", unique, time.perf_counter() - started, f"(streams -> feed; {dict(stage.counters)})")
        await conn.aclose()

    async with scratch(url) as (redis, keys):
        publisher = Publisher(redis, keys, CHATS, maxlen=10_000_000)
        replayer = Replayer(publisher, [recording], ReplayOptions(speed=0))
        stage, conn = merge_stage(url, keys)
        with throughput_collector():  # mixer run's process runs merge_forever, which sets it
            started = time.perf_counter()
            await asyncio.gather(replayer.run(), drain(stage, redis, keys, unique))
        note = "(replay + merge in one process, until all in feed)"
        row(rows, "pipeline", unique, time.perf_counter() - started, note)
        await conn.aclose()
    return rows


def main() -> None:
    bench_merge.run_bench(__doc__, bench, 1)


if __name__ == "__main__":
    main()
