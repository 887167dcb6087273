"""Night reports (`mixer report`): the feed history of one event as one self-contained HTML page, or JSON.

``load_history`` reads a feed stream (the full feed or a shaped profile's) from its start, each post
as it stands now, the ones a moderator hid or that were retracted marked ``removed`` instead of
left out (a report counts them, never shows them); ``span_from_args`` turns --since/--until/--tz
into the range, the last event (``report_figures.last_event``) when neither is given;
``report_command`` loads, computes (``report_figures``), renders (``report_html``) and writes.
Not here: the figures, the HTML, how feed entries decode.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import tzinfo
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from mixer.feed import as_shown, decode_entries
from mixer.keys import Keys
from mixer.options import NO_REDIS, add_common
from mixer.settings import Settings
from mixer.streams import last_id, read_range
from mixer.tools.outfile import OutFile
from mixer.tools.report_figures import Post, Span, figures, last_event
from mixer.tools.stdout import reader_gone
from mixer.tools.transcript import parse_time, parse_zone, read_feed, trimmed_note, with_trim

FORMATS = ("html", "json")


async def load_history(redis: aioredis.Redis, stream: str, keys: Keys, page: int = 2000) -> list[Post]:
    """Every post of ``stream`` up to its newest entry at the start, in stream order, as it stands now (latest edit,
    chats and counts from the post index); a hidden or retracted one with ``removed`` set to ``"hidden"`` or
    ``"retracted"``. A card shown again under a newer id is read once, at that id."""
    newest = await last_id(redis, stream)
    out: list[Post] = []
    after = "0-0"
    while newest != "0-0":
        entries = await read_range(redis, stream, after, newest, count=page)
        if not entries:
            break
        after = entries[-1][0]
        out += await as_shown(redis, keys, decode_entries(entries), removed=True)
    return out


def span_from_args(args: argparse.Namespace, history: list[Post]) -> Span | None:
    """The range --since/--until ask for (an open end from the history), else the last event; None without posts.
    ValueError saying what is wrong with a flag."""
    tz = parse_zone(args.tz)
    since = None if args.since is None else parse_time(args.since, tz, "--since")
    until = None if args.until is None else parse_time(args.until, tz, "--until")
    if since is not None and until is not None and since >= until:
        raise ValueError("--since must be before --until")
    if since is None and until is None:
        return last_event(history)
    times = [int(p.get("created") or 0) for p in history]
    start = since if since is not None else min(times, default=0)
    end = until if until is not None else max(times, default=start) + 1
    return Span(start, max(start + 1, end))


def add_report_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add `mixer report` (with --config, --redis, -v like every subcommand) to ``subparsers``."""
    parser = subparsers.add_parser(
        "report",
        help="the night as pictures: one self-contained HTML page (or JSON) of a feed's history",
        description="Read the feed history in a shared Redis and write a report an organiser can open or post: "
        "posts per minute per chat, the mixing matrix, per chat posts, authors, Q/A, boosts, removals, newcomers. "
        "Default range: the last event (the posts after the feed's last silence of more than 3 hours). "
        "Times --since/--until are ISO 8601; without an offset they are read in --tz. See docs/report.md.",
    )
    add_common(parser, "the Redis holding the feed (default: $MIXER_REDIS_URL, else a running `mixer run`'s)")
    parser.add_argument("-o", "--out", type=Path, metavar="FILE", help="write here (default: stdout)")
    parser.add_argument("--format", default="html", metavar="FORMAT", help="html (default) or json")
    parser.add_argument("--profile", default="full", metavar="P", help="full (default: the whole feed) or a shaped one")
    parser.add_argument("--since", metavar="ISO", help="posts created at or after this time (default: the last event)")
    parser.add_argument("--until", metavar="ISO", help="posts created before this time (default: the last event)")
    parser.add_argument(
        "--tz", default="UTC", metavar="ZONE", help="time zone of shown times and of --since/--until (default UTC)"
    )
    parser.set_defaults(func=report_command)
    return parser


def report_command(settings: Settings, args: argparse.Namespace) -> int:
    """`mixer report`: 0 when written, 2 for a bad option, an --out that cannot be written (said before the feed is
    read) or no Redis to read (none given, no `mixer run` found), 1 when the Redis fails or the file fails at the
    end (an earlier one kept)."""

    def say(message: str) -> None:
        print(f"mixer report: {message}", file=sys.stderr)

    try:
        if args.format not in FORMATS:
            raise ValueError(f"--format must be html or json, got {args.format!r}")
        if args.profile not in settings.profile_names:
            raise ValueError(
                f"--profile: no profile {args.profile!r} (this event has {', '.join(settings.profile_names)})"
            )
        tz = parse_zone(args.tz)
        span_from_args(args, [])  # the flags are checked before Redis is asked anything
        out = None if args.out is None else OutFile(args.out)  # and the file: a big night reads for minutes
    except ValueError as exc:
        say(str(exc))
        return 2
    try:
        return _report(settings, args, tz, out, say)
    finally:
        if out is not None:
            out.discard()


def _report(
    settings: Settings, args: argparse.Namespace, tz: tzinfo, out: OutFile | None, say: Callable[[str], None]
) -> int:
    """The rest of ``report_command`` once the options and ``out`` are checked."""
    if not settings.redis_url:
        say(f"reads the feed from a shared Redis; {NO_REDIS}")
        return 2
    keys = Keys(settings.key_prefix)
    stream = keys.feed if args.profile == "full" else keys.shaped(args.profile)

    try:
        history, oldest = read_feed(
            settings.redis_url, stream, lambda redis: with_trim(redis, stream, load_history(redis, stream, keys))
        )
    except (RedisError, OSError) as exc:
        say(f"cannot read the feed from Redis: {exc}")
        return 1
    span = span_from_args(args, history)
    doc = {
        "event": {"name": settings.event_name, "hashtag": settings.event_hashtag},
        "profile": args.profile,
        **figures(history, span or Span(0, 1), settings.chat_tags),
    }
    if span is None:  # an empty feed and no range asked: there is no time to show (not the epoch)
        doc |= {"from": None, "to": None, "timeline": doc["timeline"] | {"start": None, "bins": 0}}
    if args.format == "json":
        body = json.dumps(doc, ensure_ascii=False, indent=2) + "\n"
    else:
        from mixer.tools.report_html import render  # matplotlib loads only for the HTML

        body = render(doc, {c.tag: c.colour for c in settings.chats}, tz)
    try:
        if out is not None:
            out.open().write(body.encode())
            out.commit()
        else:
            sys.stdout.write(body)
            sys.stdout.flush()
    except OSError as exc:
        if args.out is None and isinstance(exc, BrokenPipeError):
            return reader_gone()
        say(f"cannot write {args.out or 'stdout'}: {exc.strerror or exc}")
        return 1
    if (note := trimmed_note(oldest, None if span is None else span.start, "report")) is not None:
        say(note)
    when = "the feed has no posts" if span is None else f"{doc['from']} to {doc['to']}"
    say(f"{doc['posts']} posts in {len(doc['chats'])} chats, {when}" + (f", to {args.out}" if args.out else ""))
    return 0
