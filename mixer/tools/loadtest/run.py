"""`mixer loadtest`: many websocket clients against a fan-out server, optional driven load, and the figures.

``loadtest`` runs one test: it starts worker processes (``mixer.tools.loadtest.client``, spawned, each with
its own event loop) that open the clients over a ramp, optionally publishes posts into the chat
streams at a fixed rate (``synth`` posts, or a recording replayed through ``Publisher``), drains,
stops the workers and returns the result as a JSON-ready dict: deliveries, posts per client, loss
of driven posts on sampled clients, lag frames, closes, latency percentiles, the server's CPU and
memory per connection (``/proc/<pid>``), per-core utilisation (``/proc/stat``) and a per-second
timeline. ``check_url`` (loopback only) is pure. ``loadtest_command`` exits non-zero when the run
failed its thresholds (no client connected, more failed connections or lost posts than allowed).
Not here: the clients (``client``, ``poll``, ``count``), the driven posts (``drive``), reading /proc
(``procstat``), the figures, the text report, the plot and the verdict (``report``), the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from redis.exceptions import RedisError

from mixer.options import NO_REDIS, add_common
from mixer.redact import redact
from mixer.settings import Settings
from mixer.tools.loadtest.client import POLL_MS, WorkerPool
from mixer.tools.loadtest.drive import Driver
from mixer.tools.loadtest.procstat import ServerProbe, core_busy, read_cores
from mixer.tools.loadtest.report import (
    SATURATED,
    loss_of,
    merged_codes,
    percentiles,
    render_plot,
    report,
    spread_of,
    verdict,
)

Say = Callable[[str, bool], None]  # (message, is_progress_line)


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """One load test: the clients, how they are spread, and what drives posts."""

    url: str = "ws://127.0.0.1:8080/ws"
    clients: int = 100  # N websocket clients over all processes
    ramp: float = 5.0  # seconds over which the N clients connect, evenly
    processes: int = 2  # worker processes, each with its own event loop
    sample: int = 5  # clients per process that parse every frame (latency, loss)
    poll_ms: float = POLL_MS  # milliseconds between the counting clients' read rounds
    duration: float = 10.0  # seconds of measurement after the ramp (driving runs this long)
    drive: str = "none"  # synth | replay | none
    replay_file: Path | None = None  # the recording for drive == "replay"
    rate: float = 100.0  # posts/s published when driving
    drain: float = 5.0  # most seconds to wait after driving for sampled clients to get every driven post
    server_pid: int | None = None  # the server's process, for CPU and memory figures

    def __post_init__(self) -> None:
        check_url(self.url)
        if self.clients < 1 or self.processes < 1 or self.sample < 0:
            raise ValueError("--clients and --processes must be at least 1, --sample at least 0")
        if not (math.isfinite(self.poll_ms) and 1 <= self.poll_ms <= 1000):
            raise ValueError(f"--poll-ms must be 1 to 1000 ms, got {self.poll_ms}")
        for name in ("ramp", "duration", "drain"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"--{name} must be 0 or more seconds, got {value}")
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"--rate must be a positive number of posts/s, got {self.rate}")
        if self.drive not in ("synth", "replay", "none"):
            raise ValueError(f"--drive is synth, replay FILE or none, not {self.drive!r}")
        if (self.drive == "replay") != (self.replay_file is not None):
            raise ValueError("--drive replay takes one FILE (and only replay does)")


def check_url(url: str) -> str:
    """``url`` when it is a ws:// URL on a loopback address; ValueError otherwise (loopback only is a rule here)."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"--url must be a ws:// URL such as ws://127.0.0.1:8080/ws, got {redact(url)!r}")
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"refusing {host or redact(url)!r}: load tests run against loopback only (127.0.0.1)")
    return url


