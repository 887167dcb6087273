"""Measure: websocket fan-out of `mixer serve --no-merge` beside a naive aiohttp broadcaster, same load.

One invocation runs both servers in turn (each a subprocess pinned to core 0 with
``taskset -c 0``) against the same load: N websocket clients held by `mixer.loadtest`'s
worker processes, and a driver that XADDs ~400-byte posts straight into the merged feed
stream at R posts/s for D seconds (exactly what the merge stage writes, so no merge stage
runs). This process, its client workers and the embedded Redis are pinned to core 1. For
each server it prints deliveries/s, loss, latency percentiles (receive time minus the post's
``at``, on the sampled clients), the server's CPU% over the driven window, RSS per
connection and per-core busy %, then a table with the ratios. ``--idle N`` instead measures
memory per idle connection of our server alone. See docs/benchmarks.md.

    .venv/bin/python scripts/bench_fanout.py                      # 1,000 clients x 100 posts/s, both servers
    .venv/bin/python scripts/bench_fanout.py --clients 5000
    .venv/bin/python scripts/bench_fanout.py --idle 10000         # bytes per idle connection, ours
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from mixer.codec import FIELD, pack_post
from mixer.embedded import EmbeddedRedis
from mixer.keys import Keys
from mixer.loadtest import LoadOptions, core_busy, core_times, loadtest, process_ticks
from mixer.models import Author, Post
from mixer.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CHATS = ("smbiz", "edchat", "journchat", "blogchat")
HZ = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_fd_limit() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the servers and client workers
    return hard


def make_post(run: str, n: int, now_ms: int) -> Post:
    """A ~400-byte post (as JSON on the wire, with its feed id)."""
    return Post(
        key=f"bench:{run}:{n}",
        source="replay",
        chats=(CHATS[n % len(CHATS)],),
        author=Author(f"user{n % 997}", f"Bench User {n % 997}", f"https://cdn.example/avatars/{n % 997}.png"),
        text=(f"Fan-out benchmark post {n}: " + "lorem ipsum dolor sit amet consectetur " * 5)[:126],
        url=f"https://social.example/@user{n % 997}/{n}",
        created=now_ms,
        at=now_ms,
    )


def established(port: int) -> int:
    """TCP connections in state ESTABLISHED whose local port is ``port`` (the server's side), from /proc/net."""
    count = 0
    want = f":{port:04X}"
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[1].endswith(want) and fields[3] == "01":
                count += 1
    return count


async def wait_listening(port: int, proc: asyncio.subprocess.Process, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"server not listening on {port} after {within} s")


async def start_server(
    kind: str, port: int, redis_url: str, keys: Keys, pin: list[str], log: Path
) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIXER_")}
    if kind == "ours":
        env.update(
            MIXER_REDIS_URL=redis_url,
            MIXER_REDIS_PREFIX=keys.prefix,
            MIXER_CHATS=",".join(CHATS),
            MIXER_SERVER_MAX_PER_IP="1000000",
            MIXER_SERVER_MAX_CONNECTIONS="1000000",
        )
        cmd = [sys.executable, "-m", "mixer.cli", "serve", "--no-merge", "--port", str(port)]
    else:
        cmd = [sys.executable, str(ROOT / "scripts" / "naive_broadcast.py"), "--port", str(port)]
        cmd += ["--redis", redis_url, "--stream", keys.feed]
    with log.open("wb") as out:  # the child keeps its own descriptor
        proc = await asyncio.create_subprocess_exec(*pin, *cmd, env=env, cwd=ROOT, stdout=out, stderr=out)
    await wait_listening(port, proc)
    return proc


async def stop_server(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


class Window:
    """Server CPU ticks and per-core busy over the driven window."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def begin(self) -> None:
        self.t0, self.ticks0 = time.monotonic(), process_ticks(Path(f"/proc/{self.pid}/stat").read_text())
        self.cores0 = core_times(Path("/proc/stat").read_text())

    def end(self) -> None:
        elapsed = time.monotonic() - self.t0
        ticks = process_ticks(Path(f"/proc/{self.pid}/stat").read_text())
        self.cpu = round(100.0 * (ticks - self.ticks0) / HZ / elapsed, 1)
        self.busy = core_busy(self.cores0, core_times(Path("/proc/stat").read_text()))


async def drive(redis: aioredis.Redis, keys: Keys, rate: float, duration: float, run: str) -> int:
    """XADD ``rate`` posts/s into the feed for ``duration`` seconds, paced by the clock; returns posts written."""
    start = time.monotonic()
    n = 0
    total = int(rate * duration)
    while n < total:
        due = int((time.monotonic() - start) * rate) + 1
        pipe = redis.pipeline(transaction=False)
        for _ in range(min(due, total) - n):
            pipe.xadd(keys.feed, {FIELD: pack_post(make_post(run, n, int(time.time() * 1000)))})
            n += 1
        await pipe.execute()
        await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
    return n


async def one_run(kind: str, args: argparse.Namespace, redis_url: str, pin: list[str]) -> dict[str, Any]:
    """One server under the load: start it, connect the clients, drive, collect the figures, stop it."""
    keys = Keys(f"bench{uuid.uuid4().hex[:8]}")
    port = free_port()
    redis = aioredis.Redis.from_url(redis_url)
    log = Path(tempfile.gettempdir()) / f"bench_fanout_{kind}_{os.getpid()}.log"
    proc = await start_server(kind, port, redis_url, keys, pin, log)
    try:
        await asyncio.sleep(1.0)  # let it settle: the idle RSS is read by the load test before connecting
        idle = args.idle > 0
        clients = args.idle if idle else args.clients
        ramp = max(args.ramp, clients / 600)  # faster connect bursts overflow the server's Redis pool (100)
        options = LoadOptions(
            url=f"ws://127.0.0.1:{port}/ws",
            clients=clients,
            ramp=ramp,
            processes=args.processes,
            sample=0 if idle else args.sample,
            duration=2.0 if idle else args.duration + args.drain + 2.0,
            drive="none",
            server_pid=proc.pid,
        )
        say_last = [0.0]

        def say(message: str, progress: bool) -> None:
            if args.verbose or time.monotonic() - say_last[0] >= 5:
                say_last[0] = time.monotonic()
                print(f"  [{kind}] {message}", file=sys.stderr, flush=True)

        test = asyncio.create_task(loadtest(Settings(), options, say))
        window = Window(proc.pid)
        published = 0
        if not idle:
            deadline, last, grown = time.monotonic() + ramp + 30, -1, time.monotonic()
            while (now := established(port)) < clients and time.monotonic() < deadline and not test.done():
                if now > last:  # the ramp is over when the count stops growing (closed or refused clients)
                    last, grown = now, time.monotonic()
                elif now > 0 and time.monotonic() - grown > 3:
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)
            window.begin()
            published = await drive(redis, keys, args.rate, args.duration, keys.prefix)
            await asyncio.sleep(args.drain)
            window.end()
        result = await test
        out = summarize(kind, result, window if not idle else None, published, clients, args.duration)
        out["server_errors"] = log.read_text(errors="replace").count("Traceback")
        out["log"] = str(log)
        if not out["server_errors"] and not out["closes"]:
            log.unlink()  # kept only when it explains something
        return out
    finally:
        await stop_server(proc)
        await redis.delete(keys.feed)
        await redis.aclose()


def summarize(
    kind: str, r: dict[str, Any], window: Window | None, published: int, clients: int, duration: float
) -> dict[str, Any]:
    server = r.get("server") or {}
    out: dict[str, Any] = {
        "server": kind,
        "clients": clients,
        "connected": r["connected_peak"],
        "failed": r["failed"],
        "closes": r["closes"],
        "rss_idle_mb": round((server.get("rss_before") or 0) / 2**20, 1),
        "bytes_per_conn": server.get("bytes_per_connection"),
    }
    if window is None:
        return out
    expected = published * clients
    out.update(
        published=published,
        deliveries=r["deliveries"],
        deliveries_per_s=round(r["deliveries"] / duration),
        loss_pct=round(100.0 * (expected - r["deliveries"]) / expected, 2) if expected else None,
        lag_frames=r["lag_frames"],
        latency_ms=r["latency_ms"],
        cpu_percent=window.cpu,
        cores_busy=window.busy,
    )
    return out


def show(res: dict[str, Any]) -> None:
    print(f"\n== {res['server']}: {res['connected']:,}/{res['clients']:,} clients connected, {res['failed']} failed")
    print(f"   RSS idle {res['rss_idle_mb']} MB, {res['bytes_per_conn'] or 0:,} bytes per connection")
    if res["server_errors"] or res["closes"]:
        print(f"   server closed {res['closes']} clients; {res['server_errors']} tracebacks in {res['log']}")
    if "published" not in res:
        return
    lat = res["latency_ms"] or {}
    print(
        f"   {res['published']:,} posts -> {res['deliveries']:,} deliveries ({res['deliveries_per_s']:,}/s), "
        f"loss {res['loss_pct']}%, lag frames {res['lag_frames']}, closes {res['closes']}"
    )
    print(
        f"   latency ms p50 {lat.get('p50')} p95 {lat.get('p95')} p99 {lat.get('p99')} max {lat.get('max')}"
        f" (n={lat.get('count', 0):,})"
    )
    busy = res["cores_busy"]
    hot = [f"cpu{i}" for i, b in enumerate(busy) if b >= 90]
    print(
        f"   server CPU {res['cpu_percent']}%, cores busy {busy} %, saturated: {', '.join(hot) or 'none'}"
        f" (server on cpu0, load + Redis on cpu1)"
    )


def table(ours: dict[str, Any], naive: dict[str, Any]) -> None:
    def p99(r: dict[str, Any]) -> float | None:
        return (r["latency_ms"] or {}).get("p99")

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}x" if a and b else "-"

    rows = [
        ("deliveries/s", ours["deliveries_per_s"], naive["deliveries_per_s"], "ours/naive"),
        ("loss %", ours["loss_pct"], naive["loss_pct"], ""),
        ("latency p50 ms", (ours["latency_ms"] or {}).get("p50"), (naive["latency_ms"] or {}).get("p50"), ""),
        ("latency p99 ms", p99(ours), p99(naive), "naive/ours"),
        ("server CPU %", ours["cpu_percent"], naive["cpu_percent"], "naive/ours"),
        ("bytes/connection", ours["bytes_per_conn"], naive["bytes_per_conn"], ""),
    ]
    print(f"\n{'':<18}{'ours':>14}{'naive':>14}{'ratio':>16}")
    for name, a, b, how in rows:
        r = ratio(a, b) if how == "ours/naive" else ratio(b, a) if how == "naive/ours" else ""
        print(f"{name:<18}{a if a is not None else '-':>14}{b if b is not None else '-':>14}{r:>10} {how}")


async def main(args: argparse.Namespace) -> None:
    limit = raise_fd_limit()
    need = (args.idle or args.clients) + 100
    if limit < need:
        print(f"warning: RLIMIT_NOFILE hard limit {limit} < {need}: some clients will fail", file=sys.stderr)
    pin: list[str] = []
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        pin = ["taskset", "-c", "0"]
        os.sched_setaffinity(0, {1})  # this process, its client workers and the embedded Redis: core 1
    else:
        print("taskset (util-linux) missing or one core: running WITHOUT core pinning", file=sys.stderr)
    async with AsyncExitStack() as stack:
        redis_url = args.redis
        if not redis_url:
            embedded = EmbeddedRedis()
            embedded.start()
            stack.callback(embedded.stop)
            redis_url = embedded.url
        if args.idle:
            show(await one_run("ours", args, redis_url, pin))
            return
        results = {kind: await one_run(kind, args, redis_url, pin) for kind in args.servers.split(",")}
        for res in results.values():
            show(res)
        if "ours" in results and "naive" in results:
            table(results["ours"], results["naive"])
        print(
            f"\n{args.clients:,} clients x {args.rate:g} posts/s x {args.duration:g} s; pinned: {bool(pin)}; "
            f"deliveries/s = posts received by all clients by the end of the drain / driven seconds"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="chatmixer fan-out vs a naive broadcaster, one core each side.")
    parser.add_argument("--clients", type=int, default=1000, help="websocket clients (default 1000)")
    parser.add_argument("--rate", type=float, default=100.0, help="posts/s XADDed into the feed (default 100)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of driving (default 10)")
    parser.add_argument("--drain", type=float, default=2.0, help="seconds after driving before counting (default 2)")
    parser.add_argument("--ramp", type=float, default=3.0, help="seconds to connect the clients (at least N/600)")
    parser.add_argument("--processes", type=int, default=2, help="client worker processes (default 2)")
    parser.add_argument("--sample", type=int, default=5, help="latency-sampled clients per worker (default 5)")
    parser.add_argument("--servers", default="ours,naive", help="which to run, in order (default ours,naive)")
    parser.add_argument("--idle", type=int, default=0, metavar="N", help="only: bytes per idle connection, N clients")
    parser.add_argument("--redis", metavar="URL", help="an existing Redis (default: an embedded one)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the load test's progress every second")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.rate <= 0 or args.duration <= 0 or args.idle < 0:
        parser.error("--clients, --rate and --duration must be positive")
    if not set(args.servers.split(",")) <= {"ours", "naive"}:
        parser.error("--servers is a comma list of ours, naive")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
