"""Benchmark: the merge stage with everything on, beside a merge-only baseline, in one run.

Both read the same chat streams (the bundled #PSTweetChat demo, N passes, 29% of posts in
two chats) filled beforehand, through Redis:

  baseline   XREAD every chat stream in batches and XADD each entry to a feed: merging
             with no reordering, dedupe, moderation or shaping (the floor of the design)
  merge      the real MergeStage: reorder window, dedupe (index, fingerprints), moderation
             (blocked words and accounts, the profanity list), Q/A-free; plus the shaping
             stage computing the 'wall' stream from its output, stepped in turn until the merge
             stage has handled every post; both fenced by the merge lease, as in production

    .venv/bin/python scripts/bench_merge.py [--passes 10] [--runs 5] [--redis redis://127.0.0.1:6379/15]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from mixer.codec import FIELD, pack_post
from mixer.embedded import EmbeddedRedis
from mixer.ingest.recorded import read_records
from mixer.keys import Keys
from mixer.merge.collector import throughput_collector
from mixer.merge.shaping import ShapingStage
from mixer.merge.stage import MergeStage
from mixer.models import Post
from mixer.redact import redact
from mixer.rules import Rules
from mixer.settings import DEMO_RECORDING, Profile
from mixer.streams import dedicated_client, read_new
from mixer.tools.loadtest.procstat import describe_machine

CHATS = ("pstweetchat", "powershell", "pshsummit", "devops")


async def fill(url: str, keys: Keys, passes: int) -> int:
    """The demo, ``passes`` times, each pass with its own keys and a pass number in the text (so repeats
    of a pass are new posts, not a flood to collapse). Written with one plain XADD per chat-stream entry, 500
    posts per MULTI, not with the Publisher: its batch script stamps a whole batch with one millisecond, and a
    denser spread of stamps changes how much the reorder window holds, so the input would change with the code."""
    redis = aioredis.Redis.from_url(url)
    posts = [p for p in read_records(DEMO_RECORDING) if isinstance(p, Post)]
    published = 0
    for n in range(passes):
        batch = [p.replace(key=f"{p.key}~{n}", text=f"{p.text} (pass {n})") for p in posts]
        for start in range(0, len(batch), 500):
            async with redis.pipeline(transaction=True) as tx:
                for post in batch[start : start + 500]:
                    for chat in (c for c in post.chats if c in CHATS):
                        tx.xadd(keys.chat(chat), {FIELD: pack_post(post)}, maxlen=10_000_000, approximate=True)
                    published += any(c in CHATS for c in post.chats)
                await tx.execute()
    await redis.aclose()
    return published


async def baseline(url: str, keys: Keys, expected_entries: int) -> float:
    redis = dedicated_client(url, 1000)
    cursors = {keys.chat(c): "0-0" for c in CHATS}
    done = 0
    with throughput_collector():  # as the merge stage runs (below), so that both see the same collector
        started = time.perf_counter()
        while done < expected_entries:
            got = await read_new(redis, cursors, None, 1000)
            pipe = redis.pipeline(transaction=True)
            for stream, entries in got.items():
                for entry_id, raw, kind in entries:
                    pipe.xadd(keys.feed, {kind: raw})
                    cursors[stream] = entry_id
                    done += 1
            await pipe.execute()
        elapsed = time.perf_counter() - started
    await redis.aclose()
    return elapsed


async def full(url: str, keys: Keys, posts: int, shaping_on: bool = True) -> tuple[float, dict[str, int]]:
    """Seconds the merge stage (and the shaping stage, unless ``shaping_on`` is False) took to handle ``posts``
    posts, and the merge stage's counters."""
    conn, shaping_conn = dedicated_client(url, 1000), dedicated_client(url, 1000)
    rules = Rules(words=("buy followers", "spoiler"), accounts=("x:spammer",), profanity=True)
    merge = MergeStage(conn, keys, CHATS, window=0.2, feed_maxlen=10_000_000, seen_max=10_000_000, rules=rules)
    shaping = ShapingStage(shaping_conn, keys, [Profile("wall", rate=0.5, burst=3, max_wait=30.0)])
    # fenced by the merge lease, as merge_forever runs them (a WATCH and a GET before each batch's MULTI)
    merge.fence = shaping.fence = (keys.merge_lease, "bench")
    await conn.set(keys.merge_lease, "bench")
    await merge.load_cursors()
    await shaping.load()
    with throughput_collector():  # as merge_forever runs the stages (mixer.runner)
        started = time.perf_counter()
        handled = 0
        while handled < posts:
            await merge.step(max_block=0.05)
            if shaping_on:
                await shaping.step(max_block=0.0)
            c = merge.counters
            handled = c["written"] + c["duplicate"] + c["blocked"] + c["held"]
        elapsed = time.perf_counter() - started
    await conn.aclose()
    await shaping_conn.aclose()
    return elapsed, dict(merge.counters)


