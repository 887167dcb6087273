"""The `mixer` command: argument parsing, the edge where settings are read, and dispatch.

Each subcommand reads the config file and the MIXER_* environment once, applies its
own flags on top, and hands a frozen ``Settings`` to the function its parser names
(``set_defaults(func=...)``). The process roles (run, ingest, serve, merge) are started
by ``mixer.runner``; the tools add their own subcommands from ``mixer.tools``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mixer.config import find_config, load_settings, render_settings
from mixer.options import add_common
from mixer.runner import Parts, replay_command, run_async, run_parts, spawn_workers, stop_workers
from mixer.settings import ConfigError, Settings
from mixer.tools.loadtest.run import add_loadtest_parser
from mixer.tools.record import add_record_parser
from mixer.tools.synth import add_synth_parser
from mixer.tools.transcript import add_transcript_parser

Command = Callable[[Settings, argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mixer", description="chatmixer: many hashtag chats, one live feed.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_roles(sub)
    _add_replay(sub)
    _add_normalize(sub)
    _add_chats(sub)
    add_transcript_parser(sub)
    add_record_parser(sub)
    add_loadtest_parser(sub)
    add_synth_parser(sub)
    config = sub.add_parser(
        "config",
        help="print the effective settings as TOML",
        description="Print the settings after the config file and MIXER_* environment are "
        "applied. The output is itself a valid mixer.toml.",
    )
    add_common(config)
    config.set_defaults(func=config_command)
    return parser


def _web(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default from config: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default from config: 8080)")


def _add_roles(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser(
        "run",
        help="everything in one process: embedded Redis, demo replay, merge, web server",
        description="Start the whole product in one process. Without --redis (or MIXER_REDIS_URL) "
        "an embedded redis-server is started on a private socket and stopped on exit.",
    )
    add_common(run)
    _web(run)
    run.add_argument(
        "--replay", nargs="+", type=Path, metavar="FILE", help="recordings to loop (default: the bundled demo)"
    )
    run.add_argument("--speed", type=float, help="replay speed, x real time (default from config [demo] speed)")
    run.add_argument("--no-demo", action="store_true", help="do not replay anything (live sources only)")
    run.set_defaults(func=run_command)

    ingest = sub.add_parser(
        "ingest",
        help="ingest workers only: follow the configured sources into the chat streams",
        description="Run the ingest side on a shared Redis: the live followers named in the config "
        "([mastodon], [bluesky], [x]) and, with --replay, recordings in a loop. With no source "
        "configured and no --replay, the bundled demo is replayed.",
    )
    add_common(ingest)
    ingest.add_argument(
        "--replay", nargs="+", type=Path, metavar="FILE", help="recordings to loop beside the live sources"
    )
    ingest.add_argument("--speed", type=float, help="replay speed, x real time")
    ingest.set_defaults(func=ingest_command)

    serve = sub.add_parser(
        "serve",
        help="merge stage and fan-out web server on a shared Redis",
        description="Run the merge stage and the fan-out server (/ws, /api, pages).",
    )
    add_common(serve)
    _web(serve)
    serve.add_argument("--no-merge", action="store_true", help="fan-out only (another process runs the merge stage)")
    serve.add_argument(
        "--workers", type=int, default=1, metavar="N", help="fan-out processes sharing the port (e.g. one per core)"
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # set for --workers siblings
    serve.set_defaults(func=serve_command)

    merge = sub.add_parser("merge", help="the merge stage alone", description="Merge the chat streams into the feed.")
    add_common(merge)
    merge.set_defaults(func=merge_command)


def _add_replay(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    replay = sub.add_parser(
        "replay",
        help="publish recorded files into the chat streams",
        description="Publish recorded JSON Lines into their chats' streams at the recorded pace "
        "times --speed. Several files start together.",
    )
    add_common(replay)
    replay.add_argument("files", nargs="+", type=Path, metavar="FILE")
    replay.add_argument("--speed", type=float, default=1.0, help="x real time; 0 = as fast as possible (default 1)")
    replay.add_argument("--loop", action="store_true", help="start again at the end, until stopped")
    replay.add_argument("--max-gap", type=float, metavar="S", help="cut silences longer than S recorded seconds to S")
    replay.add_argument(
        "--keep-time", action="store_true", help="keep recorded 'created' times (default: re-stamp to now)"
    )
    replay.set_defaults(func=replay_files)


def _add_normalize(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    normalize = sub.add_parser(
        "normalize",
        help="print recorded records as normalised Posts (JSON Lines)",
        description="Read recordings in any recorded format (JSON Lines, JSON array or API response, "
        "SSE body; normalised Posts or raw X, Mastodon, Bluesky payloads; '-' is stdin) and print one "
        "normalised Post per line; edits and retractions as lines with a 'type' of 'edit' or 'retract'. "
        "Unreadable records are reported on stderr as FILE:LINE: reason. See docs/recorded-format.md.",
    )
    add_common(normalize)
    normalize.add_argument("files", nargs="+", metavar="FILE", help="recordings to read; '-' reads stdin")
    normalize.add_argument(
        "--all-tags", action="store_true", help="every hashtag is a chat (default: only the config's chats)"
    )
    normalize.set_defaults(func=normalize_command)


def _add_chats(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chats = sub.add_parser(
        "chats",
        help="the chat directory: list the chats with their next slot, or import a CSV directory",
        description="List the configured chats with their next start (in --tz) and which are live now; "
        "'mixer chats import FILE' turns a directory CSV into [[chats]] tables for mixer.toml.",
    )
    add_common(chats)
    chats.add_argument("--tz", default="UTC", help="time zone to show times in (IANA name, default UTC)")
    chats_sub = chats.add_subparsers(dest="chats_command", metavar="ACTION")
    chats_import = chats_sub.add_parser("import", help="read a directory CSV and print [[chats]] tables")
    chats_import.add_argument("file", type=Path, metavar="FILE")
    chats.set_defaults(func=chats_command)


def read_settings(args: argparse.Namespace) -> Settings:
    """Settings from the config file and environment, with command-line flags on top."""
    env = os.environ
    settings = load_settings(find_config(args.config, env), env)
    changes: dict[str, Any] = {}
    if args.redis:
        changes["redis_url"] = args.redis
    for name in ("host", "port"):
        value = getattr(args, name, None)
        if value is not None:
            changes[name] = value
    return dataclasses.replace(settings, **changes) if changes else settings


def config_command(settings: Settings, args: argparse.Namespace) -> int:
    """`mixer config`: the effective settings as TOML."""
    sys.stdout.write(render_settings(settings))
    return 0


def normalize_command(settings: Settings, args: argparse.Namespace) -> int:
    """`mixer normalize`: recordings as normalised Posts on stdout, bad records on stderr."""
    from mixer.ingest.hashtags import ChatMatcher
    from mixer.ingest.recorded import normalize

    matcher = ChatMatcher(None if args.all_tags else settings.chat_tags)
    return normalize(args.files, matcher, sys.stdout.buffer, sys.stderr)


def replay_files(settings: Settings, args: argparse.Namespace) -> int:
    """`mixer replay`: recordings published once (or looping) into a shared Redis."""
    from mixer.ingest.replay import ReplayOptions

    try:
        options = ReplayOptions(speed=args.speed, loop=args.loop, max_gap=args.max_gap, keep_time=args.keep_time)
    except ValueError as exc:
        print(f"mixer replay: {exc}", file=sys.stderr)
        return 2
    return run_async(replay_command(settings, args.files, options))


def chats_command(settings: Settings, args: argparse.Namespace) -> int:
    """`mixer chats`: the directory with next slots and live marks; `mixer chats import FILE`: CSV to TOML."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from mixer.schedule import chat_entry

    if args.chats_command == "import":
        from mixer.tools.directory import entries_to_toml, import_csv

        result = import_csv(args.file)
        for message in result.messages():
            print(message, file=sys.stderr)
        sys.stdout.write(entries_to_toml(result.entries))
        return 0 if result.entries else 1
    try:
        zone = ZoneInfo(args.tz)
    except (ZoneInfoNotFoundError, ValueError):
        print(f"mixer chats: unknown time zone {args.tz!r} (an IANA name like Europe/London)", file=sys.stderr)
        return 2
    now = datetime.now(UTC)
    for chat in settings.chats:
        entry = chat_entry(chat, now)
        if entry["next_start"] is None:
            when = "no schedule"
        else:
            start = datetime.fromisoformat(entry["next_start"]).astimezone(zone)
            end = datetime.fromisoformat(entry["next_end"]).astimezone(zone)
            when = f"LIVE until {end:%H:%M}" if entry["live"] else f"next {start:%a %d %b %H:%M}"
            when += f" {args.tz}"
        print(f"#{chat.tag:<20} {when:<40} {chat.title}")
    return 0


