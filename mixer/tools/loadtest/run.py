"""`mixer loadtest`: many websocket (and /events) clients against a fan-out server, optional driven load, figures.

``loadtest`` runs one test: it starts worker processes (``mixer.tools.loadtest.client``, spawned, each with
its own event loop) that open the clients over a ramp (stretched to ``max_connect_rate``), optionally
publishes posts into the chat streams (``synth`` posts or a recording, looping, at a fixed rate; or any
``drive.Drive`` it is handed, such as `mixer rehearse`'s replay), drains, stops the workers and returns the
result as a JSON-ready dict: deliveries, posts per client, loss of driven posts on sampled clients, lag
frames, closes, latency percentiles, the server's CPU and memory per connection (``/proc/<pid>``), per-core
utilisation (``/proc/stat``), pass starts and a per-second timeline. ``check_url`` (another machine only
with ``allow_remote``) and ``capped_ramp`` are pure. ``loadtest_command`` exits non-zero when the run
failed its thresholds (no client connected, more failed connections or lost posts than allowed).
Not here: the clients (``client``, ``poll``, ``count``, ``sse``), the driven posts (``drive``,
``replaydrive``), reading /proc (``procstat``), the text report, the plot and the verdict (``report``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from redis.exceptions import RedisError

from mixer.ingest.replay import recordings_problem
from mixer.options import NO_REDIS, add_common
from mixer.redact import redact
from mixer.settings import Settings
from mixer.tools.loadtest.client import WorkerPool
from mixer.tools.loadtest.drive import Drive, Driver, driven_chats
from mixer.tools.loadtest.options import MAX_CONNECT_RATE, LoadOptions, capped_ramp, check_filter
from mixer.tools.loadtest.procstat import ServerProbe, bytes_per_connection, core_busy, read_cores
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
from mixer.tools.stdout import print_out

Say = Callable[[str, bool], None]  # (message, is_progress_line)
T = TypeVar("T")
STOPPED = 130  # the exit status of a run stopped by Ctrl-C or SIGTERM, as `mixer replay`'s


async def loadtest(
    settings: Settings,
    options: LoadOptions,
    say: Say,
    stop: asyncio.Event | None = None,
    driver: Drive | None = None,
) -> dict[str, Any]:
    """Run one load test and return its result (see docs/loadtest.md); the workers are gone when it returns.

    ``driver`` (not yet prepared) drives instead of ``options.drive``. With nothing driving, ``stop`` (when given)
    ends the run early: whoever drives says when it is done. The ramp is stretched to ``max_connect_rate``."""
    ramp = capped_ramp(options.clients + options.sse_clients, options.ramp, options.max_connect_rate)
    if ramp > options.ramp:
        say(
            f"--ramp stretched from {options.ramp:g} to {ramp:.3g} s: {options.clients + options.sse_clients:,} "
            f"clients at --max-connect-rate {options.max_connect_rate:g}/s at most",
            False,
        )
        options = dataclasses.replace(options, ramp=ramp)
    run_id = uuid.uuid4().hex[:8]
    if driver is None and options.drive != "none":
        driver = Driver(settings, options.rate, options.replay_file, f"loadtest:{run_id}:", options.chats)
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
            tried, clients = ("connected", "failed", "closes"), options.clients + options.sse_clients
            everyone = lambda: sum(workers.total(n) for n in tried) >= clients  # noqa: E731
            await workers.until(everyone, options.ramp + 30)
            rss_connected, connected = server.rss(), workers.total("connected")
            if driver is not None:
                await driver.run(options.duration)
                drained = time.time() + options.drain
                await asyncio.sleep(min(options.drain, driver.settle_s))
                await workers.until(lambda: workers.min_seen() >= driver.expected(), drained - time.time())
                await driver.settle()
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
    expected = driver.expected() if driver else None
    pass_starts = [round(at - t0, 2) for at in driver.pass_starts] if driver else []
    seen = [n for s in summaries for n in s["seen"]]
    cpu = None
    if ticks_before is not None and ticks_after is not None:
        cpu = round(100.0 * (ticks_after - ticks_before) / server.hz / elapsed, 1)
    per_conn = bytes_per_connection(rss_before, rss_connected, connected)
    busy = core_busy(cores_before, cores_after)
    counted = {sec for s in summaries for part in ("per_second", "latency") for sec in s[part]}
    for sec in counted - timeline.keys():  # the last, partial second (and any the sampler did not reach)
        timeline[sec] = {"second": sec, "cores": []}
    seconds = [timeline[s] for s in sorted(timeline)]
    for row in seconds:
        row.update(_second(summaries, row["second"]))
        started = [n for n, at in enumerate(pass_starts) if int(at) == row["second"]]
        if started:
            row["pass_starts"] = started  # the passes through the recording that began in this second
    saturated = sorted({i for row in seconds for i, b in enumerate(row["cores"]) if b >= SATURATED})
    return {
        "url": redact(options.url),
        "clients": options.clients + options.sse_clients,
        "by_kind": _by_kind(summaries),
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
        "expected": expected,
        "loss": None if expected is None else loss_of(expected, seen),
        "pass_starts_s": pass_starts,
        "latency_ms": percentiles(latency),
        "server": None
        if options.server_pid is None
        else {
            "pid": options.server_pid,
            "cpu_percent": cpu,
            "rss_before": rss_before,
            "rss_connected": rss_connected,
            "rss_end": rss_end,
            "connected": connected,  # (what rss_connected was read with)
            "bytes_per_connection": per_conn,
        },
        "cores": {"busy_percent": busy, "busiest": busy.index(max(busy)) if busy else None, "saturated": saturated},
        "timeline": seconds,
    }


async def _sample(
    workers: WorkerPool,
    server: ServerProbe,
    driver: Drive | None,
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


def _by_kind(summaries: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Clients connected at most, failed, closed and deliveries of each kind of client (ws, sse)."""
    out: dict[str, dict[str, int]] = {}
    for s in summaries:
        row = out.setdefault(s["kind"], {"connected_peak": 0, "failed": 0, "closes": 0, "deliveries": 0})
        for name, field in (("connected_peak", "peak"), ("failed", "failed"), ("closes", "closes")):
            row[name] += s[field]
        row["deliveries"] += s["items"]
    return out


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
        description="Open --clients websocket clients (and --sse-clients on /events) over --ramp seconds, spread over "
        "--processes shares of two worker processes each; optionally publish posts into the chat streams at --rate "
        "posts/s; report deliveries, loss, lag, closes, latency percentiles, server CPU and memory per connection, "
        "per-core load. See docs/loadtest.md.",
    )
    add_common(parser, "the Redis to drive posts into (default: $MIXER_REDIS_URL, else a running `mixer run`'s)")
    add_target(parser, d.url, "the server's websocket URL")
    parser.add_argument("--clients", type=int, default=d.clients, metavar="N", help=f"clients (default {d.clients})")
    parser.add_argument("--sse-clients", type=int, default=0, metavar="N", help="clients on /events too (default 0)")
    parser.add_argument("--ramp", type=float, default=d.ramp, metavar="S", help=f"connect over S s (default {d.ramp})")
    parser.add_argument(
        "--processes",
        type=int,
        default=d.processes,
        metavar="P",
        help=f"client shares, two worker processes each (default {d.processes})",
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=d.sample,
        metavar="K",
        help=f"clients per share that parse every frame (default {d.sample})",
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


def add_target(parser: argparse.ArgumentParser, url: str, what: str) -> None:
    """``--url``, ``--allow-remote`` and ``--max-connect-rate``: where the clients go, and the guards."""
    parser.add_argument("--url", default=url, help=f"{what}; this machine unless --allow-remote (default {url})")
    parser.add_argument(
        "--allow-remote", action="store_true", help="allow a --url on another machine (a staging deployment)"
    )
    parser.add_argument(
        "--max-connect-rate",
        type=float,
        default=MAX_CONNECT_RATE,
        metavar="N",
        help=f"open at most N connections a second: a shorter --ramp is stretched (default {MAX_CONNECT_RATE:g})",
    )


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
        allow_remote=args.allow_remote,
        max_connect_rate=args.max_connect_rate,
        sse_clients=args.sse_clients,
    )


