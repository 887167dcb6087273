"""Recording a live night (`mixer record`): the feed, or what ingest publishes, as a recorded-stream file.

``record`` reads, from now on, either a profile's feed stream (``full``: the merged feed;
``wall`` or any shaped profile: its shaped stream) or, raw, every chat stream, with
XREAD BLOCK on a dedicated connection, and writes JSON Lines that ``mixer replay`` plays:
``#`` lines saying what, when and where, then one normalised Post a line (feed posts with
their feed id; raw posts once per publish: a copy in another chat stream is written again only when it
brings a chat the earlier copies did not carry, as a cross-post published apart does), flushed
after every read so a stop loses nothing already read. Edits, retractions and pins are not
recorded, except an update that brings a post into chats (into the recorded ones with ``--chats``; any
chat without): it gained them later (a cross-post merged after its first copy, ``joined_post``), so the
post is a line of its own again, with its chats as they stand, under its feed id. It stops after a
duration or count, or when ``stop`` is set (the CLI sets it on SIGINT/SIGTERM). A Redis that
goes away mid-recording is waited for and the recording resumes from its cursors.
``entry_post`` and ``header`` are pure. Not here: reading recordings
(``recorded``), replaying them (``replay``), making them up (``synth``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from mixer.backoff import Backoff
from mixer.codec import EDIT_FIELD, FIELD, unpack_item
from mixer.feed import joins
from mixer.ingest.outage import AWAY, Outage, backoff, where
from mixer.keys import Keys
from mixer.models import Post, normalize_tag
from mixer.options import NO_REDIS, add_common
from mixer.redact import redact
from mixer.settings import Settings
from mixer.streams import Entry, dedicated_client, last_id, raise_if_cancelling, read_new, text
from mixer.tools.stdout import reader_gone

BLOCK_MS = 500  # longest XREAD wait: how late a stop, a deadline or a progress line can be
BATCH = 1000
DRAIN_READS = 10  # raw: reads merged (and sorted by time) before writing


@dataclass(frozen=True, slots=True)
class RecordOptions:
    """What to record and when to stop (None: no limit of that kind)."""

    profile: str = "full"  # feed profile: "full" (the merged feed) or a shaped profile's name
    chats: tuple[str, ...] = ()  # feed: keep posts in any of these (empty: all); raw: the chat streams to read
    raw: bool = False  # the chat streams as ingest published them, instead of the feed
    duration: float | None = None  # seconds
    count: int | None = None  # posts


@dataclass(slots=True)
class RecordProgress:
    posts: int = 0  # lines written
    skipped: dict[str, int] = field(default_factory=dict)  # by reason: "not_post", "other_chat", "duplicate", ...

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def iso(ms: int) -> str:
    """Ms since the epoch as ISO 8601 UTC to the second (``2026-11-26T20:00:03Z``)."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def header(options: RecordOptions, streams: list[str], redis_url: str, keys: Keys, now_ms: int) -> list[str]:
    """The ``#`` lines opening a recording: what was recorded, when it started, from where."""
    if options.raw:
        what = "the chat streams as ingest published them (posts only, each copy that brought a new chat)"
    else:
        what = f"the live feed, profile {options.profile} (posts only, edits and retractions left out)"
        if options.chats:
            what += f", chats {', '.join(options.chats)}"
    return [
        f"# recorded by mixer record (chatmixer): {what}",
        f"# started: {iso(now_ms)}",
        f"# from: {redact(redis_url)}, key prefix {keys.prefix!r}, streams: {', '.join(streams) or '(none)'}",
    ]


def entry_post(entry: Entry, id_from: str = "entry") -> Post:
    """The Post of a stream entry, its id the entry's (``entry``: feed), its ``ref`` (shaped) or none (``""``: chat).

    Raises ValueError for an entry that is not a valid post.
    """
    entry_id, raw, kind = entry
    if kind != FIELD:
        raise ValueError("not a post")
    data: dict[str, Any] = unpack_item(entry_id, raw)
    if id_from != "entry":
        ref = data.get("ref")
        data["id"] = ref if id_from == "ref" and isinstance(ref, str) else ""
    return Post.from_dict(data)


