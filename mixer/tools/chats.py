"""`mixer chats`: the configured chats with their next slot and which are live now; `mixer chats import FILE`.

``add_chats_parser`` adds the subcommand; ``chats_command`` lists the config's chats in order, each with its next
start in ``--tz`` (an IANA zone; an unknown one is exit 2), LIVE with its end while a slot runs, or "no schedule".
``chats import`` reads a directory CSV and prints ``[[chats]]`` tables for ``mixer.toml`` on stdout, its conflicts
and unreadable rows on stderr: exit 0 when it found entries, 1 when none, 2 when the file cannot be read (or lacks
a column). What lives elsewhere: a chat's slots and directory entry (``mixer.schedule``), the CSV import itself
(``directory``), and stopping quietly when the reader of stdout goes away (``mixer.cli``).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from mixer.options import add_common
from mixer.settings import Settings


def add_chats_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add `mixer chats` and its `import` action (with --config, --redis, -v like every subcommand)."""
    chats = subparsers.add_parser(
        "chats",
        help="the chat directory: list the chats with their next slot, or import a CSV directory",
        description="List the configured chats with their next start (in --tz) and which are live now; "
        "'mixer chats import FILE' turns a directory CSV into [[chats]] tables for mixer.toml.",
    )
    add_common(chats, "not used by chats (accepted like every subcommand)")
    chats.add_argument("--tz", default="UTC", help="time zone to show times in (IANA name, default UTC)")
    chats_sub = chats.add_subparsers(
        dest="chats_command", metavar="ACTION", help="none: list the chats; import: read a directory CSV"
    )
    chats_import = chats_sub.add_parser(
        "import",
        help="read a directory CSV and print [[chats]] tables",
        description="Read a chat directory CSV (hashtag, frequency, day_of_week, start_local, timezone, ... "
        "columns) and print [[chats]] tables for mixer.toml on stdout; conflicts and unreadable rows are reported "
        "on stderr. "
        "See docs/directory.md.",
    )
    chats_import.add_argument("file", type=Path, metavar="FILE", help="the directory CSV")
    chats.set_defaults(func=chats_command)
    return chats


def chats_command(settings: Settings, args: argparse.Namespace) -> int:
    """`mixer chats`: the directory with next slots and live marks; `mixer chats import FILE`: CSV to TOML."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from mixer.schedule import chat_entry

    if args.chats_command == "import":
        from mixer.tools.directory import entries_to_toml, import_csv

        try:
            result = import_csv(args.file)
        except OSError as exc:
            print(f"mixer chats import: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        except ValueError as exc:  # a missing column, not UTF-8, not CSV: names the file and line
            print(f"mixer chats import: {exc}", file=sys.stderr)
            return 2
        for message in result.messages():
            print(message, file=sys.stderr)
        sys.stdout.write(entries_to_toml(result.entries))
        sys.stdout.flush()
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
    sys.stdout.flush()
    return 0
