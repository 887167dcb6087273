"""The client side of `mixer loadtest`: worker processes holding many websocket clients.

``worker_main`` is the entry point of each worker process (started by ``mixer.tools.loadtest.run``
with the ``spawn`` method); its clients start at their slot of the global ramp. A worker runs
either *sampled* clients or *counting* ones. Sampled clients (aiohttp, on the worker's own
event loop, uvloop when installed) parse every frame, measure latency (receive time minus
each post's ``at``, ms) and remember which driven posts (keys under the run's marker) they
saw; they are few and event-driven, so their latency is not delayed by the others. Counting
clients (``mixer.tools.loadtest.poll``) are read in paced rounds and counted with ``mixer.tools.loadtest.count``,
with no frame object, text decode or JSON parse, so the generator stays cheaper than the
server it measures. Every client counts ``lag`` frames and closes the server made. Counts
go to the parent as ``("progress", worker, {...})`` twice a second and a final
``("done", worker, {...})``. A worker of kind ``sse`` holds the ``/events`` clients instead
(``mixer.tools.loadtest.sse``), each parsing every event as a sampled client does.
``WorkerPool`` is the parent's handle on the workers: it spawns them (each of the P shares
of clients gives one sampled and one counting worker, the /events clients one more), hands
their messages to its event loop, waits on conditions over their reports, and stops and
joins them. Not here: driving load, CPU and memory figures, reports.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import multiprocessing
import os
import resource
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

PROGRESS_EVERY = 0.5  # seconds between progress messages to the parent
POLL_MS = 40.0  # default milliseconds between the counting clients' read rounds


class PoolOptions(Protocol):
    """What ``WorkerPool`` needs of the load test's options."""

    @property
    def url(self) -> str: ...
    @property
    def clients(self) -> int: ...
    @property
    def processes(self) -> int: ...
    @property
    def ramp(self) -> float: ...
    @property
    def sample(self) -> int: ...
    @property
    def poll_ms(self) -> float: ...
    @property
    def sse_clients(self) -> int: ...


class Sink(Protocol):
    def put(self, obj: Any) -> None: ...


class Flag(Protocol):
    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class StartTime(Protocol):
    value: float


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """What one worker process runs: which of the N clients are its own, and how they behave."""

    worker: int  # index of this worker process
    url: str  # the websocket URL (checked by the parent: another machine only when allowed)
    clients: tuple[int, ...]  # global indices of this worker's clients (their ramp slots)
    total: int  # N, all clients over all workers
    ramp: float  # seconds over which all N clients start
    sample: int  # how many of this worker's clients parse every frame
    marker: str | None  # keys of the posts the parent drives (``is_driven``), None when it does not drive
    poll: float = POLL_MS / 1000  # seconds between read rounds of counting clients
    kind: str = "ws"  # ws: websocket clients at ``url``; sse: /events clients beside it


@dataclass(slots=True)
class WorkerStats:
    """Counters of one worker; ``summary`` is what the parent gets at the end."""

    connected: int = 0  # open now
    peak: int = 0  # most open at once
    failed: int = 0  # connections refused or broken before the upgrade
    closes: int = 0  # sockets the server closed (or dropped) before the run ended
    lag_frames: int = 0
    items: int = 0  # posts received, all clients
    per_client: dict[int, int] = field(default_factory=dict)  # global client index -> posts received
    per_second: defaultdict[int, int] = field(default_factory=lambda: defaultdict(int))  # second -> posts received
    latency: defaultdict[int, list[float]] = field(default_factory=lambda: defaultdict(list))  # second -> ms (sampled)
    seen: dict[int, set[str]] = field(default_factory=dict)  # sampled client -> driven keys received
    close_codes: defaultdict[int, int] = field(default_factory=lambda: defaultdict(int))

    def progress(self) -> dict[str, Any]:
        seen = [len(s) for s in self.seen.values()]
        return {
            "connected": self.connected,
            "failed": self.failed,
            "closes": self.closes,
            "lag_frames": self.lag_frames,
            "items": self.items,
            "min_seen": min(seen) if seen else 0,
        }

    def summary(self) -> dict[str, Any]:
        return {
            **self.progress(),
            "peak": self.peak,
            "per_client": list(self.per_client.values()),
            "per_second": dict(self.per_second),
            "latency": dict(self.latency),
            "seen": [len(s) for s in self.seen.values()],
            "close_codes": dict(self.close_codes),
        }


def is_driven(key: str, marker: str) -> bool:
    """Whether a post key was driven by the run of ``marker``: a marker ``~TAG.`` (a replay's run tag) matches keys
    ending in ``~TAG.<pass>``, any other marker (``loadtest:<run>:``) keys that start with it."""
    if marker.startswith("~"):
        _, sep, tail = key.rpartition(marker)
        return bool(sep) and tail.isdigit()
    return key.startswith(marker)