def save_result(result: dict[str, Any], json_path: Path | None, plot_path: Path | None) -> None:
    """The result written as JSON to ``json_path`` and drawn to ``plot_path``, each when given; OSError (or
    matplotlib's ValueError) when one cannot be written."""
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=1) + "\n")
    if plot_path is not None:
        render_plot(result, plot_path)


def save_or_say(result: dict[str, Any], json_path: Path | None, plot_path: Path | None, say: Say) -> bool:
    """``save_result`` after the summary is out: True when saved, else False and one line saying what failed."""
    try:
        save_result(result, json_path, plot_path)
    except (OSError, ValueError) as exc:
        say(f"the result could not be saved: {exc}", False)
        return False
    return True


def check_writable(path: Path, flag: str) -> None:
    """ValueError naming ``flag`` unless ``path`` can be written: a writable file, or a new one in a writable
    directory. Checked before a run, so that a long run is not lost to a typo in where its result goes."""
    if path.is_dir():
        raise ValueError(f"{flag} {path}: is a directory, give a file name")
    if not path.parent.is_dir():
        raise ValueError(f"{flag} {path}: no such directory {path.parent}")
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        raise ValueError(f"{flag} {path}: not writable")


def console(command: str) -> tuple[Callable[..., None], bool]:
    """The ``say(message, progress=False)`` of a load command (``mixer <command>: message`` on stderr; a progress line,
    rewritten in place, only where a person watches) and whether one does (stderr is a terminal)."""
    show = sys.stderr.isatty()

    def say(message: str, progress: bool = False) -> None:
        if show or not progress:
            line = f"\r\033[Kmixer {command}: {message}" if show else f"mixer {command}: {message}"
            print(line, end="" if progress else "\n", file=sys.stderr, flush=True)

    return say, show


