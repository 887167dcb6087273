"""The `mixer` command: argument parsing, the edge where settings are read, and dispatch.

Each subcommand reads the config file and the MIXER_* environment once, applies its
own flags on top, and hands a frozen ``Settings`` to the function its parser names
(``set_defaults(func=...)``). Here too the Redis is chosen: ``--redis``, else MIXER_REDIS_URL
or the config, else the one a running `mixer run` published (``mixer.runtime``); only
`mixer run` starts a Redis of its own, the split roles refuse to run without one. The
process roles (run, ingest, serve, merge) are started by ``mixer.runner``; the tools add
their own subcommands from ``mixer.tools``. Bad input is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mixer import health
from mixer.config import find_config, load_settings, render_settings, secrets_of
from mixer.ingest.replay import ReplayOptions, recordings_problem
from mixer.keys import Keys
from mixer.options import SHARED, add_common, add_keeping
from mixer.redact import RedactingFormatter, redact
from mixer.runner import Parts, run_async, run_parts
from mixer.runtime import find_run, redis_url_problem, runtime_dir
from mixer.settings import ConfigError, Settings
from mixer.statedir import default_state_dir, event_slug
from mixer.tools.chats import add_chats_parser
from mixer.tools.loadtest.rehearse import add_rehearse_parser
from mixer.tools.loadtest.run import add_loadtest_parser
from mixer.tools.record import add_record_parser
from mixer.tools.replay import add_replay_parser
from mixer.tools.report import add_report_parser
from mixer.tools.stdout import reader_gone
from mixer.tools.synth import add_synth_parser
from mixer.tools.transcript import add_transcript_parser
from mixer.workers import PID_LOG_LAYOUT, spawn_workers, stop_workers

Command = Callable[[Settings, argparse.Namespace], int]

ROLES = ("ingest", "serve", "merge")  # need a shared Redis: refuse without one
TOOLS = ("replay", "record", "transcript", "loadtest", "report", "rehearse")  # else a running `mixer run`'s Redis
# `mixer serve --workers` at most: one fan-out process per core is the useful most, and a mistyped count must be
# refused before it starts that many processes.
MAX_WORKERS = 64
PRINTERS = ("config", "chats")  # print to stdout: a reader that leaves stops them quietly


class Refused(Exception):
    """Input the command cannot run with (or a role with no Redis to join), said in one line; exit 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mixer", description="chatmixer: many hashtag chats, one live feed.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_roles(sub)
    add_replay_parser(sub)
    _add_normalize(sub)
    add_chats_parser(sub)
    add_transcript_parser(sub)
    add_report_parser(sub)
    add_record_parser(sub)
    add_loadtest_parser(sub)
    add_rehearse_parser(sub)
    add_synth_parser(sub)
    config = sub.add_parser(
        "config",
        help="print the effective settings as TOML",
        description="Print the settings after the config file and MIXER_* environment are "
        "applied. The output is itself a valid mixer.toml.",
    )
    add_common(config, "the Redis URL to print as [redis] url (default: $MIXER_REDIS_URL, else the config file's)")
    config.set_defaults(func=config_command)
    return parser


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1 to 65535)")
    return int(text)


def _web(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default from config: 127.0.0.1)")
    parser.add_argument("--port", type=_port, help="port to listen on (default from config: 8080)")