def worker_main(plan: WorkerPlan, out: Sink, go: Flag, start: StartTime, stop: Flag) -> None:
    """Run ``plan``'s clients from the shared start time until ``stop``; always ends with a ``done`` message."""
    _die_with_parent()
    _raise_fd_limit()
    try:
        import uvloop

        run: Callable[[Coroutine[Any, Any, None]], None] = uvloop.run
    except ImportError:  # uvloop is optional: the standard loop measures the same, a little slower
        run = asyncio.run
    stats = WorkerStats()
    out.put(("ready", plan.worker, {}))
    go.wait()
    try:
        if plan.kind == "sse":
            from mixer.tools.loadtest.sse import run_sse  # here: mixer.tools.loadtest.sse imports this module

            run(run_sse(plan, stats, out, start.value, stop))
        elif plan.sample:
            run(_run(plan, stats, out, start.value, stop))
        elif not stop.is_set():
            from mixer.tools.loadtest.poll import poll_clients  # here: mixer.tools.loadtest.poll imports this module

            poll_clients(plan, stats, out, start.value, stop)
    finally:
        out.put(("done", plan.worker, {**stats.summary(), "kind": plan.kind}))


def _die_with_parent() -> None:
    """Leave stopping to the parent, and go with it: a Ctrl-C in a terminal reaches every process of the group, but
    only the parent decides when the run ends (it sets ``stop``); a parent killed (SIGKILL, or anything it could not
    clean up after) takes its workers along (PR_SET_PDEATHSIG on Linux), so no client stays connected to the
    server with nobody to stop it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # the parent died before prctl took effect
        os._exit(1)


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # each client is one socket; the default soft limit (1024) caps a worker below that
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class WorkerPool:
    """The worker processes and what they report; messages arrive through a thread into the event loop."""

    def __init__(self, options: PoolOptions, marker: str | None) -> None:
        poll = options.poll_ms / 1000
        ctx = multiprocessing.get_context("spawn")  # a fork of a process running an event loop is unsafe
        self.queue = ctx.Queue()
        self.go, self.stop = ctx.Event(), ctx.Event()
        self.start = ctx.Value("d", 0.0)
        total = options.clients + options.sse_clients  # the /events clients take the ramp's last slots
        per = [tuple(range(w, options.clients, options.processes)) for w in range(options.processes)]
        shares = [part for mine in per for part in (mine[: options.sample], mine[options.sample :])]
        self.plans = [  # even plans sample every client, odd ones count: one process each
            WorkerPlan(w, options.url, mine, total, options.ramp, len(mine) * (w % 2 == 0), marker, poll)
            for w, mine in enumerate(shares)
            if mine
        ]
        if options.sse_clients:
            sse = tuple(range(options.clients, total))
            self.plans.append(
                WorkerPlan(len(shares), options.url, sse, total, options.ramp, len(sse), marker, kind="sse")
            )
        self.procs = [
            ctx.Process(target=worker_main, args=(p, self.queue, self.go, self.start, self.stop), daemon=True)
            for p in self.plans
        ]
        self.progress: dict[int, dict[str, Any]] = {}
        self.done: dict[int, dict[str, Any]] = {}
        self.ready: set[int] = set()
        self.changed = asyncio.Event()
        self.thread: threading.Thread | None = None

    def total(self, name: str) -> int:
        return sum(p.get(name, 0) for p in self.progress.values())

    def min_seen(self) -> int:
        sampled = [self.progress[p.worker]["min_seen"] for p in self.plans if p.sample and p.worker in self.progress]
        return min(sampled) if sampled else 0

    def begin(self) -> None:
        """Start the message pump, then the worker processes (they wait for ``go``)."""
        loop = asyncio.get_running_loop()

        def pump() -> None:  # multiprocessing queues block: read them on a thread, hand over to the loop
            while True:
                msg = self.queue.get()
                if msg is None:
                    return
                loop.call_soon_threadsafe(self._take, msg)

        self.thread = threading.Thread(target=pump, name="loadtest-pump", daemon=True)
        self.thread.start()
        for proc in self.procs:
            proc.start()

    def _take(self, msg: tuple[str, int, dict[str, Any]]) -> None:
        kind, worker, body = msg
        if kind == "ready":
            self.ready.add(worker)
        else:
            self.progress[worker] = body
            if kind == "done":
                self.done[worker] = body
        self.changed.set()

    async def until(self, condition: Callable[[], bool], within: float, *, died_ok: bool = False) -> bool:
        """Wait for the workers' reports to make ``condition`` true; False after ``within`` seconds.

        Raises RuntimeError when a worker process died, unless ``died_ok``."""
        deadline = time.monotonic() + within
        while not condition():
            if not died_ok and any(p.exitcode not in (None, 0) for p in self.procs):
                raise RuntimeError("a load-test worker process died (see its traceback above)")
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self.changed.wait(), min(left, 1.0))
            except TimeoutError:
                pass
        return True

    async def end(self) -> None:
        """Stop every worker, gather its final report, and join it (killed after 5 s); safe after a failed start."""
        self.stop.set()
        self.go.set()  # a worker still waiting to start sees stop at once
        started = [(plan, proc) for plan, proc in zip(self.plans, self.procs, strict=True) if proc.pid is not None]
        if self.thread is not None:
            gone = lambda: all(p.worker in self.done or not proc.is_alive() for p, proc in started)  # noqa: E731
            await self.until(gone, 30, died_ok=True)
            self.queue.put(None)
            await asyncio.to_thread(self.thread.join)
        for _, proc in started:
            await asyncio.to_thread(proc.join, 5)
            if proc.is_alive():
                proc.kill()
                await asyncio.to_thread(proc.join)
        self.queue.close()


async def _run(plan: WorkerPlan, stats: WorkerStats, out: Sink, t0: float, stop: Flag) -> None:
    stopping = asyncio.Event()
    sockets: set[aiohttp.ClientWebSocketResponse] = set()
    # limit=0: a websocket holds its connection for life; the default pool of 100 would queue the rest
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(_client(plan, n, session, stats, sockets, t0, stopping)) for n in plan.clients]
        while not stop.is_set():
            out.put(("progress", plan.worker, stats.progress()))
            await asyncio.sleep(PROGRESS_EVERY)  # polling: a multiprocessing Event cannot be awaited
        stopping.set()
        if sockets:
            await asyncio.wait([asyncio.create_task(ws.close()) for ws in list(sockets)], timeout=5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _slot(plan: WorkerPlan, n: int, t0: float) -> None:
    delay = t0 + plan.ramp * n / max(plan.total, 1) - time.time()
    if delay > 0:
        await asyncio.sleep(delay)  # this client's slot of the ramp


def _opened(stats: WorkerStats, n: int) -> None:
    stats.connected += 1
    stats.peak = max(stats.peak, stats.connected)
    stats.per_client[n] = 0


def _ended(stats: WorkerStats, code: int | None, stopping: asyncio.Event) -> None:
    stats.connected -= 1
    if not stopping.is_set():
        stats.closes += 1
        stats.close_codes[code or 0] += 1


async def _client(
    plan: WorkerPlan,
    n: int,
    session: aiohttp.ClientSession,
    stats: WorkerStats,
    sockets: set[aiohttp.ClientWebSocketResponse],
    t0: float,
    stopping: asyncio.Event,
) -> None:
    """A sampled client (aiohttp): parses every frame for latency and the driven keys it saw."""
    await _slot(plan, n, t0)
    if stopping.is_set():
        return
    try:
        ws = await session.ws_connect(plan.url, autoping=True, max_msg_size=0)
    except (TimeoutError, aiohttp.ClientError, OSError):
        stats.failed += 1
        return
    sockets.add(ws)
    _opened(stats, n)
    seen = stats.seen[n] = set()
    try:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            now = time.time()
            count = _parse(msg.data, now, t0, plan.marker, seen, stats)
            if count:
                stats.items += count
                stats.per_client[n] += count
                stats.per_second[int(now - t0)] += count
    finally:
        sockets.discard(ws)
        _ended(stats, ws.close_code, stopping)


def _parse(data: str, now: float, t0: float, marker: str | None, seen: set[str], stats: WorkerStats) -> int:
    """A sampled client's frame: latency of each post, driven keys remembered; returns posts in it."""
    frame = json.loads(data)
    kind = frame.get("type")
    if kind == "lag":
        stats.lag_frames += 1
        return 0
    if kind != "posts":
        return 0
    items = frame.get("items", ())
    took(items, now, t0, marker, seen, stats)
    return len(items)


def took(
    items: Iterable[dict[str, Any]], now: float, t0: float, marker: str | None, seen: set[str], stats: WorkerStats
) -> None:
    """Posts a sampled client received at ``now``: the latency of each, the driven keys remembered in ``seen``."""
    now_ms = now * 1000
    bucket = stats.latency[int(now - t0)]
    for item in items:
        at = item.get("at")
        if isinstance(at, int):
            bucket.append(now_ms - at)
        key = item.get("key")
        if marker is not None and isinstance(key, str) and is_driven(key, marker):
            seen.add(key)
