"""Benchmark: replay the bundled demo recording N times over at speed 0 and print posts/s.

Writes into a throwaway key prefix on the given Redis (default database 15 on localhost)
and deletes every key under it afterwards. Also prints the parse-only rate, so a slow
figure can be pinned on reading or on Redis.

    python scripts/bench_replay.py [--passes 10] [--redis redis://127.0.0.1:6379/15] [--chats pstweetchat,powershell]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import uuid

import redis.asyncio as aioredis

from mixer.ingest import Publisher
from mixer.keys import Keys
from mixer.recorded import read_records
from mixer.replay import Replayer, ReplayOptions
from mixer.settings import DEMO_RECORDING


def parse_rate(passes: int) -> float:
    started = time.perf_counter()
    count = sum(1 for _ in range(passes) for _ in read_records(DEMO_RECORDING))
    return count / (time.perf_counter() - started)


async def bench(url: str, passes: int, chats: list[str], batch: int) -> None:
    keys = Keys(prefix=f"bench-{uuid.uuid4().hex[:12]}")
    redis = aioredis.Redis.from_url(url)
    try:
        publisher = Publisher(redis, keys, chats, maxlen=10_000_000)
        options = ReplayOptions(speed=0, loop=True, max_passes=passes, batch=batch)
        replayer = Replayer(publisher, [DEMO_RECORDING], options)
        started = time.perf_counter()
        progress = await replayer.run()
        elapsed = time.perf_counter() - started
        entries = [await redis.xlen(keys.chat(chat)) for chat in chats]
        print(f"replay   {progress.summary()}")
        print(f"replay   {progress.published / elapsed:,.0f} posts/s ({elapsed:.2f} s, batch {batch})")
        print(f"replay   {sum(entries) / elapsed:,.0f} stream entries/s ({dict(zip(chats, entries, strict=True))})")
    finally:
        async for key in redis.scan_iter(match=keys.pattern(), count=1000):
            await redis.delete(key)
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=10, help="times over the demo recording (3,350 posts each)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15", help="Redis URL (keys are cleaned up)")
    parser.add_argument("--chats", default="pstweetchat,powershell", help="configured chats, comma separated")
    parser.add_argument("--batch", type=int, default=500, help="posts per pipeline")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"parse    {parse_rate(args.passes):,.0f} records/s (read_records only, no Redis)")
    asyncio.run(bench(args.redis, args.passes, [c.strip() for c in args.chats.split(",") if c.strip()], args.batch))


if __name__ == "__main__":
    main()
