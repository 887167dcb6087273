"""Replay: publishing recorded streams into the chat streams at their recorded pace.

``plan`` merges several recordings, each aligned to start at offset zero, into one
stream of ``Scheduled`` items in offset order, with long silences cut to ``max_gap``.
``Schedule`` turns those offsets into due times on a clock it is given, so tests drive
it without sleeping. ``Replayer.run`` is the async loop the CLI calls: it sleeps on its
clock (the event loop's unless given) until the next post is due, re-stamps and re-keys it
(``key_suffix``: ``~<run_tag>.<pass>`` on every pass with a run tag, so a restarted replay never
repeats an earlier run's keys; ``~<pass>`` after the first without one; none with ``keep_keys``;
re-keyed texts are marked too, or the merge stage's text dedupe would fold them into earlier cards),
and publishes in batches through a ``Publisher``. A looping replay paces itself: a pass
lasts at least ``min_pass`` seconds, so a file with no time span (one line, newest first)
cannot spin; each pass is logged at DEBUG and a summary at INFO at most every
``SUMMARY_EVERY`` seconds. A record may hold several events (a retweet and its
original): they share the record's time and are published together; edits and
retractions go through the Publisher like posts. Files are read in a worker thread, a batch
at a time, never on the event loop; while Redis is away the Publisher waits it out and reading
pauses with it, so a replay resumes where it was and loses nothing. Reading and recognising files lives in
``recorded``; writing to Redis in ``ingest``.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TypeVar

import msgspec

from mixer.ingest.hashtags import ChatMatcher
from mixer.ingest.publish import Publisher
from mixer.ingest.recorded import Group, RecordError, read_grouped
from mixer.models import Edit, Event, Post, Retraction

log = logging.getLogger(__name__)

T = TypeVar("T")

RUN_TAG = re.compile(r"[A-Za-z0-9_-]{1,32}")  # what ReplayOptions.run_tag may hold: it ends up inside post keys
SUMMARY_EVERY = 60.0  # seconds between INFO summaries of a looping replay (each pass is logged at DEBUG)

Item = Event | Group | RecordError  # a record's events come as a Group; tests also plan bare events


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    speed: float = 1.0  # multiple of the recorded pace; 0 publishes as fast as possible
    loop: bool = False  # start again after the end, until cancelled (or max_passes)
    max_gap: float | None = None  # seconds of recorded time; longer silences are cut to this; None: no cap
    keep_time: bool = False  # keep the recorded `created` (else re-stamped to publish time); `at` is publish time
    # keep the recorded keys on every pass (the dedupe case: later passes are dropped as repeats); else each pass
    # after the first adds ~<pass> to them (or ~<run_tag>.<pass>, every pass), so a looping demo keeps showing posts
    keep_keys: bool = False
    # unless keep_keys, every pass including the first adds ~<run_tag>.<pass> to the keys, so a restarted replay
    # (a new tag) never collides with an earlier run's keys; "": no tag (the ~<pass> scheme above)
    run_tag: str = ""
    # with a run tag, end every text with " [<run_tag>.<pass>]" (else passes after the first end in " (pass N)"): the
    # merge stage folds a text seen within 10 minutes into the first card, so without it a replay restarted soon
    # after an earlier run shows nothing new until its texts are 10 minutes old. For load tests: a wall shows it
    tag_texts: bool = False
    batch: int = 500  # most posts per publish (one pipeline round-trip)
    max_passes: int | None = None  # stop after this many passes even with loop (tests, benchmarks)
    min_pass: float = 1.0  # seconds a looping pass lasts at least: a file with no time span must not spin

    def __post_init__(self) -> None:
        # `not x >= 0` also rejects NaN, which would make every due time unreachable.
        if not (math.isfinite(self.speed) and self.speed >= 0):
            raise ValueError(f"speed must be 0 (as fast as possible) or a positive number, got {self.speed}")
        if self.max_gap is not None and not (math.isfinite(self.max_gap) and self.max_gap >= 0):
            raise ValueError(f"max_gap must be 0 or more seconds, got {self.max_gap}")
        if self.batch < 1:
            raise ValueError(f"batch must be at least 1, got {self.batch}")
        if self.max_passes is not None and self.max_passes < 1:
            raise ValueError(f"max_passes must be at least 1, got {self.max_passes}")
        if not (math.isfinite(self.min_pass) and self.min_pass >= 0):
            raise ValueError(f"min_pass must be 0 or more seconds, got {self.min_pass}")
        if self.run_tag and not RUN_TAG.fullmatch(self.run_tag):
            raise ValueError(f"run tag must be 1-32 letters, digits, '-' or '_', got {self.run_tag!r}")


@dataclass(slots=True)
class ReplayProgress:
    """Counters of a replay, updated as it runs (safe to read from another task)."""

    read: int = 0  # records read, good and malformed, over all passes (ignored ones count only in skipped)
    published: int = 0  # posts written to at least one chat stream
    # reason -> records or posts: 'malformed', 'no_chat', and each parser's Ignored reason ('collection_like', ...)
    skipped: Counter[str] = field(default_factory=Counter)
    passes: int = 0  # passes finished
    edits: int = 0  # edits handed to the publisher
    retractions: int = 0  # retractions handed to the publisher
    pass_starts: list[float] = field(default_factory=list)  # wall-clock seconds (the Replayer's `wall`) each pass began

    def summary(self) -> str:
        skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items())) or "none"
        changes = f", {self.edits} edits, {self.retractions} retractions" if self.edits or self.retractions else ""
        return f"{self.read} read, {self.published} published{changes}, skipped: {skipped}, {self.passes} passes"


class Scheduled(NamedTuple):
    """An item of a replay and when it falls, in ms of (gap-capped) recorded time after the start."""

    offset: int
    source: int  # index of the recording it came from, for ties between recordings
    seq: int  # position within its recording, for ties within one
    item: Item


def paced(items: Iterable[Item], source: int = 0, max_gap_ms: int | None = None) -> Generator[Scheduled, None, None]:
    """The items of one recording with offsets from its first post, silences cut to max_gap_ms.

    Offsets never decrease: a post recorded earlier than the one before it (an unsorted file)
    keeps its place and falls at the same moment. A record's time is its newest post's
    ``created`` (a retweet is newer than the original it carries). A RecordError or a
    retraction falls with the item before it.
    """
    offset = 0
    last: int | None = None
    for seq, item in enumerate(items):
        created = _created(item)
        if created is not None:
            if last is not None:
                gap = max(0, created - last)
                offset += gap if max_gap_ms is None else min(gap, max_gap_ms)
            last = created
        yield Scheduled(offset, source, seq, item)


def _created(item: Item) -> int | None:
    if isinstance(item, Post):
        return item.created
    if isinstance(item, Edit):
        return item.post.created
    if isinstance(item, tuple):
        return max((t for t in map(_created, item) if t is not None), default=None)
    return None


def plan(recordings: Sequence[Iterable[Item]], max_gap: float | None = None) -> Generator[Scheduled, None, None]:
    """All recordings merged in offset order, each starting at offset 0; streamed, O(files) memory.

    Ties go to the earlier recording, then to file order. Closing this iterator closes the
    recordings that are generators (and so their files).
    """
    max_gap_ms = None if max_gap is None else round(max_gap * 1000)
    streams = [paced(items, source, max_gap_ms) for source, items in enumerate(recordings)]
    try:
        yield from heapq.merge(*streams)
    finally:
        for stream in streams:
            stream.close()
        for items in recordings:
            close = getattr(items, "close", None)
            if close is not None:
                close()


class Schedule:
    """Due times of planned items on a clock: offset / speed seconds after ``start``; speed 0: all due at once."""

    def __init__(self, planned: Iterator[Scheduled], start: float, speed: float) -> None:
        self._planned = planned
        self._start = start
        self._speed = speed
        self._head: Scheduled | None = next(planned, None)

    def due_at(self, offset_ms: int) -> float:
        """The clock time at which an item planned at offset_ms is due."""
        if self._speed == 0:
            return self._start
        return self._start + offset_ms / 1000 / self._speed

    def next_due(self) -> float | None:
        """Clock time the next item is due (may be in the past), or None when the plan is done."""
        return None if self._head is None else self.due_at(self._head.offset)

    def take_due(self, now: float, limit: int) -> list[Item]:
        """Items due at ``now``, in plan order, at most ``limit``; the rest stay for later calls."""
        out: list[Item] = []
        while self._head is not None and len(out) < limit and self.due_at(self._head.offset) <= now:
            out.append(self._head.item)
            self._head = next(self._planned, None)
        return out


def new_run_tag(now: float) -> str:
    """A run tag for a replay starting at ``now`` (epoch seconds): its ms in base 36, 8 characters until 2059, so
    runs started a millisecond or more apart never share one."""
    ms = int(now * 1000)
    digits = ""
    while True:
        ms, digit = divmod(ms, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + digits
        if ms == 0:
            return digits


def key_suffix(pass_no: int, run_tag: str = "") -> str:
    """What a pass adds to every key: ``~<run_tag>.<pass_no>`` with a tag (every pass, the first too), else
    ``~<pass_no>`` after the first pass and nothing on pass 0 (the recorded key)."""
    if run_tag:
        return f"~{run_tag}.{pass_no}"
    return "" if pass_no == 0 else f"~{pass_no}"


def restamp(
    post: Post, now_ms: int, pass_no: int, keep_time: bool, *, run_tag: str = "", tag_text: bool = False
) -> Post:
    """The post as published now: ``at`` = now, ``created`` = now unless kept, its key (and the keys it names:
    ``boost_of``, ``quote_of``, ``reply_to``) + ``key_suffix(pass_no, run_tag)``; its text ends in `` [<tag>.<pass>]``
    with ``tag_text`` and a tag, else after the first pass in `` (pass N)``, so the merge stage's text dedupe (repeats
    within 10 minutes) does not fold it into an earlier card. Pass 0 without a tag is the post as recorded, re-stamped.
    """
    suffix = key_suffix(pass_no, run_tag)
    if not suffix:
        return post.replace(created=post.created if keep_time else now_ms, at=now_ms)
    return post.replace(
        key=post.key + suffix,
        boost_of=_suffixed(post.boost_of, suffix),
        quote_of=_suffixed(post.quote_of, suffix),
        reply_to=_suffixed(post.reply_to, suffix),
        text=_marked(post.text, pass_no, run_tag if tag_text else ""),
        created=post.created if keep_time else now_ms,
        at=now_ms,
    )


def _suffixed(key: str | None, suffix: str) -> str | None:
    return None if key is None else key + suffix


def _marked(text: str, pass_no: int, run_tag: str) -> str:
    # Words, not punctuation or a link: the merge stage's text fingerprint ignores those.
    if run_tag:
        return f"{text} [{run_tag}.{pass_no}]"
    return f"{text} (pass {pass_no + 1})" if pass_no > 0 else text


def restamp_event(
    event: Event, now_ms: int, pass_no: int, keep_time: bool, *, run_tag: str = "", tag_text: bool = False
) -> Event:
    """``restamp`` for any event: an edit's post likewise, a retraction's key gets the same suffix."""
    if isinstance(event, Post):
        return restamp(event, now_ms, pass_no, keep_time, run_tag=run_tag, tag_text=tag_text)
    if isinstance(event, Edit):
        return Edit(restamp(event.post, now_ms, pass_no, keep_time, run_tag=run_tag, tag_text=tag_text))
    suffix = key_suffix(pass_no, run_tag)
    return msgspec.structs.replace(event, key=event.key + suffix) if suffix else event


def recordings_problem(paths: Iterable[str | Path]) -> str | None:
    """Why these recordings cannot be replayed, in one line, or None: stdin (``-``: a replay plans from its files
    and reads them again on every pass), a directory, a missing file, a device or pipe."""
    given = [Path(p) for p in paths]
    if any(str(p) == "-" for p in given):
        return "'-' (stdin) cannot be replayed: give a file (save stdin first: mixer normalize - > night.jsonl)"
    folders = [str(p) for p in given if p.is_dir()]
    if folders:
        return f"a recording is a file, not a directory: {', '.join(folders)}"
    missing = [str(p) for p in given if not p.exists()]
    if missing:
        return f"recording not found: {', '.join(missing)}"
    odd = [str(p) for p in given if not p.is_file()]  # a device, a pipe, a socket: a replay reads it on every pass
    return f"a recording is a regular file, not a device or pipe: {', '.join(odd)}" if odd else None


class Replayer:
    """Publishes recordings through a Publisher at their recorded pace times ``speed``.

    Each post is published once per pass, no earlier than its due time, in plan order;
    at-least-once as the Publisher is. A malformed record, an ignored one (a like, a notice)
    or a post in no configured chat is counted in ``progress`` and skipped, never raised.
    Platform payloads get their chats from ``matcher`` (default: every hashtag; the
    Publisher then keeps the configured chats only). ``clock`` and ``sleep`` pace it
    (default: the event loop's clock and ``asyncio.sleep``); ``wall`` re-stamps posts.
    """

    def __init__(
        self,
        publisher: Publisher,
        paths: Sequence[str | Path],
        options: ReplayOptions,
        *,
        wall: Callable[[], float] = time.time,
        matcher: ChatMatcher | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not paths:
            raise ValueError("nothing to replay: no recording given")
        self._publisher = publisher
        self._paths = [Path(p) for p in paths]
        self._options = options
        self._wall = wall  # re-stamps posts; self._clock paces them
        self._clock = clock
        self._sleep = sleep
        self._matcher = matcher or ChatMatcher(None)
        self.progress = ReplayProgress()

    async def run(self) -> ReplayProgress:
        """Replay every pass to the end (forever with loop, up to max_passes); CancelledError propagates."""
        problem = recordings_problem(self._paths)
        if problem is not None:
            raise FileNotFoundError(problem)
        opts = self._options
        clock = self._clock or asyncio.get_running_loop().time
        pass_no = 0
        summarised = clock()
        while True:
            posts_before = self._posts_read()
            started = clock()
            await self._run_pass(pass_no, clock)
            pass_no += 1
            self.progress.passes = pass_no
            if not opts.loop or (opts.max_passes is not None and pass_no >= opts.max_passes):
                log.info("replay done: %s", self.progress.summary())
                return self.progress
            if self._posts_read() == posts_before:
                # Looping over recordings without a single post would spin forever.
                log.warning("replay stops looping: pass %d held no posts", pass_no)
                return self.progress
            if clock() - summarised >= SUMMARY_EVERY:
                summarised = clock()
                log.info("replay: %s", self.progress.summary())
            else:
                log.debug("replay pass %d done: %s", pass_no, self.progress.summary())
            rest = started + opts.min_pass - clock()
            if rest > 0:
                await self._sleep(rest)

    def _posts_read(self) -> int:
        return self.progress.read - self.progress.skipped["malformed"]

    async def _run_pass(self, pass_no: int, clock: Callable[[], float]) -> None:
        wall = self._wall()
        self.progress.pass_starts.append(wall)
        now_ms = int(wall * 1000)
        # Files are read and parsed in a worker thread, one batch at a time, so the event loop stays free for the
        # other tasks of the process; the thread counts ignored records here, merged into progress after each batch.
        ignored: Counter[str] = Counter()
        recordings = [
            read_grouped(path, self._matcher, now_ms, log_errors=pass_no == 0, ignored=ignored) for path in self._paths
        ]
        planned = plan(recordings, self._options.max_gap)
        try:
            start = clock()
            schedule = await _off_loop(lambda: Schedule(planned, start, self._options.speed))
            while (due := schedule.next_due()) is not None:
                delay = due - clock()
                if delay > 0:
                    await self._sleep(delay)
                items = await _off_loop(functools.partial(schedule.take_due, clock(), self._options.batch))
                self.progress.skipped.update(ignored)
                ignored.clear()
                # Waits while Redis is away (the Publisher rides it out): nothing more is read meanwhile, so the
                # batch in hand is all this holds, and the pass resumes where it was once Redis is back.
                await self._publish(items, pass_no)
            self.progress.skipped.update(ignored)
        finally:
            planned.close()

    async def _publish(self, items: list[Item], pass_no: int) -> None:
        progress = self.progress
        progress.read += len(items)
        now_ms = int(self._wall() * 1000)
        opts = self._options
        keyed, run_tag = (0, "") if opts.keep_keys else (pass_no, opts.run_tag)
        events: list[Event] = []
        for item in items:
            if isinstance(item, RecordError):
                progress.skipped["malformed"] += 1
                continue
            for event in item if isinstance(item, tuple) else (item,):
                restamped = restamp_event(
                    event, now_ms, keyed, opts.keep_time, run_tag=run_tag, tag_text=opts.tag_texts
                )
                events.append(restamped)
        if not events:
            return
        posts = sum(isinstance(e, Post) for e in events)
        progress.edits += sum(isinstance(e, Edit) for e in events)
        progress.retractions += sum(isinstance(e, Retraction) for e in events)
        published = await self._publisher.publish(events)
        progress.published += published
        if published < posts:
            progress.skipped["no_chat"] += posts - published


async def _off_loop(call: Callable[[], T]) -> T:
    """``call()`` in a worker thread. Cancelled, it still waits for the thread to finish its call (one batch of a
    file on disk), so the reader it was using can then be closed: a generator cannot be closed while it runs."""
    work = asyncio.ensure_future(asyncio.to_thread(call))
    try:
        return await asyncio.shield(work)
    finally:
        if not work.done():
            await asyncio.wait([work])


async def replay(publisher: Publisher, paths: Sequence[str | Path], options: ReplayOptions) -> ReplayProgress:
    """Run a Replayer to the end and return its counters (see ``Replayer.run``)."""
    return await Replayer(publisher, paths, options).run()
