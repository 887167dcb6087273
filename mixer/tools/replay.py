"""`mixer replay`: recordings published into a shared Redis, once or looping, with a progress line.

``add_replay_parser`` adds the subcommand; ``replay_command`` checks the options and the files, publishes
through ``mixer.ingest.replay.Replayer`` and shows its counters on stderr once a second until the end, a
signal or an error, each ending in one line. A ``--loop`` replay gets a run tag of its own (``new_run_tag``)
unless ``--keep-keys``; a one-shot replay keeps the recorded keys. Beside it, ``watch_drops`` says once when
the merge stage drops everything it publishes, and once when posts get through again. The pacing, planning
and re-stamping are the ingest stage's (``mixer.ingest.replay``); which Redis to use (``--redis``,
MIXER_REDIS_URL, a running `mixer run`) is chosen by the CLI before this runs.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from redis.exceptions import RedisError

from mixer import connect
from mixer.ingest.dropwatch import watch_drops
from mixer.ingest.publish import Publisher
from mixer.ingest.recorded import NO_RECORDS
from mixer.ingest.replay import Replayer, ReplayOptions, ReplayProgress, new_run_tag, recordings_problem
from mixer.keys import Keys
from mixer.options import NO_REDIS, SHARED, add_common
from mixer.runtime import redis_problem
from mixer.settings import Settings

LOG_EVERY = 10.0  # seconds between progress lines when stderr is not a terminal (a log, a CI job)


def add_replay_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add `mixer replay` (with --config, --redis, -v like every subcommand) to ``subparsers``."""
    parser = subparsers.add_parser(
        "replay",
        help="publish recorded files into the chat streams",
        description="Publish recordings in any recorded format (JSON Lines, JSON documents, SSE bodies; "
        "normalised Posts or raw X, Mastodon, Bluesky payloads) into their chats' streams at the recorded pace "
        "times --speed. Several files start together. See docs/recorded-format.md.",
    )
    add_common(parser, SHARED)
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="recordings to publish (not stdin)")
    parser.add_argument("--speed", type=float, default=1.0, help="x real time; 0 = as fast as possible (default 1)")
    parser.add_argument(
        "--loop", action="store_true", help="start again at the end, until stopped (each pass lasts at least 1 s)"
    )
    parser.add_argument(
        "--max-gap",
        type=float,
        metavar="S",
        help="cut silences longer than S recorded seconds to S (default: none cut)",
    )
    parser.add_argument(
        "--keep-time", action="store_true", help="keep recorded 'created' times (default: re-stamp to now)"
    )
    parser.add_argument(
        "--keep-keys",
        action="store_true",
        help="keep the recorded post keys on every --loop pass, so the merge stage drops repeats (default with --loop: "
        "every pass of every run gets keys of its own, KEY~<run>.<pass>; without --loop the recorded keys are "
        "always kept, so replaying a file twice is deduplicated)",
    )
    parser.set_defaults(func=replay_command)
    return parser


def replay_command(settings: Settings, args: argparse.Namespace) -> int:
    """`mixer replay`: 0 when every pass ran and posts were published (a Redis that goes away meanwhile is waited
    for), 1 when Redis does not answer at the start or nothing could be published (an empty file too), 2 for bad
    input, 130 when stopped by a signal; every failure is one line on stderr."""

    def say(message: str) -> None:
        print(f"mixer replay: {message}", file=sys.stderr)

    try:
        options = ReplayOptions(
            speed=args.speed,
            loop=args.loop,
            max_gap=args.max_gap,
            keep_time=args.keep_time,
            keep_keys=args.keep_keys,
            # A looping replay restarted (or run twice against a kept night) must not repeat an earlier run's keys.
            run_tag=new_run_tag(time.time()) if args.loop and not args.keep_keys else "",
            tag_texts=True,  # a soak must see every pass as cards, also right after an earlier run
        )
    except ValueError as exc:  # ReplayOptions names its fields: say the flags the user typed
        say("--" + str(exc).replace("max_gap", "max-gap"))
        return 2
    problem = recordings_problem(args.files)
    if problem is not None:
        say(problem)
        return 2
    if not settings.redis_url:
        say(f"publishes into a shared Redis; {NO_REDIS}")
        return 2
    try:
        return asyncio.run(_replay(settings, args.files, options, say))
    except (RedisError, OSError) as exc:
        say(f"stopped: {exc}")
        return 1