def _add_roles(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser(
        "run",
        help="everything in one process: embedded Redis, demo replay, merge, web server",
        description="Start the whole product in one process. Without --redis (or MIXER_REDIS_URL) "
        "an embedded redis-server is started on a private socket and stopped on exit; it keeps the night "
        "in the event's state dir (printed at start; see docs/redis.md), and the next run of the event resumes it.",
    )
    add_common(run)
    _web(run)
    run.add_argument(
        "--public",
        action="store_true",
        help="listen on every address (not only 127.0.0.1) and print each address other machines open",
    )
    run.add_argument(
        "--replay", nargs="+", type=Path, metavar="FILE", help="recordings to loop (default: the bundled demo)"
    )
    run.add_argument(
        "--speed", type=float, help="replay speed, x real time; 0 = as fast as possible (default: [demo] speed)"
    )
    run.add_argument(
        "--no-demo", action="store_true", help="do not replay the bundled demo (live sources and --replay only)"
    )
    add_keeping(run)
    run.set_defaults(func=run_command)

    ingest = sub.add_parser(
        "ingest",
        help="ingest workers only: follow the configured sources into the chat streams",
        description="Run the ingest side on a shared Redis: the live followers named in the config "
        "([mastodon], [bluesky], [x]) and, with --replay, recordings in a loop. With no source "
        "configured and no --replay, the bundled demo is replayed.",
    )
    add_common(ingest, SHARED)
    ingest.add_argument(
        "--replay", nargs="+", type=Path, metavar="FILE", help="recordings to loop beside the live sources"
    )
    ingest.add_argument(
        "--speed", type=float, help="replay speed, x real time; 0 = as fast as possible (default: [demo] speed)"
    )
    _check_flag(ingest, "ingest")
    ingest.set_defaults(func=ingest_command)

    serve = sub.add_parser(
        "serve",
        help="the fan-out web server, and the merge stage while it leads, on a shared Redis",
        description="Run the fan-out server (/ws, /api, pages) and, unless --no-merge, the merge and shaping stages: "
        "one process leads them at a time, the others stand by to take over.",
    )
    add_common(serve, SHARED)
    _web(serve)
    serve.add_argument("--no-merge", action="store_true", help="fan-out only (another process runs the merge stage)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help=f"fan-out processes sharing the port (e.g. one per core; 1 to {MAX_WORKERS}; default 1)",
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # set for --workers siblings
    serve.set_defaults(func=serve_command)

    merge = sub.add_parser(
        "merge",
        help="the merge and shaping stages alone",
        description="Merge the chat streams into the feed, and shape the feed into each profile's stream (the wall). "
        "Any number may run: one leads at a time, the others stand by to take over.",
    )
    add_common(merge, SHARED)
    _check_flag(merge, "merge")
    merge.set_defaults(func=merge_command)


def _check_flag(parser: argparse.ArgumentParser, role: str) -> None:
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"health probe: exit 0 if this host's `mixer {role}` wrote its health key in Redis within "
        f"{health.STALE_AFTER:.0f} s, else 1 (one line; for container and Kubernetes exec probes)",
    )


def _add_normalize(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    normalize = sub.add_parser(
        "normalize",
        help="print recorded records as normalised Posts (JSON Lines)",
        description="Read recordings in any recorded format (JSON Lines, JSON array or API response, "
        "SSE body; normalised Posts or raw X, Mastodon, Bluesky payloads; '-' is stdin) and print one "
        "normalised Post per line; edits and retractions as lines with a 'type' of 'edit' or 'retract'. "
        "Unreadable records are reported on stderr as FILE:LINE: reason. See docs/recorded-format.md.",
    )
    add_common(normalize, "not used by normalize (accepted like every subcommand)")
    normalize.add_argument("files", nargs="+", metavar="FILE", help="recordings to read; '-' reads stdin")
    normalize.add_argument(
        "--all-tags", action="store_true", help="every hashtag is a chat (default: only the config's chats)"
    )
    normalize.set_defaults(func=normalize_command)


def read_settings(args: argparse.Namespace) -> Settings:
    """Settings from the config file and environment, with command-line flags on top; Refused for a bad flag."""
    env = os.environ
    settings = load_settings(find_config(args.config, env), env)
    changes: dict[str, Any] = {}
    if args.redis:
        changes["redis_url"] = args.redis
    for name in ("host", "port"):
        value = getattr(args, name, None)
        if value is not None:
            changes[name] = value
    if getattr(args, "public", False):
        if args.host is not None:
            raise Refused("--public listens on every address: give --public or --host, not both")
        changes["host"] = "0.0.0.0"
    settings = dataclasses.replace(settings, **changes) if changes else settings
    problem = settings.redis_url and redis_url_problem(settings.redis_url)
    if problem:
        raise Refused(f"Redis URL {problem}")
    return settings


def choose_redis(settings: Settings, args: argparse.Namespace, directory: Path) -> Settings:
    """``settings`` with the Redis of the `mixer run` published in ``directory`` when the command joins one and was
    given none (said on stderr); Refused for a split role with neither."""
    undriven = args.command == "loadtest" and args.drive[0] == "none"  # a load test that publishes nothing
    if settings.redis_url or args.command not in (*ROLES, *TOOLS) or undriven:
        return settings
    found = find_run(directory, settings.key_prefix)
    if found is None:
        if args.command in ROLES:
            raise Refused(
                "runs on a shared Redis: give --redis URL or MIXER_REDIS_URL, or start `mixer run` first to join "
                "its Redis (only `mixer run` starts a Redis of its own)"
            )
        return settings  # each tool says what it needs
    print(
        f"mixer {args.command}: using the Redis of the mixer run (pid {found.pid}) at {redact(found.url)}",
        file=sys.stderr,
    )
    return dataclasses.replace(settings, redis_url=found.url)


def config_command(settings: Settings, args: argparse.Namespace) -> int:
    """`mixer config`: the effective settings as TOML."""
    sys.stdout.write(render_settings(settings))
    sys.stdout.flush()  # a reader gone fails here, not in the interpreter's last flush
    return 0


def normalize_command(settings: Settings, args: argparse.Namespace) -> int:
    """`mixer normalize`: recordings as normalised Posts on stdout, bad records on stderr."""
    from mixer.ingest.hashtags import ChatMatcher
    from mixer.ingest.recorded import normalize

    matcher = ChatMatcher(None if args.all_tags else settings.chat_tags)
    return normalize(args.files, matcher, sys.stdout.buffer, sys.stderr)


def _recordings(settings: Settings, args: argparse.Namespace, demo: bool = True) -> tuple[list[Path], float]:
    """The recordings to loop (``--replay``, else the bundled demo unless ``demo`` is off) and their speed
    (``--speed``, 0 meaning as fast as possible, else the config's); Refused for a missing file or a bad speed."""
    files = args.replay or ([Path(settings.demo_file)] if demo else [])
    speed = settings.demo_speed if args.speed is None else args.speed
    try:
        ReplayOptions(speed=speed)
    except ValueError as exc:
        raise Refused(f"--{exc}") from None
    problem = recordings_problem(files)
    if problem is not None:
        raise Refused(problem)
    return files, speed


def _state_dir(settings: Settings, args: argparse.Namespace) -> Path | None:
    """Where `mixer run`'s embedded Redis keeps the night: --state-dir, else the event's dir in the user's state
    dir; None with --ephemeral or a --redis (which keeps its own data); Refused for flags that contradict."""
    if args.ephemeral and (args.state_dir or args.fresh):
        raise Refused("--ephemeral keeps nothing on disk: give it or --state-dir/--fresh, not both")
    if settings.redis_url:
        if args.state_dir or args.fresh:
            raise Refused("--state-dir and --fresh are for the embedded Redis: with --redis, that Redis keeps the data")
        return None
    if args.ephemeral:
        return None
    if args.state_dir:
        return Path(args.state_dir).expanduser().absolute()
    return default_state_dir(os.environ, event_slug(settings.event_name, settings.event_hashtag))


def run_command(settings: Settings, args: argparse.Namespace) -> int:
    """`mixer run`: everything in one process."""
    parts = Parts(host=settings.host, port=settings.port, merge=True, web=True, follow=bool(settings.live_sources))
    parts.ingest_files, parts.ingest_speed = _recordings(settings, args, demo=not args.no_demo)
    parts.runtime_dir, parts.public = args.runtime_dir, args.public
    parts.state_dir, parts.fresh = _state_dir(settings, args), args.fresh
    return run_async(run_parts(settings, parts))


def ingest_command(settings: Settings, args: argparse.Namespace) -> int:
    """`mixer ingest`: the live followers, and recordings when asked for or when nothing live is configured."""
    if args.check:
        return _health_check(settings, "ingest")
    parts = Parts(follow=bool(settings.live_sources), command="ingest")
    if args.replay or not parts.follow:
        parts.ingest_files, parts.ingest_speed = _recordings(settings, args)
    return run_async(run_parts(settings, parts))


def serve_command(settings: Settings, args: argparse.Namespace) -> int:
    """`mixer serve`: the fan-out server (and the merge stage unless --no-merge), in --workers processes."""
    if not 1 <= args.workers <= MAX_WORKERS:
        raise Refused(f"--workers must be 1 to {MAX_WORKERS} (fan-out processes on this machine), got {args.workers}")
    parts = Parts(host=settings.host, port=settings.port, web=True, merge=not args.no_merge, command="serve")
    parts.reuse_port = args.reuse_port or args.workers > 1
    parts.sibling = args.reuse_port  # (set only on the siblings `--workers` starts)
    if args.workers <= 1:
        return run_async(run_parts(settings, parts))
    passed = _without_option([a for a in args.argv if a != "serve"], "--workers")
    parts.worker_argv = passed
    workers = parts.workers = spawn_workers(passed, args.workers - 1)
    try:
        return run_async(run_parts(settings, parts))
    finally:
        stop_workers(workers)


def merge_command(settings: Settings, args: argparse.Namespace) -> int:
    """`mixer merge`: the merge and shaping stages alone (one leader among any number)."""
    if args.check:
        return _health_check(settings, "merge")
    return run_async(run_parts(settings, Parts(merge=True, command="merge")))


def _health_check(settings: Settings, role: str) -> int:
    """`mixer ROLE --check`: the health key's verdict as the exit code, and one line (stdout if healthy)."""
    code, line = asyncio.run(health.check(settings.redis_url, Keys(settings.key_prefix), role))
    print(line, file=sys.stderr if code else sys.stdout)
    return code


def _without_option(args: list[str], name: str) -> list[str]:
    """``args`` less ``name VALUE`` / ``name=VALUE``."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


def parse_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed; an unknown argument is reported (exit 2) by the deepest subcommand chosen, so the error shows
    that subcommand's usage (``usage: mixer normalize ...``) rather than the top-level one."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        chosen = parser
        while True:
            subs = [a for a in chosen._actions if isinstance(a, argparse._SubParsersAction)]
            name = getattr(args, subs[0].dest, None) if subs else None
            if name is None:
                break
            chosen = subs[0].choices[name]
        chosen.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


LOG_LAYOUT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(build_parser(), argv)
    args.argv = argv
    handler = logging.StreamHandler(sys.stderr)  # every log line, tracebacks included, passes through redact
    shared = getattr(args, "workers", 1) > 1 or getattr(args, "reuse_port", False)  # one stderr, several processes
    layout = PID_LOG_LAYOUT if shared else LOG_LAYOUT
    handler.setFormatter(logs := RedactingFormatter(layout))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    if not args.verbose:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
        # matplotlib (report, loadtest and rehearse plots) says it built its font cache, and, where its cache dir
        # cannot be written (a container's read-only home), that it made a temporary one: chatter, not the tool's
        logging.getLogger("matplotlib").setLevel(logging.ERROR)
    args.runtime_dir = runtime_dir(os.environ)
    try:
        settings = choose_redis(read_settings(args), args, args.runtime_dir)
        logs.secrets = secrets_of(settings)
        command: Command = args.func
        return command(settings, args)
    except ConfigError as exc:
        print(f"mixer: config error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except Refused as exc:
        print(f"mixer {args.command}: {redact(str(exc))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of stdout went away (`mixer config | head`): stop quietly, as cat does
        if args.command not in PRINTERS:
            raise  # not from stdout: a bug to see
        return reader_gone()


if __name__ == "__main__":
    sys.exit(main())
