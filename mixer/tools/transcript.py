"""Transcripts (`mixer transcript`): one chat's session, or the whole night, as Markdown, CSV or JSON.

``load_posts`` reads the feed in pages through ``mixer.feed.history`` (latest edit applied, retracted
and hidden posts left out); ``scope_from_args`` turns --chat, --from, --to and --tz into a ``Scope``;
``transcript_command`` loads, renders and writes (``write_transcript``: in pieces, never the whole
text at once). The question-and-answer grouping and the Markdown, CSV and JSON text (pure, escaping
untrusted text) are ``transcript_format``. Not here: how feed entries become posts, the key layout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import IO, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from mixer import connect
from mixer.feed import history
from mixer.keys import Keys
from mixer.models import normalize_tag
from mixer.options import NO_REDIS, add_common
from mixer.settings import Settings
from mixer.streams import id_ms, last_id, read_range, trimmed_from
from mixer.tools.outfile import OutFile
from mixer.tools.stdout import reader_gone
from mixer.tools.transcript_format import FORMATS, Post, Scope, in_order, render_chunks

T = TypeVar("T")


async def load_posts(
    redis: aioredis.Redis, keys: Keys, scope: Scope, page: int = 1000, progress: Callable[[int], None] | None = None
) -> list[Post]:
    """The posts in ``scope`` among every feed entry up to the newest at the start, as they stand now, in time order.

    Retracted and hidden posts are left out and edits applied (``mixer.feed.history``); ``progress``
    gets the count of feed entries read after each page.
    """
    newest = await last_id(redis, keys.feed)
    posts: list[Post] = []
    after, read = "0-0", 0
    while newest != "0-0":
        entries = await read_range(redis, keys.feed, after, newest, count=page)
        if not entries:
            break
        posts += [post for post in await history(redis, keys, entries) if scope.covers(post)]
        after, read = entries[-1][0], read + len(entries)
        if progress is not None:
            progress(read)
    return in_order(posts, scope)


def parse_zone(name: str) -> tzinfo:
    """The time zone named (IANA, e.g. ``America/New_York``; ``UTC``); ValueError naming it otherwise."""
    if name.strip().upper() in ("UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: give an IANA name such as America/New_York, or UTC") from None


def parse_time(value: str, tz: tzinfo, flag: str) -> int:
    """ISO 8601 date or date-time as ms since the epoch; one without an offset is read in ``tz``. ValueError naming
    ``flag`` unless it is a time that both UTC and ``tz`` can show (years 1 to 9999 in each)."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{flag}: {value!r} is not an ISO 8601 time such as 2024-05-01T20:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    ms = int(moment.timestamp() * 1000)
    if not showable(ms, UTC, tz):  # every time shown is in UTC (JSON, CSV) or in tz (Markdown, HTML)
        raise ValueError(f"{flag}: {value!r} is out of range (years 1 to 9999, in UTC and in the time zone)")
    return ms


def showable(ms: int, *zones: tzinfo) -> bool:
    """Whether ``ms`` since the epoch is a date in each of ``zones`` (years 1 to 9999 there)."""
    try:
        for zone in zones:
            datetime.fromtimestamp(ms / 1000, zone)
    except (OverflowError, ValueError, OSError):
        return False
    return True


def scope_from_args(settings: Settings, args: argparse.Namespace) -> Scope:
    """The ``Scope`` the command line asks for; ValueError saying what is wrong."""
    tz = parse_zone(args.tz)
    chat = normalize_tag(args.chat) if args.chat else None
    if chat is not None and settings.chats and chat not in settings.chat_tags:
        raise ValueError(f"--chat: #{chat} is not a chat of this event ({', '.join(settings.chat_tags)})")
    start = None if args.start is None else parse_time(args.start, tz, "--from")
    end = None if args.end is None else parse_time(args.end, tz, "--to")
    if start is not None and end is not None and start >= end:
        raise ValueError("--from must be before --to")
    return Scope(settings.event_name, settings.event_hashtag, chat, start, end, tz)


def add_transcript_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add `mixer transcript` (with --config, --redis, -v like every subcommand) to ``subparsers``."""
    parser = subparsers.add_parser(
        "transcript",
        help="export one chat's session, or the whole night, as Markdown, CSV or JSON",
        description="Write a transcript from the feed history in a shared Redis: posts as they stand now "
        "(latest edit; retracted and hidden posts left out), each numbered question with its answers. "
        "Times --from/--to are ISO 8601; without an offset they are read in --tz. See docs/transcript.md.",
    )
    add_common(parser, "the Redis holding the feed (default: $MIXER_REDIS_URL, else a running `mixer run`'s)")
    parser.add_argument("--chat", metavar="TAG", help="only this chat's posts (default: the whole night)")
    parser.add_argument(
        "--from", dest="start", metavar="ISO", help="posts created at or after this time (default: the first)"
    )
    parser.add_argument(
        "--to", dest="end", metavar="ISO", help="posts created before this time (default: the last too)"
    )
    parser.add_argument("--format", choices=FORMATS, default="md", help="md (default), csv or json")
    parser.add_argument("--out", type=Path, metavar="FILE", help="write here (default: stdout)")
    parser.add_argument(
        "--tz", default="UTC", metavar="ZONE", help="time zone of shown times and of --from/--to (default UTC)"
    )
    parser.set_defaults(func=transcript_command)
    return parser


def read_feed(url: str, stream: str, read: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
    """``read`` run on a client of ``url`` made for ``stream`` (10 s timeouts), closed after; a Redis that fails
    raises RedisError or OSError. The feed readers' (transcript, report) one way in."""

    async def run() -> T:
        redis = connect.client(url, stream, socket_timeout=10, socket_connect_timeout=5)
        try:
            return await read(redis)
        finally:
            await redis.aclose()

    return asyncio.run(run())