async def loadtest(
    settings: Settings, options: LoadOptions, say: Say, stop: asyncio.Event | None = None
) -> dict[str, Any]:
    """Run one load test and return its result (see docs/loadtest.md); the workers are gone when it returns.

    With ``drive="none"``, ``stop`` (when given) ends the run early: whoever drives says when it is done."""
    run_id = uuid.uuid4().hex[:8]
    driver = (
        None if options.drive == "none" else Driver(settings, options.rate, options.replay_file, f"loadtest:{run_id}:")
    )
    if driver is not None:
        await driver.prepare()
    workers = WorkerPool(options, driver.marker if driver else None)
    server = ServerProbe(options.server_pid)
    timeline: dict[int, dict[str, Any]] = {}
    try:
        workers.begin()
        if not await workers.until(lambda: len(workers.ready) == len(workers.plans), 60):
            raise RuntimeError("load-test workers did not start within 60 s")
        rss_before, ticks_before, cores_before = server.rss(), server.ticks(), read_cores()
        t0 = time.time() + 0.05
        workers.start.value = t0
        workers.go.set()
        sampler = asyncio.create_task(_sample(workers, server, driver, timeline, t0, options, say))
        try:
            tried = ("connected", "failed", "closes")
            everyone = lambda: sum(workers.total(n) for n in tried) >= options.clients  # noqa: E731
            await workers.until(everyone, options.ramp + 30)
            rss_connected, connected = server.rss(), workers.total("connected")
            if driver is not None:
                await driver.run(options.duration)
                await workers.until(lambda: workers.min_seen() >= driver.published, options.drain)
            else:
                left = max(0.0, t0 + options.ramp + options.duration - time.time())
                try:
                    await asyncio.wait_for((stop or asyncio.Event()).wait(), left)
                except TimeoutError:
                    pass
            elapsed = time.time() - t0
            rss_end, ticks_after, cores_after = server.rss(), server.ticks(), read_cores()
        finally:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
    finally:
        await workers.end()
        if driver is not None:
            await driver.aclose()
    summaries = list(workers.done.values())
    latency: list[float] = [ms for s in summaries for values in s["latency"].values() for ms in values]
    per_client = [n for s in summaries for n in s["per_client"]]
    deliveries = sum(s["items"] for s in summaries)
    published = driver.published if driver else None
    seen = [n for s in summaries for n in s["seen"]]
    cpu = None
    if ticks_before is not None and ticks_after is not None:
        cpu = round(100.0 * (ticks_after - ticks_before) / server.hz / elapsed, 1)
    per_conn = None
    if rss_before is not None and rss_connected is not None and connected:
        per_conn = round((rss_connected - rss_before) / connected)
    busy = core_busy(cores_before, cores_after)
    counted = {sec for s in summaries for part in ("per_second", "latency") for sec in s[part]}
    for sec in counted - timeline.keys():  # the last, partial second (and any the sampler did not reach)
        timeline[sec] = {"second": sec, "cores": []}
    seconds = [timeline[s] for s in sorted(timeline)]
    for row in seconds:
        row.update(_second(summaries, row["second"]))
    saturated = sorted({i for row in seconds for i, b in enumerate(row["cores"]) if b >= SATURATED})
    return {
        "url": redact(options.url),
        "clients": options.clients,
        "processes": len(workers.plans),
        "sampled_clients": len(seen),
        "ramp_s": options.ramp,
        "duration_s": options.duration,
        "elapsed_s": round(elapsed, 2),
        "drive": options.drive if options.drive != "replay" else f"replay {options.replay_file}",
        "rate": options.rate if driver else None,
        "connected_peak": sum(s["peak"] for s in summaries),
        "failed": sum(s["failed"] for s in summaries),
        "closes": sum(s["closes"] for s in summaries),
        "close_codes": merged_codes([s["close_codes"] for s in summaries]),
        "lag_frames": sum(s["lag_frames"] for s in summaries),
        "deliveries": deliveries,
        "deliveries_per_s": round(deliveries / elapsed, 1) if elapsed > 0 else 0.0,
        "posts_per_client": spread_of(per_client),
        "published": published,
        "loss": None if published is None else loss_of(published, seen),
        "latency_ms": percentiles(latency),
        "server": None
        if options.server_pid is None
        else {
            "pid": options.server_pid,
            "cpu_percent": cpu,
            "rss_before": rss_before,
            "rss_connected": rss_connected,
            "rss_end": rss_end,
            "bytes_per_connection": per_conn,
        },
        "cores": {"busy_percent": busy, "busiest": busy.index(max(busy)) if busy else None, "saturated": saturated},
        "timeline": seconds,
    }


