"""`mixer rehearse`: a night replayed at N x against a deployment while clients watch, judged against thresholds.

``rehearse_command`` replays a recording (the bundled demo, a FILE, or a generated night with ``--synth``) at its
recorded pace times ``--speed``, pass after pass for ``--duration`` seconds, through ``RecordingDriver``, while
holding ``--ws-clients`` on ``/ws`` and ``--sse-clients`` on ``/events``; the load test itself is ``run.loadtest``
(same workers, counting, figures, plot). ``judge`` is pure: the result against ``Thresholds``, one reason a failed
threshold; ``not_judged`` the thresholds the run could not measure, each with why (they neither pass nor fail
it). Exit status: 0 passed, 1 failed (or could not be made), 2 usage error. Not here: the clients, the
replay's pacing (``mixer.ingest.replay``), the figures.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.exceptions import RedisError

from mixer.ingest.replay import recordings_problem
from mixer.options import NO_REDIS, add_common
from mixer.redact import redact
from mixer.settings import Settings
from mixer.tools.loadtest.drive import driven_chats
from mixer.tools.loadtest.options import NO_MEASURING_CLIENT, LoadOptions, check_filter
from mixer.tools.loadtest.replaydrive import RecordingDriver
from mixer.tools.loadtest.report import memory_per_connection, report, verdict
from mixer.tools.loadtest.run import (
    STOPPED,
    add_target,
    check_before_run,
    console,
    loadtest,
    run_until_signal,
    save_or_say,
)
from mixer.tools.stdout import print_out
from mixer.tools.synth import parse_rate, spec_for, write_night

SYNTH_MINUTES = 60.0  # --synth: a night of the config's chats this long, at SYNTH_RATE posts a minute per chat
SYNTH_RATE = "10"
MAX_BYTES_PER_CONN = 256 * 1024  # default --max-bytes-per-conn


@dataclass(frozen=True, slots=True)
class Thresholds:
    """What a rehearsal must stay within to pass; ``max_bytes_per_conn`` is judged only when the server's memory
    per connection was measured (``not_judged``)."""

    max_p99_ms: float = 2000.0  # p99 of publish-to-receive latency over every sampled client
    max_loss: float = 0.0  # % of this run's feed posts the worst sampled client may miss
    max_lag_frames: int = 0  # lag frames (a client fell behind and posts were skipped for it)
    max_closes: int = 0  # connections the server closed or dropped before the end
    max_bytes_per_conn: int = MAX_BYTES_PER_CONN  # server RSS per connection

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_p99_ms) and self.max_p99_ms >= 0):
            raise ValueError(f"--max-p99-ms must be 0 or more, got {self.max_p99_ms}")
        if not (math.isfinite(self.max_loss) and 0 <= self.max_loss <= 100):
            raise ValueError(f"--max-loss must be a percentage from 0 to 100, got {self.max_loss}")
        if min(self.max_lag_frames, self.max_closes, self.max_bytes_per_conn) < 0:
            raise ValueError("--max-lag-frames, --max-closes and --max-bytes-per-conn must be 0 or more")

    def describe(self, judged_memory: bool) -> str:
        memory = f"{self.max_bytes_per_conn:,} bytes/connection" + ("" if judged_memory else " (not judged)")
        return (
            f"p99 <= {self.max_p99_ms:g} ms, loss <= {self.max_loss:g}%, lag frames <= {self.max_lag_frames}, "
            f"closes <= {self.max_closes}, {memory}"
        )


def judge(result: dict[str, Any], limits: Thresholds) -> list[str]:
    """Why the rehearsal failed, one reason a line, or [] when it passed (see ``Thresholds``)."""
    problems = verdict(result, 0, limits.max_loss)
    if result["published"] == 0:
        problems.append("nothing was published: no post of the recording is in a chat the config lists (--config)")
    elif not result["expected"]:
        problems.append(
            f"none of the {result['published']:,} replayed posts reached the feed (the merge stage dropped all)"
        )
    lat = result["latency_ms"]
    if lat is not None and lat["p99"] > limits.max_p99_ms:
        problems.append(f"latency p99 {lat['p99']:g} ms > --max-p99-ms {limits.max_p99_ms:g}")
    if lat is None and result["connected_peak"]:
        problems.append("no post reached a sampled client: no latency to judge")
    if result["lag_frames"] > limits.max_lag_frames:
        problems.append(f"{result['lag_frames']:,} lag frames > --max-lag-frames {limits.max_lag_frames}")
    if result["closes"] > limits.max_closes:
        codes = ", ".join(f"{code}: {n}" for code, n in result["close_codes"].items())
        problems.append(
            f"{result['closes']:,} connections closed by the server ({codes}) > --max-closes {limits.max_closes}"
        )
    per = (result["server"] or {}).get("bytes_per_connection")
    if per is not None and per > limits.max_bytes_per_conn:
        problems.append(
            f"server memory {per:,} bytes per connection > --max-bytes-per-conn {limits.max_bytes_per_conn:,}"
        )
    return problems


def not_judged(result: dict[str, Any]) -> dict[str, str]:
    """The thresholds this run has no figure for (named as in ``Thresholds``), each with why: they neither fail nor
    pass it. That is
    memory per connection without --server-pid, or when the server's RSS hardly grew because it reused memory that
    earlier clients freed (``bytes_per_connection`` null): failing then would fail every rehearsal against a
    deployment but the first after its start, with nothing wrong to fix."""
    server = result["server"]
    if server is None:
        return {"max_bytes_per_conn": "no --server-pid, so the server's memory was not read"}
    if server["bytes_per_connection"] is None:
        return {"max_bytes_per_conn": memory_per_connection(server)}
    return {}


def ws_url_of(base: str) -> str:
    """The ``/ws`` URL of a deployment's base URL (``http://host:port``, any path prefix and query kept)."""
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--url must be the deployment's address such as http://127.0.0.1:8080, got {redact(base)!r}")
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws", parts.query, ""))