async def with_trim(redis: aioredis.Redis, stream: str, read: Awaitable[T]) -> tuple[T, int | None]:
    """``read``'s result and, when ``stream`` was trimmed (``trimmed_from``), the time in ms of its oldest entry
    still held: anything older is gone."""
    result = await read
    oldest = await trimmed_from(redis, stream)
    return result, None if oldest is None else id_ms(oldest)


def trimmed_note(oldest_ms: int | None, start_ms: int | None, what: str) -> str | None:
    """The line telling that ``what`` (starting at ``start_ms``, None: from the beginning) may lack posts because the
    feed no longer holds what came before ``oldest_ms``; None when it is whole."""
    if oldest_ms is None or (start_ms is not None and start_ms >= oldest_ms):
        return None
    when = datetime.fromtimestamp(oldest_ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return (
        f"note: the feed keeps only its newest entries ([redis] feed_maxlen) and has trimmed those before {when}: "
        f"this {what} lacks the posts that were in them"
    )


def write_transcript(fmt: str, posts: list[Post], scope: Scope, out: IO[bytes], piece: int = 1 << 16) -> None:
    """Write the transcript to ``out`` as UTF-8 in pieces of about ``piece`` characters: a JSON night of 176,000
    posts peaked at 1.5 GB when its 200 MB text was built whole, then encoded."""
    pending: list[str] = []
    held = 0
    for chunk in render_chunks(fmt, posts, scope):
        pending.append(chunk)
        held += len(chunk)
        if held >= piece:
            out.write("".join(pending).encode())
            pending, held = [], 0
    out.write("".join(pending).encode())


def transcript_command(settings: Settings, args: argparse.Namespace) -> int:
    """`mixer transcript`: write the transcript; 0 when written, 2 for a usage error or an --out that cannot be
    written (said before the feed is read), 1 when Redis or the file fails (an earlier file kept)."""
    show = sys.stderr.isatty()  # progress only where a person watches; a log gets the summary alone

    def say(message: str, progress: bool = False) -> None:
        if show or not progress:  # in a terminal each line replaces the progress line
            line = f"\r\033[Kmixer transcript: {message}" if show else f"mixer transcript: {message}"
            print(line, end="" if progress else "\n", file=sys.stderr)

    if not settings.redis_url:
        say(f"reads the feed from a shared Redis; {NO_REDIS}")
        return 2
    try:
        scope = scope_from_args(settings, args)
        out = None if args.out is None else OutFile(args.out)  # checked before a night is read for minutes
    except ValueError as exc:
        say(str(exc))
        return 2
    try:
        return _transcript(settings, args, scope, out, say)
    finally:
        if out is not None:
            out.discard()


def _transcript(
    settings: Settings, args: argparse.Namespace, scope: Scope, out: OutFile | None, say: Callable[..., None]
) -> int:
    """The rest of ``transcript_command`` once the flags and ``out`` are checked."""
    keys = Keys(settings.key_prefix)
    try:
        posts, oldest = read_feed(
            settings.redis_url,
            keys.feed,
            lambda redis: with_trim(
                redis,
                keys.feed,
                load_posts(redis, keys, scope, progress=lambda n: say(f"read {n:,} feed entries", True)),
            ),
        )
    except (RedisError, OSError) as exc:
        say(f"cannot read the feed from Redis: {exc}")
        return 1
    try:
        if out is not None:
            write_transcript(args.format, posts, scope, out.open())
            out.commit()
        else:
            sys.stdout.flush()
            write_transcript(args.format, posts, scope, sys.stdout.buffer)
            sys.stdout.buffer.flush()
    except OSError as exc:
        if args.out is None and isinstance(exc, BrokenPipeError):
            return reader_gone()
        say(f"cannot write {args.out or 'stdout'}: {exc.strerror or exc}")
        return 1
    if (note := trimmed_note(oldest, scope.start, "transcript")) is not None:
        say(note)
    say(f"{len(posts)} posts" + (f" to {args.out}" if args.out is not None else ""))
    return 0