async def _sample(
    workers: WorkerPool,
    server: ServerProbe,
    driver: Driver | None,
    timeline: dict[int, dict[str, Any]],
    t0: float,
    options: LoadOptions,
    say: Say,
) -> None:
    """Once a second: per-core busy, server CPU, and the progress line."""
    cores, ticks, delivered = read_cores(), server.ticks(), 0
    second = 0
    while True:
        second += 1
        await asyncio.sleep(max(0.0, t0 + second - time.time()))
        now_cores, now_ticks = read_cores(), server.ticks()
        row: dict[str, Any] = {"second": second - 1, "cores": core_busy(cores, now_cores)}
        if ticks is not None and now_ticks is not None:
            row["server_cpu"] = round(100.0 * (now_ticks - ticks) / server.hz, 1)
        timeline[second - 1] = row
        cores, ticks = now_cores, now_ticks
        items = workers.total("items")
        published = f" | published {driver.published:,}" if driver is not None else ""
        say(
            f"{second:>4}s | clients {workers.total('connected'):,}/{options.clients:,} | "
            f"{items - delivered:,} deliveries/s{published} | lag {workers.total('lag_frames')} | "
            f"closed {workers.total('closes')} | failed {workers.total('failed')}",
            True,
        )
        delivered = items


def _second(summaries: list[dict[str, Any]], second: int) -> dict[str, Any]:
    """The timeline's client figures for one second: deliveries and latency percentiles."""
    values = [ms for s in summaries for ms in s["latency"].get(second, ())]
    return {"deliveries": sum(s["per_second"].get(second, 0) for s in summaries), "latency_ms": percentiles(values)}


