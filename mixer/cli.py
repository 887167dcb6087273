"""The `mixer` command: argument parsing and the edge where settings are read.

Each subcommand reads the config file and the MIXER_* environment once, applies its
own flags on top, and hands a frozen ``Settings`` to the code that does the work.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .config import find_config, load_settings, render_settings
from .loadtest import add_loadtest_parser, loadtest_command
from .options import add_common
from .record import add_record_parser, record_command
from .replay import ReplayOptions
from .runner import Parts, replay_command, run_async, run_parts, spawn_workers, stop_workers
from .settings import ConfigError, Settings
from .synth import add_synth_parser, synth_command
from .transcript import add_transcript_parser, transcript_command


def _web(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default from config: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default from config: 8080)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mixer", description="chatmixer: many hashtag chats, one live feed.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    merge = sub.add_parser("merge", help="the merge stage alone", description="Merge the chat streams into the feed.")
    add_common(merge)

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
    return parser


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


def chats_command(settings: Settings, args: argparse.Namespace) -> int:
    """`mixer chats`: the directory with next slots and live marks; `mixer chats import FILE`: CSV to TOML."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if args.chats_command == "import":
        from .directory import entries_to_toml, import_csv

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
    from .app import chat_entry

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
    args = build_parser().parse_args(argv)
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
    if args.command == "config":
        sys.stdout.write(render_settings(settings))
        return 0
    if args.command == "chats":
        return chats_command(settings, args)
    if args.command == "transcript":
        return transcript_command(settings, args)
    if args.command == "record":
        return record_command(settings, args)
    if args.command == "loadtest":
        return loadtest_command(settings, args)
    if args.command == "synth":
        return synth_command(settings, args)
    if args.command == "normalize":
        from .hashtags import ChatMatcher
        from .recorded import normalize

        matcher = ChatMatcher(None if args.all_tags else settings.chat_tags)
        return normalize(args.files, matcher, sys.stdout.buffer, sys.stderr)
    if args.command == "replay":
        try:
            options = ReplayOptions(speed=args.speed, loop=args.loop, max_gap=args.max_gap, keep_time=args.keep_time)
        except ValueError as exc:
            print(f"mixer replay: {exc}", file=sys.stderr)
            return 2
        return run_async(replay_command(settings, args.files, options))
    parts = Parts(host=settings.host, port=settings.port)
    demo = getattr(args, "replay", None) or [Path(settings.demo_file)]
    speed = getattr(args, "speed", None) or settings.demo_speed
    live = bool(settings.mastodon_instances or settings.bluesky_enabled or settings.x_bearer_token)
    if args.command == "run":
        parts.merge = parts.web = True
        parts.follow = live
        if not args.no_demo:
            parts.ingest_files, parts.ingest_speed = demo, speed
    elif args.command == "ingest":
        parts.follow = live
        if args.replay or not live:
            parts.ingest_files, parts.ingest_speed = demo, speed
    elif args.command == "serve":
        parts.web, parts.merge = True, not args.no_merge
        parts.reuse_port = args.reuse_port or args.workers > 1
        if args.workers > 1:
            passed = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "serve"]
            passed = _without_option(passed, "--workers")
            workers = spawn_workers(passed, args.workers - 1)
            try:
                return run_async(run_parts(settings, parts))
            finally:
                stop_workers(workers)
    elif args.command == "merge":
        parts.merge = True
    return run_async(run_parts(settings, parts))


if __name__ == "__main__":
    sys.exit(main())
