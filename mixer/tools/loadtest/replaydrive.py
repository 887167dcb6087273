"""Driven load for `mixer rehearse`: a recording replayed at its recorded pace times N, looping, and the feed watched.

``RecordingDriver`` publishes recordings through the ingest stage's ``Replayer`` (``ReplayOptions(speed, loop=True,
run_tag=...)``) and a ``Publisher``, as `mixer replay --loop` would: every pass's keys end in ``~<run tag>.<pass>``,
which is how this run's posts are told from any other. What every client should get is not what was published
(the merge stage folds cross-posts, boosts and repeated texts into other cards, by design) but what the merge stage
wrote into the feed: ``FeedWatch`` reads the feed stream from where it stood at the start (plain XRANGE, no blocking
read) and counts this run's new cards. Not here: the clients, the figures, the verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

import redis.asyncio as aioredis

from mixer import connect
from mixer.codec import FIELD, unpack_item
from mixer.ingest.publish import Publisher
from mixer.ingest.replay import Replayer, ReplayOptions
from mixer.keys import Keys
from mixer.options import NO_REDIS
from mixer.settings import Settings
from mixer.streams import last_id, read_range
from mixer.tools.loadtest.client import is_driven
from mixer.tools.loadtest.options import passes

WATCH_EVERY = 0.25  # seconds between reads of the feed stream when it has nothing new
WATCH_COUNT = 1000  # entries per read


class FeedWatch:
    """This run's posts as the merge stage wrote them to the feed: each driven key counted once, as a new card."""

    def __init__(self, redis: aioredis.Redis, feed: str, marker: str, chats: frozenset[str] | None = None) -> None:
        self.redis, self.feed, self.marker, self.chats = redis, feed, marker, chats
        self.keys: set[str] = set()
        self.wanted: set[str] = set()  # of ``keys``, the cards that pass the clients' ``chats`` filter
        self.cursor = "0-0"

    async def start(self) -> None:
        """Start from the feed's newest entry: what came before is not this run's."""
        self.cursor = await last_id(self.redis, self.feed)

    async def read(self) -> int:
        """Read what the feed got since the last read; returns entries read (0: caught up)."""
        entries = await read_range(self.redis, self.feed, self.cursor, count=WATCH_COUNT)
        for entry_id, payload, kind in entries:
            self.cursor = entry_id
            if kind == FIELD:
                item = unpack_item(entry_id, payload)
                key = item.get("key")
                if isinstance(key, str) and is_driven(key, self.marker):
                    self.keys.add(key)
                    if passes(self.chats, item.get("chats") or ()):
                        self.wanted.add(key)
        return len(entries)

    async def run(self) -> None:
        """Read until cancelled, pausing only when caught up."""
        while True:
            if await self.read() < WATCH_COUNT:
                await asyncio.sleep(WATCH_EVERY)


class RecordingDriver:
    """Replays ``files`` at ``speed`` times their pace, looping until ``run``'s duration ends (see the module)."""

    def __init__(
        self,
        settings: Settings,
        files: Sequence[Path],
        speed: float,
        run_tag: str,
        chats: frozenset[str] | None = None,
    ) -> None:
        self.settings, self.files, self.run_tag = settings, list(files), run_tag
        self.chats = chats  # the clients' chats filter (--url's chats=): None, every chat
        # tag_texts: a rehearsal run again within 10 minutes of the last must not see its texts folded into the
        # last run's cards (it had found 1 new card of 34 posts published, and failed for it)
        self.options = ReplayOptions(
            speed=speed, loop=True, run_tag=run_tag, max_gap=settings.demo_max_gap, tag_texts=True
        )
        self.marker = f"~{run_tag}."
        self.published = 0
        self.pass_starts: list[float] = []
        self.settle_s = settings.window_ms / 1000 + 2 * WATCH_EVERY  # the merge's reorder window, then a read
        self.skipped: dict[str, int] = {}
        self._redis: aioredis.Redis | None = None
        self._watch: FeedWatch | None = None
        self._watching: asyncio.Task[None] | None = None

    async def prepare(self) -> None:
        """Connect to Redis; raises ValueError or RedisError with a reason."""
        if not self.settings.redis_url:
            raise ValueError(f"a rehearsal publishes into the deployment's Redis: {NO_REDIS}")
        keys = Keys(self.settings.key_prefix)
        self._redis = connect.client(self.settings.redis_url, keys.feed, socket_timeout=10)
        try:
            await self._redis.ping()
        except BaseException:
            await self.aclose()
            raise
        self._watch = FeedWatch(self._redis, keys.feed, self.marker, self.chats)

    async def run(self, duration: float) -> None:
        """Replay for ``duration`` seconds, pass after pass, watching the feed meanwhile (and after: ``settle``)."""
        assert self._redis is not None and self._watch is not None, "prepare() first"
        s = self.settings
        await self._watch.start()
        self._watching = asyncio.create_task(self._watch.run())
        publisher = Publisher(self._redis, Keys(s.key_prefix), s.chat_tags, s.chat_maxlen, role="mixer rehearse")
        replayer = Replayer(publisher, self.files, self.options)
        replaying = asyncio.create_task(replayer.run())
        try:
            done, _ = await asyncio.wait([replaying], timeout=duration)
            if done:
                replaying.result()  # a replay that ended early (no post in any chat) raised or returned: say why
        finally:
            replaying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await replaying
            progress = replayer.progress
            self.published, self.pass_starts = progress.published, list(progress.pass_starts)
            self.skipped = dict(progress.skipped)

    def expected(self) -> int:
        """This run's cards in the feed so far that pass the clients' chats filter: what every client should get."""
        return len(self._watch.wanted) if self._watch is not None else 0

    def in_feed(self) -> int:
        """This run's cards in the feed so far, whatever their chats."""
        return len(self._watch.keys) if self._watch is not None else 0

    async def settle(self) -> None:
        """Stop watching, after one last read of what the feed holds now."""
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching
            self._watching = None
        if self._watch is not None and self._redis is not None:
            while await self._watch.read() == WATCH_COUNT:
                pass

    async def aclose(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching
            self._watching = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