def add_loadtest_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add `mixer loadtest` (with --config, --redis, -v like every subcommand) to ``subparsers``."""
    d = LoadOptions()
    parser = subparsers.add_parser(
        "loadtest",
        help="open many websocket clients against a fan-out server and measure what they get",
        description="Open --clients websocket clients (loopback only) over --ramp seconds, spread over "
        "--processes worker processes; optionally publish posts into the chat streams at --rate posts/s; "
        "report deliveries, loss, lag, closes, latency percentiles, server CPU and memory per connection, "
        "per-core load. See docs/loadtest.md.",
    )
    add_common(parser, "the Redis to drive posts into (default: $MIXER_REDIS_URL, else a running `mixer run`'s)")
    parser.add_argument("--url", default=d.url, help=f"the server's websocket URL, loopback only (default {d.url})")
    parser.add_argument("--clients", type=int, default=d.clients, metavar="N", help=f"clients (default {d.clients})")
    parser.add_argument("--ramp", type=float, default=d.ramp, metavar="S", help=f"connect over S s (default {d.ramp})")
    parser.add_argument(
        "--processes", type=int, default=d.processes, metavar="P", help=f"worker processes (default {d.processes})"
    )
    parser.add_argument(
        "--sample", type=int, default=d.sample, metavar="K", help=f"parsing clients per process (default {d.sample})"
    )
    parser.add_argument(
        "--poll-ms",
        type=float,
        default=d.poll_ms,
        metavar="MS",
        help=f"read the counting clients every MS ms (default {d.poll_ms:g})",
    )
    parser.add_argument(
        "--duration", type=float, default=d.duration, metavar="S", help=f"seconds after the ramp (default {d.duration})"
    )
    parser.add_argument(
        "--drive", nargs="+", default=["none"], metavar="MODE", help="synth | replay FILE | none (default none)"
    )
    parser.add_argument("--rate", type=float, default=d.rate, metavar="R", help=f"driven posts/s (default {d.rate})")
    parser.add_argument(
        "--drain", type=float, default=d.drain, metavar="S", help=f"wait for driven posts (default {d.drain} s)"
    )
    parser.add_argument("--server-pid", type=int, metavar="PID", help="the server process, for CPU and memory")
    parser.add_argument(
        "--max-failed", type=int, default=0, metavar="N", help="fail when more clients cannot connect (default 0)"
    )
    parser.add_argument(
        "--max-loss",
        type=float,
        default=0.0,
        metavar="PCT",
        help="fail when a sampled client misses more than PCT %% of the driven posts (default 0)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the whole result as JSON here")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="draw latency and throughput per second")
    parser.set_defaults(func=loadtest_command)
    return parser


def options_from_args(args: argparse.Namespace) -> LoadOptions:
    """LoadOptions from parsed arguments; ValueError with a message for the user."""
    mode, *rest = args.drive
    if len(rest) != (mode == "replay"):
        raise ValueError("--drive replay takes one FILE" if mode == "replay" else f"--drive {mode} takes no FILE")
    return LoadOptions(
        url=args.url,
        clients=args.clients,
        ramp=args.ramp,
        processes=args.processes,
        sample=args.sample,
        poll_ms=args.poll_ms,
        duration=args.duration,
        drive=mode,
        replay_file=Path(rest[0]) if rest else None,
        rate=args.rate,
        drain=args.drain,
        server_pid=args.server_pid,
    )


async def loadtest_and_write(
    settings: Settings, options: LoadOptions, say: Say, json_path: Path | None = None, plot_path: Path | None = None
) -> dict[str, Any]:
    """``loadtest``, then the result written to ``json_path`` and drawn to ``plot_path`` when given."""
    result = await loadtest(settings, options, say)
    if json_path is not None:
        await asyncio.to_thread(json_path.write_text, json.dumps(result, indent=1) + "\n")
    if plot_path is not None:
        await asyncio.to_thread(render_plot, result, plot_path)
    return result


def loadtest_command(settings: Settings, args: argparse.Namespace) -> int:
    """`mixer loadtest`: 0 when the run passed, 1 when it could not be made or failed (no client connected, more
    failed connections or lost posts than allowed), 2 for a usage error."""
    show = sys.stderr.isatty()  # the progress line only where a person watches

    def say(message: str, progress: bool = False) -> None:
        if show or not progress:
            line = f"\r\033[Kmixer loadtest: {message}" if show else f"mixer loadtest: {message}"
            print(line, end="" if progress else "\n", file=sys.stderr, flush=True)

    try:
        options = options_from_args(args)
        if options.drive != "none" and not settings.redis_url:
            raise ValueError(f"driving load writes to a shared Redis: {NO_REDIS}")
        if args.max_failed < 0 or not (math.isfinite(args.max_loss) and 0 <= args.max_loss <= 100):
            raise ValueError("--max-failed must be 0 or more, --max-loss a percentage from 0 to 100")
        if options.replay_file is not None and not options.replay_file.is_file():
            raise ValueError(f"--drive replay: recording not found: {options.replay_file}")
        if options.server_pid is not None and not Path(f"/proc/{options.server_pid}/stat").exists():
            raise ValueError(f"--server-pid {options.server_pid}: no such process")
        if args.plot is not None:
            import matplotlib  # noqa: F401  (checked before the run, not after it)
    except ValueError as exc:
        say(str(exc))
        return 2
    except ImportError:
        say("--plot needs matplotlib: .venv/bin/pip install matplotlib")
        return 2
    try:
        result = asyncio.run(loadtest_and_write(settings, options, say, args.json, args.plot))
    except (ValueError, RuntimeError, OSError, RedisError) as exc:
        say(redact(f"failed: {exc}"))
        return 1
    if show:
        print("\r\033[K", end="", file=sys.stderr)
    print(report(result))
    problems = verdict(result, args.max_failed, args.max_loss)
    for problem in problems:
        say(f"FAILED: {problem}")
    return 1 if problems else 0