async def _replay(settings: Settings, files: list[Path], options: ReplayOptions, say: Callable[[str], None]) -> int:
    problem = await redis_problem(settings.redis_url)
    if problem is not None:
        say(problem)
        return 1
    keys = Keys(settings.key_prefix)
    redis = connect.client(settings.redis_url, keys.feed, socket_timeout=10)
    publisher = Publisher(redis, keys, settings.chat_tags, settings.chat_maxlen, role="mixer replay")
    replayer = Replayer(publisher, files, options)
    task = asyncio.ensure_future(replayer.run())

    shown = sys.stderr.isatty()  # a person watches: one progress line, rewritten in place every second

    def notice(line: str) -> None:
        if shown:
            print(file=sys.stderr)  # ends the progress line, which the next one starts again below
        say(line.removeprefix("replay: "))

    watching = asyncio.ensure_future(
        watch_drops(redis, keys, lambda: replayer.progress.published, notice, hint=_drop_hint(options))
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    started = logged = loop.time()
    unfollowed = False  # said that no post is in a followed chat
    try:
        while not task.done():
            await asyncio.wait([task], timeout=1.0)
            elapsed = max(loop.time() - started, 1e-9)
            progress, outage = replayer.progress, publisher.outage
            if not unfollowed and (line := unfollowed_notice(progress, settings.chat_tags, task.done())):
                notice(line)
                unfollowed = True
            waiting = "" if outage.since is None else f", waiting for Redis for {time.monotonic() - outage.since:.0f} s"
            line = f"replay: {progress.summary()} ({progress.published / elapsed:,.0f} posts/s{waiting})"
            if shown:
                print(f"\r{line}", end="", file=sys.stderr)
            elif task.done() or loop.time() - logged >= LOG_EVERY:  # a log: a line now and then, and the last
                logged = loop.time()
                print(line, file=sys.stderr)
        if shown:
            print(file=sys.stderr)
        if publisher.outage.outages:
            away = publisher.outage
            say(f"Redis was away {away.outages} time(s), {away.seconds:.1f} s in all; the replay waited for it")
        try:
            await task
        except asyncio.CancelledError:
            return 130
        progress = replayer.progress
        if progress.published:
            return 0
        if not progress.read and not progress.skipped:
            say(no_records(files))
            return 1
        if not unfollowed:
            say(nothing_published(progress))
        return 1
    finally:
        watching.cancel()
        await asyncio.wait([watching])
        await redis.aclose()


def unfollowed_notice(progress: ReplayProgress, followed: tuple[str, ...], finished: bool) -> str | None:
    """The line saying that no post of the replay is in a chat this deployment follows, once a pass has finished, the
    replay has ended or 100 posts were skipped for it; None while any post was published or none was skipped so."""
    skipped = progress.skipped["no_chat"]
    if progress.published or not skipped or not (finished or progress.passes or skipped >= 100):
        return None
    return (
        f"none of the {skipped:,} posts read is in a chat this deployment follows ({', '.join(followed)}): "
        "configure the recording's chats (MIXER_CHATS or [[chats]], docs/loadtools.md)"
    )


def nothing_published(progress: ReplayProgress) -> str:
    """The line ending a replay that read records but published no post (other than one in no followed chat)."""
    if progress.skipped["malformed"] == progress.read:
        return (
            f"nothing published: none of the {progress.read:,} records read is a post or a platform payload "
            "(the first malformed ones are logged above): is it a recording? See docs/recorded-format.md"
        )
    return f"nothing published: {progress.summary()}"


def no_records(files: list[Path]) -> str:
    """The line ending a replay whose files hold no record at all."""
    names = ", ".join(str(f) for f in files)
    held = "holds" if len(files) == 1 else "hold"
    return f"nothing published: {names} {held} {NO_RECORDS}"


def _drop_hint(options: ReplayOptions) -> str:
    """What ends the "dropped as duplicates" notice: the likely cause for these options, and the way out."""
    if options.run_tag:
        return ""  # its keys and texts are its own: no likely cause to name
    if options.loop:
        return " (same keys as an earlier run? drop --keep-keys)"
    return " (already replayed? without --loop the recorded keys are kept; --loop gives each run keys of its own)"