def add_rehearse_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add `mixer rehearse` (with --config, --redis, -v like every subcommand) to ``subparsers``."""
    d, t = LoadOptions(), Thresholds()
    parser = subparsers.add_parser(
        "rehearse",
        help="replay a night at N x against a deployment while clients watch; pass or fail against thresholds",
        description="Replay a recording (the demo, FILE, or --synth) at --speed times its pace, looping for "
        "--duration seconds, into the deployment's Redis, while --ws-clients hold /ws and --sse-clients /events; "
        "end with a verdict against the thresholds (exit 0 pass, 1 fail). See docs/loadtest.md.",
    )
    add_common(
        parser,
        "the deployment's Redis, where the replay publishes (default: $MIXER_REDIS_URL, else a running `mixer run`'s)",
    )
    parser.add_argument("files", nargs="*", type=Path, metavar="FILE", help="recordings (default: the bundled demo)")
    parser.add_argument("--synth", action="store_true", help=f"replay a generated {SYNTH_MINUTES:g}-minute night")
    parser.add_argument("--speed", type=float, default=20.0, metavar="N", help="N x the recorded pace (default 20)")
    add_target(parser, "http://127.0.0.1:8080", "the deployment's address")
    parser.add_argument(
        "--ws-clients", type=int, default=d.clients, metavar="C", help=f"/ws clients (default {d.clients})"
    )
    parser.add_argument("--sse-clients", type=int, default=0, metavar="C", help="/events clients (default 0)")
    parser.add_argument("--ramp", type=float, default=d.ramp, metavar="S", help=f"connect over S s (default {d.ramp})")
    parser.add_argument("--duration", type=float, default=60.0, metavar="S", help="seconds of replay (default 60)")
    parser.add_argument(
        "--processes", type=int, default=d.processes, metavar="P", help=f"as for loadtest (default {d.processes})"
    )
    parser.add_argument(
        "--sample", type=int, default=d.sample, metavar="K", help=f"as for loadtest (default {d.sample})"
    )
    parser.add_argument(
        "--drain", type=float, default=d.drain, metavar="S", help=f"as for loadtest (default {d.drain} s)"
    )
    parser.add_argument("--server-pid", type=int, metavar="PID", help="the server process, for CPU and memory")
    parser.add_argument(
        "--max-p99-ms",
        type=float,
        default=t.max_p99_ms,
        metavar="MS",
        help=f"fail above this p99 (default {t.max_p99_ms:g})",
    )
    parser.add_argument(
        "--max-loss",
        type=float,
        default=t.max_loss,
        metavar="PCT",
        help="fail when a client missed more %% (default 0)",
    )
    parser.add_argument(
        "--max-lag-frames", type=int, default=0, metavar="N", help="fail on more lag frames (default 0)"
    )
    parser.add_argument("--max-closes", type=int, default=0, metavar="N", help="fail on more closes (default 0)")
    parser.add_argument(
        "--max-bytes-per-conn",
        type=int,
        metavar="B",
        help=f"fail above this server memory per connection; needs --server-pid (default {t.max_bytes_per_conn:,})",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the whole result and verdict as JSON here")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="draw the timeline, pass starts marked")
    parser.set_defaults(func=rehearse_command)
    return parser


def rehearse_command(settings: Settings, args: argparse.Namespace) -> int:
    """`mixer rehearse`: 0 when the rehearsal passed every threshold, 1 when it failed or could not be made, 2 for a
    usage error, 130 when Ctrl-C or SIGTERM stopped it; each failed threshold is one line on stderr."""
    say, show = console("rehearse")
    try:
        if args.max_bytes_per_conn is not None and args.server_pid is None:
            raise ValueError("--max-bytes-per-conn needs --server-pid (the server's memory is read from /proc)")
        limits = Thresholds(
            args.max_p99_ms,
            args.max_loss,
            args.max_lag_frames,
            args.max_closes,
            MAX_BYTES_PER_CONN if args.max_bytes_per_conn is None else args.max_bytes_per_conn,
        )
        options = LoadOptions(
            url=ws_url_of(args.url),
            clients=args.ws_clients,
            ramp=args.ramp,
            processes=args.processes,
            sample=args.sample,
            duration=args.duration,
            drain=args.drain,
            server_pid=args.server_pid,
            allow_remote=args.allow_remote,
            max_connect_rate=args.max_connect_rate,
            sse_clients=args.sse_clients,
        )
        if not options.measured:  # a rehearsal always drives: its loss and latency need a parsing client
            raise ValueError(NO_MEASURING_CLIENT)
        if not (math.isfinite(args.duration) and args.duration > 0):  # 0 would replay nothing, then judge that
            raise ValueError(f"--duration must be more than 0 seconds of replay, got {args.duration:g}")
        if not (math.isfinite(args.speed) and args.speed > 0):
            raise ValueError(f"--speed must be a positive multiple of the recorded pace, got {args.speed}")
        if args.synth and args.files:
            raise ValueError("give recordings or --synth, not both")
        files = list(args.files) or [Path(settings.demo_file)]
        problem = None if args.synth else recordings_problem(files)
        if problem is not None:
            raise ValueError(problem)
        if not settings.redis_url:
            raise ValueError(f"a rehearsal publishes into the deployment's Redis: {NO_REDIS}")
        if options.chats is not None:
            recorded = [driven_chats(settings, f) for f in ([] if args.synth else files)]
            check_filter(options.chats, set(settings.chat_tags) if args.synth else set().union(*recorded))
        check_before_run(options.server_pid, args.plot, args.json)
    except ValueError as exc:
        say(str(exc))
        return 2
    try:
        with tempfile.TemporaryDirectory(prefix="mixer-rehearse-") as tmp:
            if args.synth:
                files = [Path(tmp) / "night.jsonl"]
                spec = spec_for(settings.chat_tags, parse_rate(SYNTH_RATE), SYNTH_MINUTES, seed=1)
                with files[0].open("wb") as out:
                    write_night(spec, out)
            result, stopped_by = run_until_signal(rehearse(settings, options, files, args.speed, limits, say))
            if result is None:
                say(f"stopped by {stopped_by} before the end: no verdict")
                return STOPPED
            if args.synth:  # the file is gone with the run: say what it held
                night = f"synth: {SYNTH_MINUTES:g} minutes, {SYNTH_RATE} posts a minute per chat, seed 1"
                result["rehearsal"]["recordings"] = [night]
    except (ValueError, RuntimeError, OSError, RedisError) as exc:
        say(redact(f"failed: {exc}"))
        return 1
    if show:
        print("\r\033[K", end="", file=sys.stderr)
    print_out(rehearsal_report(result))  # first: a --json or --plot that fails now must not take the summary with it
    for problem in result["verdict"]["failures"]:
        say(f"FAILED: {problem}")
    for name, why in result["verdict"]["not_judged"].items():
        say(f"not judged: {option(name)}: {why}")
    saved = save_or_say(result, args.json, args.plot, say)
    return 0 if result["verdict"]["pass"] and saved else 1


async def rehearse(
    settings: Settings, options: LoadOptions, files: list[Path], speed: float, limits: Thresholds, say: Any
) -> dict[str, Any]:
    """One rehearsal: the load test with the replay driving, then its verdict; the result as a JSON-ready dict."""
    driver = RecordingDriver(settings, files, speed, f"r{uuid.uuid4().hex[:8]}", options.chats)
    result = await loadtest(settings, options, say, driver=driver)
    failures, unjudged = judge(result, limits), not_judged(result)
    result.update(
        title="mixer rehearse",
        drive=f"replay x{speed:g}",
        rehearsal={
            "recordings": [str(f) for f in files],
            "speed": speed,
            "run_tag": driver.run_tag,
            "passes": len(driver.pass_starts),
            "published": driver.published,
            "in_feed": driver.in_feed(),
            "skipped": driver.skipped,
        },
        thresholds=asdict(limits) | {"judged_bytes_per_conn": not unjudged},
        verdict={"pass": not failures, "failures": failures, "not_judged": unjudged},
    )
    return result


def option(threshold: str) -> str:
    """The option that sets a threshold of ``Thresholds``: max_p99_ms -> --max-p99-ms."""
    return "--" + threshold.replace("_", "-")


def folded(count: int) -> str:
    """What the summary says of posts published that made no new card (twins joined, repeats dropped)."""
    return f" ({count:,} folded by dedupe)" if count > 0 else ""


def rehearsal_report(result: dict[str, Any]) -> str:
    """The load test's summary, then the replay, the thresholds and the verdict."""
    r, v = result["rehearsal"], result["verdict"]
    limits = Thresholds(**{k: val for k, val in result["thresholds"].items() if k != "judged_bytes_per_conn"})
    names = ", ".join(map(option, v["not_judged"]))
    unjudged = f" (not judged, no figure: {names})" if names else ""
    kinds = ", ".join(
        f"{k} {row['connected_peak']:,} ({row['deliveries']:,} posts)" for k, row in result["by_kind"].items()
    )
    return "\n".join(
        [
            report(result),
            f"clients by   {kinds}",
            f"replay       x{r['speed']:g}, passes begun {r['passes']}, {r['published']:,} posts published, "
            f"{r['in_feed']:,} new in the feed{folded(r['published'] - r['in_feed'])}",
            f"thresholds   {limits.describe(result['thresholds']['judged_bytes_per_conn'])}",
            f"verdict      {'PASS' if v['pass'] else 'FAIL'}{unjudged}",
        ]
    )
