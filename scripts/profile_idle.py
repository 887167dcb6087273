"""Where an idle websocket's bytes go: the fan-out app in this process, N idle /ws clients in a child process.

Prints the server's RSS growth per connection (VmRSS after the N connected minus before, as
``scripts/bench_fanout.py --idle`` reads it from outside), the Python objects that appeared (count and
``sys.getsizeof`` per type, from ``gc``; coroutines, tasks and containers named by their owner, a
walk of referrers that takes a minute at 1,000 clients), and with ``--trace`` a tracemalloc snapshot diff by line of
source (tracemalloc's own bookkeeping inflates RSS: read the RSS figure from a run without it).
Memory outside Python's allocator (uvloop's libuv handles and read buffers, the kernel's socket
buffers, which are not in the process's RSS at all) shows as RSS growth that neither accounts for.

    .venv/bin/python scripts/profile_idle.py --clients 1000          # on the Redis at 127.0.0.1:6379
    .venv/bin/python scripts/profile_idle.py --clients 1000 --trace
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tracemalloc
from collections import Counter
from pathlib import Path

from aiohttp import web

from mixer.runner import build_app
from mixer.settings import Settings

CLIENT = """
import asyncio, sys
async def one(port, held):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET /ws HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n")
    await r.readuntil(b"\\r\\n\\r\\n")
    await r.read(65536)  # the hello frame
    held.append((r, w))
async def main(port, n):
    held = []
    for i in range(0, n, 100):
        await asyncio.gather(*(one(port, held) for _ in range(min(100, n - i))))
    print(len(held), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _owner(obj: object) -> str:
    if hasattr(obj, "get_coro"):
        return str(getattr(obj.get_coro(), "__qualname__", ""))
    for ref in gc.get_referrers(obj):
        if hasattr(ref, "__dict__") and getattr(ref, "__dict__", None) is obj:
            return f"__dict__ of {type(ref).__qualname__}"
        if hasattr(type(ref), "__slots__") or hasattr(ref, "__dict__"):
            return f"in {type(ref).__qualname__}"
    return ""


def census() -> tuple[Counter[str], Counter[str]]:
    gc.unfreeze()  # (the server freezes what lives a while: mixer.fanout.collector; it freezes again within 1 s)
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for obj in gc.get_objects():
        name = type(obj).__qualname__
        if name in ("coroutine", "Task", "deque", "dict", "list", "set"):
            name += f" {getattr(obj, '__qualname__', '') or _owner(obj)}"
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)
    return counts, sizes


async def main(args: argparse.Namespace) -> None:
    settings = Settings(
        redis_url=args.redis, key_prefix=f"profidle{os.getpid()}", max_connections=10**6, max_per_ip=10**6
    )
    runner = web.AppRunner(build_app(settings, args.redis), handle_signals=False, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print("port", port, flush=True)
    if args.wait:
        await asyncio.sleep(args.wait)
    await asyncio.sleep(1.0)
    gc.collect()
    if args.trace:
        tracemalloc.start(args.frames)
    before_counts, before_sizes = census()
    before_rss = rss()
    before_snap = tracemalloc.take_snapshot() if args.trace else None
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLIENT,
        str(port),
        str(args.clients),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None and child.stdin is not None
    held = int((await child.stdout.readline()).decode())
    await asyncio.sleep(1.0)
    gc.collect()
    after_rss = rss()
    after_snap = tracemalloc.take_snapshot() if args.trace else None
    after_counts, after_sizes = census()
    n = held
    print(f"{n} idle websockets; RSS +{(after_rss - before_rss) / n:,.0f} B per connection")
    grown = {k: (after_counts[k] - before_counts[k], after_sizes[k] - before_sizes[k]) for k in after_counts}
    rows = sorted(grown.items(), key=lambda kv: -kv[1][1])
    total = sum(s for _, s in grown.values())
    print(f"gc-tracked objects: +{total / n:,.0f} B per connection (sys.getsizeof, shallow)")
    for name, (count, size) in rows[: args.top]:
        if count:
            print(f"  {count / n:6.2f} x {name:40} {size / n:8,.0f} B")
    if before_snap is not None and after_snap is not None:
        stats = after_snap.compare_to(before_snap, "traceback" if args.frames > 1 else "lineno")
        traced = sum(s.size_diff for s in stats)
        print(f"tracemalloc: +{traced / n:,.0f} B per connection")
        for stat in stats[: args.top]:
            frames = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in stat.traceback[: args.frames])
            print(f"  {stat.size_diff / n:8,.0f} B {stat.count_diff / n:6.2f} blocks  {frames}")
    child.stdin.write(b"\n")
    await child.stdin.drain()
    await child.wait()
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--trace", action="store_true", help="tracemalloc snapshot diff by source line")
    parser.add_argument("--frames", type=int, default=1, help="traceback depth for --trace (default 1)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--wait", type=float, default=0, help="seconds to wait after printing the port (to probe it)")
    cli = parser.parse_args()
    import uvloop

    uvloop.run(main(cli))