def joined_post(entry: Entry, id_from: str, wanted: frozenset[str]) -> Post | None:
    """The post of a feed update that brings it into ``wanted`` (it added the only chats of it there, ``joined``),
    under its feed id: a recording of those chats never had it. With ``wanted`` empty (every chat), the post of
    any update that added chats: the line written before lacks them, and a replay of both unions them again as
    the merge stage did live. None for any other entry, or a bad one."""
    _, raw, kind = entry
    if kind != EDIT_FIELD:
        return None
    try:
        data = msgpack.unpackb(raw, raw=False)
        if not isinstance(data, dict) or not (joins(wanted, data) if wanted else data.get("joined")):
            return None
        post_id = data.get("ref") if id_from == "ref" else data.get("id")
        return Post.from_dict({**data, "id": post_id if isinstance(post_id, str) else ""})
    except (ValueError, TypeError, KeyError, msgpack.UnpackException):
        return None


def streams_for(options: RecordOptions, keys: Keys) -> list[str]:
    """The streams a recording reads (raw without chats: none; ``record`` then finds the chat streams)."""
    if options.raw:
        return [keys.chat(c) for c in options.chats]
    return [keys.feed if options.profile == "full" else keys.shaped(options.profile)]


def _line(post: Post) -> bytes:
    return json.dumps(post.to_dict(), ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


async def record(
    redis_url: str,
    keys: Keys,
    options: RecordOptions,
    out: IO[bytes],
    stop: asyncio.Event,
    *,
    ready: asyncio.Event | None = None,
    progress: Callable[[RecordProgress], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RecordProgress:
    """Record from now until the duration, the count or ``stop``; every line read is written and flushed.

    ``ready`` is set once the start cursors are taken (posts published after it are recorded);
    ``progress`` is called about once a second. A Redis that does not answer at the start raises; one that goes
    away later is waited for (capped backoff, one WARNING and one INFO) and the recording resumes where it was.
    """
    done = RecordProgress()
    redis = dedicated_client(redis_url, BLOCK_MS, keys.feed)
    outage, policy = Outage("mixer record", where(redis)), backoff()
    try:
        streams = streams_for(options, keys)
        if options.raw and not options.chats:
            streams = sorted([text(k) async for k in redis.scan_iter(match=keys.chat("*"), count=1000)])
        cursors = {s: await last_id(redis, s) for s in streams}
        start = clock()
        out.write(
            "".join(f"{h}\n" for h in header(options, streams, redis_url, keys, int(time.time() * 1000))).encode()
        )
        out.flush()
        if ready is not None:
            ready.set()
        wanted = frozenset(options.chats)
        seen: dict[str, frozenset[str]] = {}  # raw: each post key's chats written so far
        id_from = "" if options.raw else "entry" if options.profile == "full" else "ref"
        last_report = start
        while not stop.is_set() and cursors:
            if options.count is not None and done.posts >= options.count:
                break
            block = BLOCK_MS
            if options.duration is not None:
                left = options.duration - (clock() - start)
                if left <= 0:
                    break
                block = max(1, min(block, int(left * 1000)))
            got = await _read(redis, cursors, block, outage, policy)
            batch: list[Post] = []
            for _ in range(DRAIN_READS):
                if not got:
                    break
                for stream, entries in got.items():
                    for entry in entries:
                        cursors[stream] = entry[0]
                        try:
                            post = entry_post(entry, id_from)
                        except ValueError:
                            late = None if options.raw else joined_post(entry, id_from, wanted)
                            if late is None:
                                done.skip("not_post" if entry[2] != FIELD else "malformed")
                                continue
                            post = late
                        if options.raw:
                            # A publish writes every copy with all its chats: one line does. A copy that brings a
                            # chat (the post published apart in another chat) is a line of its own, so a replay
                            # publishes it apart too and the merge stage unions the chats as it did live.
                            known = seen.get(post.key, frozenset())
                            if known.issuperset(post.chats):
                                done.skip("duplicate")
                                continue
                            seen[post.key] = known.union(post.chats)
                        elif wanted and wanted.isdisjoint(post.chats):
                            done.skip("other_chat")
                            continue
                        batch.append(post)
                if not options.raw:
                    break
                # A blocked XREAD is answered with only the stream that woke it: read the others before sorting.
                got = await _read(redis, cursors, None, outage, policy)
            if options.raw:
                batch.sort(key=lambda p: p.created)  # several streams: keep the file in time order
            if options.count is not None:
                batch = batch[: options.count - done.posts]
            if batch:
                out.write(b"".join(_line(p) for p in batch))
                out.flush()
                done.posts += len(batch)
            if progress is not None and clock() - last_report >= 1.0:
                last_report = clock()
                progress(done)
        out.write(f"# ended: {iso(int(time.time() * 1000))}, {done.posts} posts\n".encode())
        out.flush()
        return done
    finally:
        await redis.aclose()


async def _read(
    redis: aioredis.Redis, cursors: dict[str, str], block: int | None, outage: Outage, policy: Backoff
) -> dict[str, list[Entry]]:
    """``read_new``, or nothing after a backoff while Redis is away (so the caller still sees a stop or a deadline)."""
    try:
        got = await read_new(redis, cursors, block, BATCH)
    except AWAY as exc:
        raise_if_cancelling()
        outage.failed(exc, "reading the feed")
        await asyncio.sleep(policy.next())
        return {}
    outage.answered()
    policy.reset()
    return got


def add_record_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add `mixer record` (with --config, --redis, -v like every subcommand) to ``subparsers``."""
    parser = subparsers.add_parser(
        "record",
        help="record the live feed (or, --raw, the chat streams) as a recorded-stream file",
        description="Write what a shared Redis carries from now on as normalised Post JSON Lines that "
        "mixer replay plays: a profile's feed, or with --raw every chat stream as ingest published it "
        "(a post once per publish). Stops after --duration or --count, or on Ctrl-C / SIGTERM. "
        "See docs/loadtools.md.",
    )
    add_common(parser, "the Redis carrying the night (default: $MIXER_REDIS_URL, else a running `mixer run`'s)")
    parser.add_argument("--out", type=Path, metavar="FILE", help="write here (default: stdout)")
    parser.add_argument("--profile", default="full", help="feed profile: full (default), wall, or another shaped one")
    parser.add_argument(
        "--chats",
        metavar="A,B",
        help="feed: only posts in these chats; --raw: these chat streams (default: every chat)",
    )
    parser.add_argument("--raw", action="store_true", help="record the chat streams (what ingest publishes)")
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: when stopped)")
    parser.add_argument("--count", type=int, metavar="N", help="stop after N posts (default: when stopped)")
    parser.set_defaults(func=record_command)
    return parser


def options_from_args(settings: Settings, args: argparse.Namespace) -> RecordOptions:
    """The options the flags ask for; ValueError naming the bad flag."""
    chats = tuple(dict.fromkeys(normalize_tag(c) for c in (args.chats or "").split(",") if c.strip()))
    if args.raw and not chats:
        chats = settings.chat_tags
    if args.profile not in settings.profile_names:
        raise ValueError(f"--profile must be one of {', '.join(settings.profile_names)}, got {args.profile!r}")
    if args.duration is not None and not (math.isfinite(args.duration) and args.duration > 0):
        raise ValueError(f"--duration must be a finite number of seconds more than 0, got {args.duration:g}")
    if args.count is not None and args.count < 1:
        raise ValueError("--count must be at least 1")
    return RecordOptions(args.profile, chats, args.raw, args.duration, args.count)


def record_command(settings: Settings, args: argparse.Namespace) -> int:
    """`mixer record`: record until the limit or a signal; 0 when done, 2 for a usage error, 1 on a Redis/file error."""

    def say(message: str) -> None:
        print(f"mixer record: {message}", file=sys.stderr, flush=True)

    if not settings.redis_url:
        say(f"records from a shared Redis; {NO_REDIS}")
        return 2
    try:
        options = options_from_args(settings, args)
    except ValueError as exc:
        say(str(exc))
        return 2

    async def main(out: IO[bytes]) -> RecordProgress:
        stop, ready = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(
            record(
                settings.redis_url,
                Keys(settings.key_prefix),
                options,
                out,
                stop,
                ready=ready,
                progress=lambda p: say(f"{p.posts:,} posts recorded"),
            )
        )
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait([task, waiting], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if ready.is_set():
            say(f"recording {'chat streams' if options.raw else f'the {options.profile} feed'}; Ctrl-C stops")
        return await task

    try:
        if args.out is not None:
            with args.out.open("wb") as out:
                done = asyncio.run(main(out))
        else:
            done = asyncio.run(main(sys.stdout.buffer))
    except (RedisError, OSError) as exc:
        if args.out is None and isinstance(exc, BrokenPipeError):
            return reader_gone()
        say(f"stopped: {exc}")
        return 1
    skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(done.skipped.items()))
    say(
        f"{done.posts:,} posts recorded"
        + (f" to {args.out}" if args.out else "")
        + (f" (skipped {skipped})" if skipped else "")
    )
    return 0