async def chat_entries(url: str, keys: Keys) -> int:
    """Entries in the benchmark's chat streams (a post in two chats is two)."""
    redis = aioredis.Redis.from_url(url)
    entries = sum([await redis.xlen(keys.chat(c)) for c in CHATS])
    await redis.aclose()
    return entries


async def scratch_cleanup(url: str, keys: Keys) -> None:
    redis = aioredis.Redis.from_url(url)
    async for key in redis.scan_iter(match=keys.pattern(), count=1000):
        await redis.delete(key)
    await redis.aclose()


async def one_run(url: str, passes: int) -> tuple[int, int, float, float, dict[str, int]]:
    """(posts, chat-stream entries, baseline seconds, merge seconds, the merge stage's counters), on keys of its own."""
    base_keys, full_keys = Keys(f"bench-{uuid.uuid4().hex[:8]}"), Keys(f"bench-{uuid.uuid4().hex[:8]}")
    try:
        posts = await fill(url, base_keys, passes)
        await fill(url, full_keys, passes)
        entries = await chat_entries(url, base_keys)
        base = await baseline(url, base_keys, entries)
        merged, counters = await full(url, full_keys, posts)
        return posts, entries, base, merged, counters
    finally:
        await scratch_cleanup(url, base_keys)
        await scratch_cleanup(url, full_keys)


def report(label: str, posts: int, base: float, merged: float) -> None:
    print(f"{label}baseline  {posts / base:>9,.0f} posts/s  ({base:.2f} s; read + XADD only)")
    print(f"{label}merge     {posts / merged:>9,.0f} posts/s  ({merged:.2f} s; reorder, dedupe, moderation, shaping)")
    print(f"{label}ratio     {merged / base:.1f}x the baseline's time")


async def bench(url: str, passes: int, runs: int) -> None:
    """``runs`` runs, each the baseline then the merge stage on fresh keys; with several, their medians too (these
    VMs swing 10% and more between runs of the same code: one figure alone proves little)."""
    times: list[tuple[float, float]] = []
    for n in range(runs):
        posts, entries, base, merged, counters = await one_run(url, passes)
        if n == 0:
            print(f"posts: {posts:,} ({entries:,} chat-stream entries); counters {counters}")
        times.append((base, merged))
        report(f"run {n + 1}/{runs}  " if runs > 1 else "", posts, base, merged)
    if runs > 1:
        base = statistics.median(b for b, _ in times)
        merged = statistics.median(m for _, m in times)
        report("median    ", posts, base, merged)


def run_bench(doc: str, bench: Callable[[str, int, int], Awaitable[None]], default_runs: int) -> None:
    """A merge benchmark's command line (``--passes``, ``--redis``, ``--runs``): the machine, the Redis, then
    ``bench(url, passes, runs)`` on the given Redis or on an embedded one started for the run."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--passes", type=int, default=10, help="times over the demo recording (3,350 posts each)")
    parser.add_argument("--redis", help="Redis URL (default: an embedded Redis started for the run)")
    parser.add_argument(
        "--runs", type=int, default=default_runs, help=f"runs of every row, then their medians (default {default_runs})"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"machine: {describe_machine()}")
    if args.redis:
        print(f"redis: {redact(args.redis)}")
        asyncio.run(bench(args.redis, args.passes, args.runs))
        return
    with EmbeddedRedis() as server:
        print(f"redis: embedded ({server.url})")
        asyncio.run(bench(server.url, args.passes, args.runs))


def main() -> None:
    run_bench(__doc__, bench, 1)


if __name__ == "__main__":
    main()
