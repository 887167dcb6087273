"""Measure: websocket fan-out of `mixer serve --no-merge` beside a naive aiohttp broadcaster, same load.

For each row of the table (N clients x R posts/s, or N idle clients) it runs both servers in
turn, each a subprocess pinned to core 0 with ``taskset -c 0`` (with the embedded Redis:
the feed is part of the serving side), against the same load on core 1: N websocket clients
held by `mixer loadtest` worker processes (a few sampled clients parse frames for latency,
the rest are `mixer.tools.loadtest.poll` counters read in paced rounds), and a driver that XADDs
~400-byte posts straight into the merged feed stream at R posts/s for D seconds (what the merge stage writes, so no
merge stage runs). For each run it prints deliveries/s, loss, latency percentiles (receive
time minus the post's ``at``), CPU % of the server (and its kernel share), of the load side
and of Redis, CPU microseconds per delivery, our hub's own counters (broadcasts, posts per
broadcast, ms per broadcast, publish -> hub delay), RSS per connection, per-core busy and
which core saturated; then one table of every run against the issue's targets, and the whole
as JSON with ``--json``. With ``--cross-check N``, N more clients (``scripts/xcheck_client.py``: websocket-client,
no code shared with the load test or the server) count their deliveries too, and each driven run prints their
posts per client beside the load test's, both against the posts driven; a mismatch is flagged, and when the load
test saw nothing lost it makes the exit status 1.
Loopback packets pass each core's input backlog: set ``net.core.netdev_max_backlog`` to 30000 or more first (the
default 1000 drops packets when a broadcast writes thousands of sockets, and each drop is a retransmission 200 ms+
later); the drops of each run are printed. See docs/benchmarks.md.

    .venv/bin/python scripts/bench_fanout.py                              # 1,000 x 100, both servers
    .venv/bin/python scripts/bench_fanout.py --rows all --json bench.json # every row of the target table
    .venv/bin/python scripts/bench_fanout.py --rows 5000x1000 --servers ours
    .venv/bin/python scripts/bench_fanout.py --rows idle10000             # bytes per idle connection, ours
    .venv/bin/python scripts/bench_fanout.py --servers ours --cross-check 20  # counts checked by 20 other clients
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import resource
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from mixer.codec import FIELD, pack_post
from mixer.embedded import EmbeddedRedis
from mixer.keys import Keys
from mixer.models import Author, Post
from mixer.settings import Settings
from mixer.tools.loadtest.options import MAX_CONNECT_RATE, capped_ramp
from mixer.tools.loadtest.procstat import core_busy, core_times, describe_machine, process_ticks
from mixer.tools.loadtest.report import spread_of
from mixer.tools.loadtest.run import LoadOptions, loadtest

ROOT = Path(__file__).resolve().parent.parent
XCHECK = ROOT / "scripts" / "xcheck_client.py"
CHATS = ("smbiz", "edchat", "journchat", "blogchat")
HZ = os.sysconf("SC_CLK_TCK")
# seconds between the driver's XADD pipelines (the posts due meanwhile go together, each stamped when made):
# a pipeline per post, every ~1 ms at 1,000 posts/s, took a quarter of the load core
DRIVE_TICK = 0.005


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


def server_sockets(port: int) -> Iterator[list[str]]:
    """The /proc/net/tcp and tcp6 rows (split into fields) of sockets whose local port is ``port``."""
    want = f":{port:04X}"
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[1].endswith(want):
                yield fields


def established(port: int) -> int:
    """TCP connections in state ESTABLISHED whose local port is ``port`` (the server's side), from /proc/net."""
    return sum(1 for fields in server_sockets(port) if fields[3] == "01")


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
    kind: str, port: int, redis_url: str, keys: Keys, pin: list[str], log: Path, workers: int = 1
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
        cmd = [sys.executable, "-m", "mixer.cli", "serve", "--no-merge", "--port", str(port), "--workers", str(workers)]
    else:
        cmd = [sys.executable, str(ROOT / "scripts" / "naive_broadcast.py"), "--port", str(port)]
        cmd += ["--redis", redis_url, "--stream", keys.feed]
    with log.open("wb") as out:  # the child keeps its own descriptor
        proc = await asyncio.create_subprocess_exec(*pin, *cmd, env=env, cwd=ROOT, stdout=out, stderr=out)
    await wait_listening(port, proc)
    return proc


async def wait_workers(port: int, proc: asyncio.subprocess.Process, workers: int, within: float = 30) -> set[int]:
    """The server's processes (``proc`` and the siblings ``mixer serve --workers`` spawned), once ``workers`` of them
    listen on ``port``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        pids = {proc.pid} | descendants(proc.pid)
        if len(listening_by_pid(port, pids)) >= workers:
            return pids
        await asyncio.sleep(0.1)
    raise RuntimeError(f"fewer than {workers} server processes listening on {port} after {within} s")


def sockets_by_pid(port: int, pids: set[int], state: str) -> dict[int, int]:
    """How many TCP sockets in ``state`` (/proc/net/tcp's hex code: 01 established, 0A listening) with local port
    ``port`` each of ``pids`` holds (matched by socket inode through /proc/PID/fd)."""
    owner: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                link = os.readlink(fd) if fd.is_symlink() else ""
                if link.startswith("socket:["):
                    owner[link[8:-1]] = pid
        except OSError:
            continue  # gone meanwhile
    counts: dict[int, int] = {}
    for fields in server_sockets(port):
        if fields[3] == state and fields[9] in owner:
            counts[owner[fields[9]]] = counts.get(owner[fields[9]], 0) + 1
    return counts


def listening_by_pid(port: int, pids: set[int]) -> dict[int, int]:
    return sockets_by_pid(port, pids, "0A")


def bytes_written(pid: int) -> int:
    """Bytes the process passed to write and sendfile calls (``wchar`` of /proc/PID/io; 0 when unreadable)."""
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in text.splitlines() if line.startswith("wchar:")), 0)


async def stop_server(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc/PID/task/TID/children)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            try:
                kids = {int(k) for k in task.read_text().split()}
            except OSError:
                continue
            todo += kids - found
            found |= kids
    return found


def kernel_threads(prefix: str = "ksoftirqd/") -> set[int]:
    """The kernel threads named ``prefix``...: ksoftirqd runs the network receive work the kernel defers under load
    (on loopback, the clients' and the server's TCP input), charged to no process of ours."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().partition("(")[2].startswith(prefix):
                found.add(int(stat.parent.name))
        except OSError:
            continue
    return found


def ticks_of(pids: set[int], system: bool = False) -> int:
    """utime + stime of ``pids`` in clock ticks (stime alone with ``system``); a process gone meanwhile counts 0."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        total += int(stat.rpartition(")")[2].split()[12]) if system else process_ticks(stat)
    return total


class Window:
    """CPU of the server (every one of its processes), of the load side (this process and its workers) and of
    Redis, each server process's CPU and bytes written, and per-core busy, over the driven window; 100% = one core."""

    def __init__(self, pids: set[int], redis_pid: int | None) -> None:
        self.pids, self.redis_pid = pids, redis_pid

    def begin(self) -> None:
        self.load = descendants(os.getpid()) - self.pids - {self.redis_pid} | {os.getpid()}
        self.redis = {self.redis_pid} if self.redis_pid else set()
        self.softirqd = kernel_threads()
        self.t0 = time.monotonic()
        self.ticks0 = [ticks_of(self.pids), ticks_of(self.pids, True), ticks_of(self.load), ticks_of(self.redis)]
        self.ticks0.append(ticks_of(self.softirqd))
        self.each0 = {pid: (ticks_of({pid}), bytes_written(pid)) for pid in self.pids}
        self.cores0 = core_times(Path("/proc/stat").read_text())
        self.drops0 = softnet_drops()

    def end(self) -> None:
        elapsed = time.monotonic() - self.t0
        ticks = [ticks_of(self.pids), ticks_of(self.pids, True), ticks_of(self.load), ticks_of(self.redis)]
        ticks.append(ticks_of(self.softirqd))
        self.seconds = elapsed
        self.cpu, self.cpu_system, self.load_cpu, self.redis_cpu, self.softirqd_cpu = (
            round(100.0 * (b - a) / HZ / elapsed, 1) for a, b in zip(self.ticks0, ticks, strict=True)
        )
        self.each = {
            pid: (round(100.0 * (ticks_of({pid}) - t0) / HZ / elapsed, 1), bytes_written(pid) - w0)
            for pid, (t0, w0) in self.each0.items()
        }
        self.busy = core_busy(self.cores0, core_times(Path("/proc/stat").read_text()))
        self.drops = softnet_drops() - self.drops0


BACKLOG_WANTED = 30000  # packets a core's input backlog holds: a broadcast to 10,000 sockets fits


def backlog_limit() -> str:
    try:
        return Path("/proc/sys/net/core/netdev_max_backlog").read_text().strip()
    except OSError:
        return "?"


def softnet_drops() -> int:
    """Packets the kernel dropped because a core's input backlog was full (all cores; loopback goes there too).

    Each drop is a TCP retransmission after at least 200 ms: drops mean tails set by the kernel's
    ``net.core.netdev_max_backlog``, not by the server."""
    try:
        lines = Path("/proc/net/softnet_stat").read_text().split("\n")
    except OSError:
        return 0
    return sum(int(line.split()[1], 16) for line in lines if line.strip())


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
        await asyncio.sleep(max(DRIVE_TICK, start + n / rate - time.monotonic()))
    return n


@dataclass(frozen=True)
class Row:
    """One load of the target table: N clients x R posts/s (driven), or N idle clients (memory only)."""

    clients: int
    rate: float = 0.0  # 0: idle, memory per connection only
    target_p99_ms: float | None = None

    @property
    def name(self) -> str:
        return f"{self.clients}x{self.rate:g}" if self.rate else f"idle{self.clients}"


# the targets (issue 5): p99 under the given ms with nothing lost; idle: under 10 KB per connection (issue
# 17.3, which lowered issue 5's 15 KB)
TARGETS = (
    Row(1000, 100, 50),
    Row(5000, 100, 100),
    Row(10000, 100, 200),
    Row(1000, 1000, 100),
    Row(5000, 1000, 200),
    Row(10000, 1000, 500),
    Row(10000),
)
IDLE_TARGET_BYTES = 10_000


def parse_row(text: str) -> Row:
    """``NxR`` (clients x posts/s) or ``idleN``; a row of TARGETS keeps its target."""
    if text.startswith("idle"):
        row = Row(int(text[4:]))
    else:
        clients, _, rate = text.partition("x")
        row = Row(int(clients), float(rate))
    return next((t for t in TARGETS if (t.clients, t.rate) == (row.clients, row.rate)), row)


async def one_run(
    kind: str, row: Row, args: argparse.Namespace, redis_url: str, redis_pid: int | None, pin: list[str]
) -> dict[str, Any]:
    """One server under the load: start it, connect the clients, drive, collect the figures, stop it."""
    keys = Keys(f"bench{uuid.uuid4().hex[:8]}")
    port = free_port()
    redis = aioredis.Redis.from_url(redis_url)
    log = Path(tempfile.gettempdir()) / f"bench_fanout_{kind}_{os.getpid()}.log"
    workers = args.workers if kind == "ours" and row.rate else 1  # idle: one process's RSS is the figure
    proc = await start_server(kind, port, redis_url, keys, pin, log, workers)
    xcheck: asyncio.subprocess.Process | None = None
    try:
        pids = await wait_workers(port, proc, workers)
        where = place(proc.pid, pids, bool(pin))
        await asyncio.sleep(1.0)  # let it settle: the idle RSS is read by the load test before connecting
        idle = not row.rate
        clients = row.clients
        # faster connect bursts overflow the server's Redis pool (100); the load test's own cap said up front, so
        # the ramp is not stretched (and said so) in every big row, and the run's duration counts the whole ramp
        ramp = capped_ramp(clients, max(args.ramp, clients / 600), MAX_CONNECT_RATE)
        options = LoadOptions(
            url=f"ws://127.0.0.1:{port}/ws",
            clients=clients,
            ramp=ramp,
            processes=args.processes,
            sample=0 if idle else args.sample,
            poll_ms=args.poll_ms,
            duration=2.0 if idle else ramp + 30 + args.duration + args.drain,  # driven runs end at ``stop``
            drive="none",
            server_pid=proc.pid,
        )
        say_last = [0.0]

        def say(message: str, progress: bool) -> None:
            if args.verbose or time.monotonic() - say_last[0] >= 5:
                say_last[0] = time.monotonic()
                print(f"  [{kind}] {message}", file=sys.stderr, flush=True)

        stop = asyncio.Event()
        test = asyncio.create_task(loadtest(Settings(), options, say, stop))
        window = Window(pids, redis_pid)
        published = 0
        independent: dict[str, Any] | None = None
        if not idle:
            deadline, last, grown = time.monotonic() + ramp + 30, -1, time.monotonic()
            while (now := established(port)) < clients and time.monotonic() < deadline and not test.done():
                if now > last:  # the ramp is over when the count stops growing (closed or refused clients)
                    last, grown = now, time.monotonic()
                elif now > 0 and time.monotonic() - grown > 3:
                    break
                await asyncio.sleep(0.2)
            if args.cross_check:  # connected after ours, so the wait above counts ours alone; on the load core too
                xcheck = await start_cross_check(port, args.cross_check, f"bench:{keys.prefix}:", kind == "ours")
            await asyncio.sleep(0.5)
            connections = sockets_by_pid(port, pids, "01")
            window.begin()
            published = await drive(redis, keys, row.rate, args.duration, keys.prefix)
            await asyncio.sleep(args.drain)
            window.end()
            if xcheck is not None:
                independent = await finish_cross_check(xcheck)
        hubs = await hub_counters(port, workers) if kind == "ours" and not idle else {}
        stop.set()
        result = await test
        out = summarize(kind, result, window if not idle else None, published, clients, args.duration)
        out.update(row=row.name, rate=row.rate, target_p99_ms=row.target_p99_ms, load_avg=os.getloadavg()[0])
        out.update(workers=workers, layout=where)
        if hubs:
            out["hub"] = hub_figures(dict(sum((Counter(h) for h in hubs.values()), Counter())))
        if independent is not None:
            out["cross_check"] = cross_check(independent, result["posts_per_client"], published)
        if not idle:
            out["per_worker"] = [
                {
                    "pid": pid,
                    "cores": sorted(os.sched_getaffinity(pid)) if pid_alive(pid) else [],
                    "connections": connections.get(pid, 0),
                    "cpu_percent": window.each[pid][0],
                    "written_mb": round(window.each[pid][1] / 2**20, 1),
                    "posts_sent": hubs.get(pid, {}).get("posts_sent"),
                    "frames_sent": hubs.get(pid, {}).get("frames_sent"),
                }
                for pid in sorted(pids)
            ]
        out["server_errors"] = log.read_text(errors="replace").count("Traceback")
        out["log"] = str(log)
        if not out["server_errors"] and not out["closes"]:
            log.unlink()  # kept only when it explains something
        return out
    finally:
        if xcheck is not None and xcheck.returncode is None:
            xcheck.kill()  # the run failed before it ended
            await xcheck.wait()
        await stop_server(proc)
        await redis.delete(keys.feed)
        await redis.aclose()


async def start_cross_check(port: int, clients: int, marker: str, hello: bool) -> asyncio.subprocess.Process:
    """The independent clients (``scripts/xcheck_client.py``) in a process of their own, returned once each has
    connected (and, with ``hello``, has its hello) or failed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(XCHECK), "--url", f"ws://127.0.0.1:{port}/ws", "--clients", str(clients),
        "--marker", marker, *([] if hello else ["--no-hello"]),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if not line.startswith(b"ready "):
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"scripts/xcheck_client.py did not start (exit {proc.returncode}): see its error above")
    return proc


async def finish_cross_check(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    """Stop the independent clients (their stdin ends) and read their counts."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.close()
    out = await asyncio.wait_for(proc.stdout.read(), 30)
    await proc.wait()
    return dict(json.loads(out.splitlines()[-1]))


def cross_check(independent: dict[str, Any], ours: dict[str, float] | None, published: int) -> dict[str, Any]:
    """Posts per client of our load test beside the independent clients', each against the posts driven (every
    client should get each once); ``mismatches`` says in words what differs, empty when all agree."""
    theirs, keys = spread_of(independent["per_client"]), spread_of(independent["keys_per_client"])
    mismatches = []
    for name, spread in (
        ("our load test's deliveries", ours),
        ("independent deliveries", theirs),
        ("independent distinct posts", keys),
    ):
        if spread is None or spread["min"] != published or spread["max"] != published:
            got = f"{spread['min']:g}-{spread['max']:g}" if spread else "none"
            mismatches.append(f"{name} per client {got}, {published} driven")
    if independent["failed"] or independent["closes"]:
        mismatches.append(
            f"{independent['failed']} independent clients failed to connect, {independent['closes']} were closed "
            f"by the server {independent['close_codes']}"
        )
    return {
        "expected_per_client": published,
        "ours_per_client": ours,
        "independent_clients": independent["clients"],
        "independent_connected": independent["connected"],
        "independent_per_client": theirs,
        "independent_keys_per_client": keys,
        "independent_lag_frames": independent["lag_frames"],
        "independent_closes": independent["closes"],
        "independent_latency_ms": independent["latency_ms"],
        "mismatches": mismatches,
    }


def disputed(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs where our load test saw every post reach every client but the independent clients disagree: what
    the cross-check is for. (A run that lost posts, as the naive server does when it falls behind, differs from
    the posts driven on both sides, each client by its own amount; its loss is already in its row.)"""
    return [r for r in results if r.get("loss_pct") == 0 and (r.get("cross_check") or {}).get("mismatches")]


def place(main: int, pids: set[int], pinned: bool) -> str:
    """Pin the server's processes and the load side (this process: the client workers it starts inherit it); says
    where each went. One server process: it (and Redis) on core 0, the load on core 1, a core each. With
    ``--workers N`` the main process stays on core 0 and each sibling goes to the next core; on 2 cores that leaves
    the load side no core of its own, so it may run on every core."""
    if not pinned:
        return "unpinned"
    cores = os.cpu_count() or 1
    for i, pid in enumerate(sorted(pids - {main}), start=1):
        os.sched_setaffinity(pid, {i % cores})
    load = {1} if len(pids) == 1 else set(range(cores))
    os.sched_setaffinity(0, load)
    server = "+".join(f"cpu{i % cores}" for i in range(len(pids)))
    return f"server {server}, Redis cpu0, load {'+'.join(f'cpu{c}' for c in sorted(load))}"


def pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


async def hub_counters(port: int, workers: int = 1, tries: int = 40) -> dict[int, dict[str, int]]:
    """Each server process's hub counters (``/api/stats``), by pid: asked on a fresh connection each time (the
    kernel spreads connections over the processes sharing the port) until ``workers`` answered or ``tries`` ran
    out; empty when it does not answer."""
    found: dict[int, dict[str, int]] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for _ in range(tries):
            try:
                async with session.get(f"http://127.0.0.1:{port}/api/stats") as response:
                    body = await response.json()
            except (aiohttp.ClientError, TimeoutError, ValueError):
                break
            found[int(body.get("pid", 0))] = dict(body.get("hub", {}))
            if len(found) >= workers:
                break
    return found


def hub_figures(hub: dict[str, int]) -> dict[str, Any]:
    """What the hub counters say: batches read, posts per batch, laps, ms of writing per lap, posts per frame,
    mean publish -> hub ms."""
    batches, timed, laps = hub.get("broadcasts", 0), hub.get("posts_timed", 0), hub.get("laps", 0)
    frames = hub.get("frames_sent", 0)
    return {
        "batches": batches,
        "posts_per_batch": round(timed / batches, 1) if batches else None,
        "laps": laps,
        "lap_write_ms_mean": round(hub.get("broadcast_us", 0) / 1000 / laps, 2) if laps else None,
        "posts_per_frame": round(hub.get("posts_sent", 0) / frames, 1) if frames else None,
        "feed_delay_ms_mean": round(hub.get("feed_delay_ms", 0) / timed, 2) if timed else None,
        "posts_skipped": hub.get("posts_skipped", 0),
        "cut_off": hub.get("cut_off", 0),
        "frames_zero_copy": hub.get("frames_zero_copy", 0),
    }


def per_delivery(cpu_percent: float, seconds: float, deliveries: int) -> float | None:
    """CPU microseconds per delivery, from a CPU % of one core over ``seconds``."""
    return round(cpu_percent * seconds * 1e4 / deliveries, 3) if deliveries else None


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
        cpu_system_percent=window.cpu_system,
        load_cpu_percent=window.load_cpu,
        server_us_per_delivery=per_delivery(window.cpu, window.seconds, r["deliveries"]),
        load_us_per_delivery=per_delivery(window.load_cpu, window.seconds, r["deliveries"]),
        redis_cpu_percent=window.redis_cpu,
        redis_us_per_delivery=per_delivery(window.redis_cpu, window.seconds, r["deliveries"]),
        softirqd_cpu_percent=window.softirqd_cpu,
        softirqd_us_per_delivery=per_delivery(window.softirqd_cpu, window.seconds, r["deliveries"]),
        cores_busy=window.busy,
        busy_us_per_delivery=per_delivery(sum(window.busy), window.seconds, r["deliveries"]),  # everything, all cores
        window_s=round(window.seconds, 2),
        softnet_drops=window.drops,
        timeline=r["timeline"],  # per second: deliveries, latency percentiles, cores busy, server CPU
    )
    out["delivering_seconds"], out["saturated_seconds"] = saturation(r["timeline"])
    return out


def saturated(res: dict[str, Any]) -> str:
    """Cores at least 90% busy in at least half of the seconds that had deliveries (per-second, not averaged)."""
    counts = res.get("saturated_seconds") or []
    seconds = res.get("delivering_seconds") or 0
    return ", ".join(f"cpu{i}" for i, n in enumerate(counts) if seconds and n * 2 >= seconds) or "none"


def saturation(timeline: list[dict[str, Any]]) -> tuple[int, list[int]]:
    """Seconds with deliveries, and in how many of them each core was at least 90% busy."""
    rows = [t for t in timeline if t.get("deliveries") and t.get("cores")]
    cores = max((len(t["cores"]) for t in rows), default=0)
    return len(rows), [sum(1 for t in rows if len(t["cores"]) > i and t["cores"][i] >= 90) for i in range(cores)]


def show(res: dict[str, Any]) -> None:
    print(
        f"\n== {res['row']} {res['server']}: {res['connected']:,}/{res['clients']:,} clients connected, "
        f"{res['failed']} failed (load average {res['load_avg']:.2f})"
    )
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
    print(
        f"   CPU us per delivery: server {res['server_us_per_delivery']}, load {res['load_us_per_delivery']}"
        + (f"; hub: {res['hub']}" if res.get("hub") else "")
    )
    print(
        f"   CPU % of one core: server {res['cpu_percent']} (kernel {res['cpu_system_percent']}), "
        f"load {res['load_cpu_percent']}, redis {res['redis_cpu_percent']}, ksoftirqd {res['softirqd_cpu_percent']}; "
        f"cores busy {res['cores_busy']} %, saturated: "
        f"{saturated(res)} in {res['saturated_seconds']} of {res['delivering_seconds']} s ({res['layout']})"
    )
    if len(res.get("per_worker") or ()) > 1:
        for w in res["per_worker"]:
            print(
                f"   worker {w['pid']} on cpu{','.join(map(str, w['cores']))}: {w['connections']:,} connections, "
                f"CPU {w['cpu_percent']}%, {w['written_mb']:,} MB written, {w['posts_sent'] or 0:,} posts in "
                f"{w['frames_sent'] or 0:,} frames"
            )
    print(
        f"   kernel input-backlog drops (TCP retransmits on loopback) {res.get('softnet_drops', 0):,}; "
        f"net.core.netdev_max_backlog {backlog_limit()}"
    )
    if xc := res.get("cross_check"):
        show_cross_check(xc, res["connected"])


def show_cross_check(xc: dict[str, Any], ours_clients: int) -> None:
    def spread(s: dict[str, float] | None) -> str:
        return f"{s['min']:g} / {s['mean']:g} / {s['max']:g}" if s else "none"

    lat = xc["independent_latency_ms"]
    print(
        f"   cross-check, posts per client (min / mean / max), {xc['expected_per_client']:,} driven: "
        f"our load test {spread(xc['ours_per_client'])} ({ours_clients:,} clients); independent "
        f"{spread(xc['independent_per_client'])} ({xc['independent_connected']}/{xc['independent_clients']} "
        f"websocket-client clients), distinct posts {spread(xc['independent_keys_per_client'])}"
    )
    print(
        f"   independent clients: lag frames {xc['independent_lag_frames']}, closes {xc['independent_closes']}, "
        f"latency ms p50 {lat.get('p50')} p99 {lat.get('p99')} max {lat.get('max')} (n={lat.get('count', 0):,}): "
        + ("counts agree" if not xc["mismatches"] else "MISMATCH: " + "; ".join(xc["mismatches"]))
    )


def verdict(res: dict[str, Any]) -> str:
    """Whether a run met its row's target: p99 under it and nothing lost (idle: bytes per connection)."""
    if "published" not in res:
        bpc = res["bytes_per_conn"] or 0
        return "met" if bpc and bpc < IDLE_TARGET_BYTES else "missed"
    p99, target = (res["latency_ms"] or {}).get("p99"), res["target_p99_ms"]
    if target is None or p99 is None:
        return "-"
    return "met" if p99 < target and res["loss_pct"] == 0 and not res["closes"] else "missed"


def table(results: list[dict[str, Any]]) -> None:
    """One line per run: the row, the server, what it reached, its target, which core saturated."""
    print(
        f"\n{'row':<11}{'server':<7}{'deliv/s':>10}{'loss%':>7}{'p50':>8}{'p99':>8}{'target':>8}{'':>8}"
        f"{'srvCPU':>8}{'loadCPU':>8}{'B/conn':>8}  saturated  load-avg"
    )
    for r in results:
        lat = r.get("latency_ms") or {}
        target = r["target_p99_ms"] if r.get("rate") else f"<{IDLE_TARGET_BYTES // 1000}KB"
        print(
            f"{r['row']:<11}{r['server']:<7}{r.get('deliveries_per_s', '-'):>10}{r.get('loss_pct', '-'):>7}"
            f"{lat.get('p50', '-'):>8}{lat.get('p99', '-'):>8}{target or '-':>8}{verdict(r):>8}"
            f"{r.get('cpu_percent', '-'):>8}{r.get('load_cpu_percent', '-'):>8}{r['bytes_per_conn'] or '-':>8}"
            f"  {saturated(r):<10} {r['load_avg']:.2f}"
        )


def ratios(results: list[dict[str, Any]]) -> list[str]:
    """For each row run on both servers, ours against the naive one: deliveries/s, p99 and server CPU per delivery
    (how many times better ours is; above 1 is better)."""
    runs = {(r["row"], r["server"]): r for r in results if r.get("rate")}
    lines = []
    for (row, server), ours in runs.items():
        naive = runs.get((row, "naive"))
        if server != "ours" or naive is None:
            continue
        figures = [
            ("deliveries/s", ours.get("deliveries_per_s"), naive.get("deliveries_per_s")),
            ("p99 (naive/ours)", (naive.get("latency_ms") or {}).get("p99"), (ours.get("latency_ms") or {}).get("p99")),
            ("CPU/delivery (naive/ours)", naive.get("server_us_per_delivery"), ours.get("server_us_per_delivery")),
        ]
        said = [f"{name} {top / bottom:.1f}x" for name, top, bottom in figures if top and bottom]
        lines.append(f"{row:<11}ours vs naive: " + ", ".join(said))
    return lines


def save(path: Path, results: list[dict[str, Any]]) -> None:
    path.write_text(json.dumps(results, indent=1))


def prepare(clients: int) -> list[str]:
    """Before any run: the descriptor limit raised, warnings for what would spoil the figures, and the pinning
    (``taskset`` for the server, this process on core 1); returns the server's ``taskset`` prefix, empty unpinned."""
    limit = raise_fd_limit()
    if limit < clients + 100:
        print(f"warning: RLIMIT_NOFILE hard limit {limit} < {clients + 100}: some clients will fail", file=sys.stderr)
    if backlog_limit().isdigit() and int(backlog_limit()) < BACKLOG_WANTED:
        print(
            f"warning: net.core.netdev_max_backlog is {backlog_limit()}: loopback drops will set the tails; "
            f"as root: sysctl -w net.core.netdev_max_backlog={BACKLOG_WANTED}",
            file=sys.stderr,
        )
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})  # this process and its client workers: core 1
        return ["taskset", "-c", "0"]
    print("taskset (util-linux) missing or one core: running WITHOUT core pinning", file=sys.stderr)
    return []


def feed_redis(stack: AsyncExitStack, url: str | None, pinned: bool) -> tuple[str, int | None]:
    """``url``, or an embedded Redis (stopped with ``stack``, on core 0 if pinned); its URL and pid (None: not ours)."""
    if url:
        return url, None
    embedded = EmbeddedRedis()
    embedded.start()
    stack.callback(embedded.stop)
    if pinned:
        os.sched_setaffinity(embedded.pid, {0})  # the feed is part of the serving side: with the server
    return embedded.url, embedded.pid


async def main(args: argparse.Namespace) -> None:
    rows = list(TARGETS) if args.rows == "all" else [parse_row(t) for t in args.rows.split(",")]
    pin = prepare(max(r.clients for r in rows))
    print(f"machine: {describe_machine()}", flush=True)
    results: list[dict[str, Any]] = []
    async with AsyncExitStack() as stack:
        redis_url, redis_pid = feed_redis(stack, args.redis, bool(pin))
        for row in rows:
            for kind in ["ours"] if not row.rate else args.servers.split(","):
                res = await one_run(kind, row, args, redis_url, redis_pid, pin)
                show(res)
                results.append(res)
                if args.json:
                    save(Path(args.json), results)
    table(results)
    if said := ratios(results):
        print("\n" + "\n".join(said))
    for r in results:
        if said := (r.get("cross_check") or {}).get("mismatches"):
            print(f"\nCROSS-CHECK MISMATCH {r['row']} {r['server']}: " + "; ".join(said))
    print(
        f"\n{args.duration:g} s driven per row; pinned: {bool(pin)}; deliveries/s = posts received by all clients "
        f"by the end of the drain / driven seconds; CPU 100% = one core; JSON in {args.json or '(no --json)'}"
    )
    if disputed(results):
        sys.exit(1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="chatmixer fan-out vs a naive broadcaster, one core each side.")
    parser.add_argument(
        "--rows",
        default="1000x100",
        help="comma list of CLIENTSxRATE (driven) and idleN (memory), or 'all' for the issue's target table "
        "(default 1000x100)",
    )
    parser.add_argument("--clients", type=int, help="with --rate: one row CLIENTSxRATE (same as --rows)")
    parser.add_argument("--rate", type=float, default=100.0, help="posts/s for --clients (default 100)")
    parser.add_argument("--idle", type=int, metavar="N", help="one row: memory per idle connection (= --rows idleN)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of driving (default 10)")
    parser.add_argument("--drain", type=float, default=2.0, help="seconds after driving before counting (default 2)")
    parser.add_argument("--ramp", type=float, default=3.0, help="seconds to connect the clients (at least N/600)")
    parser.add_argument("--processes", type=int, default=1, help="client worker processes (default 1)")
    parser.add_argument("--sample", type=int, default=10, help="latency-sampled clients per worker (default 10)")
    parser.add_argument("--poll-ms", type=float, default=40.0, help="counting clients' read rounds (default 40 ms)")
    parser.add_argument("--servers", default="ours,naive", help="which to run, in order (default ours,naive)")
    parser.add_argument("--json", metavar="FILE", help="write every run's figures here (rewritten after each run)")
    parser.add_argument(
        "--cross-check",
        type=int,
        default=0,
        metavar="N",
        help="also hold N independent clients (scripts/xcheck_client.py, websocket-client) on each driven run and "
        "print their posts per client beside the load test's (default 0: none)",
    )
    parser.add_argument("--redis", metavar="URL", help="an existing Redis (default: an embedded one)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="ours as `mixer serve --workers N`, one process per core, the load side then on every core (default 1)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print the load test's progress every second")
    args = parser.parse_args(argv)
    if args.idle:
        args.rows = f"idle{args.idle}"
    elif args.clients:
        args.rows = f"{args.clients}x{args.rate:g}"
    if args.duration <= 0 or args.rate <= 0:
        parser.error("--duration and --rate must be positive")
    try:
        [parse_row(t) for t in args.rows.split(",")] if args.rows != "all" else None
    except ValueError:
        parser.error("--rows is a comma list of CLIENTSxRATE or idleN, e.g. 1000x100,idle10000, or all")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.workers > 1 and "idle" in args.rows:
        # bytes per connection reads the main process's RSS, and it holds only its share of the connections
        parser.error("--workers N > 1 is for driven rows: an idle row measures one process's memory")
    if not set(args.servers.split(",")) <= {"ours", "naive"}:
        parser.error("--servers is a comma list of ours, naive")
    if args.cross_check < 0:
        parser.error("--cross-check is a number of clients, 0 or more")
    if args.cross_check and importlib.util.find_spec("websocket") is None:
        parser.error("--cross-check needs websocket-client: pip install 'chatmixer[load]' (or the test extra)")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