def run_until_signal(main: Coroutine[Any, Any, T]) -> tuple[T | None, str | None]:
    """``asyncio.run(main)``, which SIGINT or SIGTERM cancels: its ``finally`` blocks still stop and join the workers.

    Returns (the result, None), or (None, the signal's name) when a signal stopped it."""
    caught: list[str] = []

    async def guarded() -> T | None:
        task = asyncio.ensure_future(main)

        def stop(name: str) -> None:
            caught.append(name)
            task.cancel()

        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():  # signals reach only the main thread's loop
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop, sig.name)
        try:
            return await task
        except asyncio.CancelledError:
            if caught:
                return None
            raise

    result = asyncio.run(guarded())
    return result, caught[0] if caught else None


def check_before_run(server_pid: int | None, plot: Path | None, json_path: Path | None = None) -> None:
    """ValueError for what would otherwise fail only after the run: a --server-pid that is no process, a --json or
    --plot that cannot be written, a --plot without matplotlib."""
    if server_pid is not None and not Path(f"/proc/{server_pid}/stat").exists():
        raise ValueError(f"--server-pid {server_pid}: no such process")
    for flag, path in (("--json", json_path), ("--plot", plot)):
        if path is not None:
            check_writable(path, flag)
    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError("--plot needs matplotlib: .venv/bin/pip install matplotlib") from None


def loadtest_command(settings: Settings, args: argparse.Namespace) -> int:
    """`mixer loadtest`: 0 when the run passed, 1 when it could not be made or failed (no client connected, more
    failed connections or lost posts than allowed), 2 for a usage error, 130 when Ctrl-C or SIGTERM stopped it."""
    say, show = console("loadtest")
    try:
        options = options_from_args(args)
        if options.drive != "none" and not settings.redis_url:
            raise ValueError(f"driving load writes to a shared Redis: {NO_REDIS}")
        if args.max_failed < 0 or not (math.isfinite(args.max_loss) and 0 <= args.max_loss <= 100):
            raise ValueError("--max-failed must be 0 or more, --max-loss a percentage from 0 to 100")
        problem = None if options.replay_file is None else recordings_problem([options.replay_file])
        if problem is not None:
            raise ValueError(f"--drive replay: {problem}")
        if options.drive != "none":
            check_filter(options.chats, driven_chats(settings, options.replay_file))
        check_before_run(options.server_pid, args.plot, args.json)
    except ValueError as exc:
        say(str(exc))
        return 2
    try:
        result, stopped_by = run_until_signal(loadtest(settings, options, say))
    except (ValueError, RuntimeError, OSError, RedisError) as exc:
        say(redact(f"failed: {exc}"))
        return 1
    if result is None:
        say(f"stopped by {stopped_by} before the end: no result")
        return STOPPED
    if show:
        print("\r\033[K", end="", file=sys.stderr)
    print_out(report(result))  # first: a --json or --plot that fails now must not take the summary with it
    problems = verdict(result, args.max_failed, args.max_loss)
    for problem in problems:
        say(f"FAILED: {problem}")
    saved = save_or_say(result, args.json, args.plot, say)
    return 1 if problems or not saved else 0