def _demo(settings: Settings, args: argparse.Namespace) -> tuple[list[Path], float]:
    """The recordings to loop (``--replay``, else the bundled demo) and their speed."""
    return args.replay or [Path(settings.demo_file)], args.speed or settings.demo_speed


def _live(settings: Settings) -> bool:
    return bool(settings.mastodon_instances or settings.bluesky_enabled or settings.x_bearer_token)


def run_command(settings: Settings, args: argparse.Namespace) -> int:
    """`mixer run`: everything in one process."""
    parts = Parts(host=settings.host, port=settings.port, merge=True, web=True, follow=_live(settings))
    if not args.no_demo:
        parts.ingest_files, parts.ingest_speed = _demo(settings, args)
    return run_async(run_parts(settings, parts))


def ingest_command(settings: Settings, args: argparse.Namespace) -> int:
    """`mixer ingest`: the live followers, and recordings when asked for or when nothing live is configured."""
    parts = Parts(follow=_live(settings))
    if args.replay or not parts.follow:
        parts.ingest_files, parts.ingest_speed = _demo(settings, args)
    return run_async(run_parts(settings, parts))


def serve_command(settings: Settings, args: argparse.Namespace) -> int:
    """`mixer serve`: the fan-out server (and the merge stage unless --no-merge), in --workers processes."""
    parts = Parts(host=settings.host, port=settings.port, web=True, merge=not args.no_merge)
    parts.reuse_port = args.reuse_port or args.workers > 1
    if args.workers <= 1:
        return run_async(run_parts(settings, parts))
    passed = _without_option([a for a in args.argv if a != "serve"], "--workers")
    workers = spawn_workers(passed, args.workers - 1)
    try:
        return run_async(run_parts(settings, parts))
    finally:
        stop_workers(workers)


def merge_command(settings: Settings, args: argparse.Namespace) -> int:
    """`mixer merge`: the merge and shaping stages alone (one leader among any number)."""
    return run_async(run_parts(settings, Parts(merge=True)))


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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        settings = read_settings(args)
    except ConfigError as exc:
        print(f"mixer: config error: {exc}", file=sys.stderr)
        return 2
    command: Command = args.func
    return command(settings, args)


if __name__ == "__main__":
    sys.exit(main())
