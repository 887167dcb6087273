"""Driven load for `mixer loadtest`: posts published into the chat streams at a fixed rate, as ingest would.

``Driver`` writes synthetic posts, or a recording's posts again and again (each with a key and text of its own
so dedupe never folds two), stamped when published, keyed under a run's marker so loss can be counted. ``Drive``
is what the load test needs of any driver (``mixer.tools.loadtest.replaydrive`` is the other one);
``client.is_driven`` says which keys a run drove.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Protocol

import redis.asyncio as aioredis

from mixer import connect
from mixer.ingest.hashtags import ChatMatcher
from mixer.ingest.publish import Publisher
from mixer.ingest.recorded import read_events
from mixer.keys import Keys
from mixer.models import Author, Post
from mixer.options import NO_REDIS
from mixer.settings import Settings
from mixer.tools.loadtest.options import passes


def recorded_posts(settings: Settings, path: Path) -> list[Post]:
    """The posts of a recording that a replay drive publishes: those in a configured chat, boosts left out."""
    events = read_events(path, ChatMatcher(settings.chat_tags), int(time.time() * 1000), log_errors=False)
    return [e for e in events if isinstance(e, Post) and e.boost_of is None]


def driven_chats(settings: Settings, replay_file: Path | None) -> set[str]:
    """The chats a ``Driver`` publishes into (a post reaches only its configured chats' streams, and its card carries
    those): a recording's posts' configured chats, else (synth) every configured chat."""
    if replay_file is None:
        return set(settings.chat_tags)
    configured = set(settings.chat_tags)
    return {chat for post in recorded_posts(settings, replay_file) for chat in post.chats if chat in configured}


class Drive(Protocol):
    """What a load test needs of whatever drives posts; ``expected`` is what every client should get."""

    marker: str  # keys of the driven posts, as ``is_driven`` matches them
    published: int  # posts written to at least one chat stream
    pass_starts: list[float]  # wall-clock time each pass through a recording began (empty: no recording)
    settle_s: float  # seconds after driving before ``expected`` is complete (the merge's reorder window, ...)

    async def prepare(self) -> None: ...
    async def run(self, duration: float) -> None: ...
    def expected(self) -> int: ...
    async def settle(self) -> None: ...
    async def aclose(self) -> None: ...


class Driver:
    """Publishes posts into the chat streams at ``rate`` posts/s, each keyed under ``marker`` for loss counting."""

    def __init__(
        self,
        settings: Settings,
        rate: float,
        replay_file: Path | None,
        marker: str,
        chats: frozenset[str] | None = None,
    ) -> None:
        self.settings, self.rate, self.replay_file, self.marker = settings, rate, replay_file, marker
        self.chats = chats  # the clients' chats filter (--url's chats=): None, every chat
        self.published = 0  # posts written to at least one chat stream
        self.wanted = 0  # of those, the posts that pass ``chats``
        self.pass_starts: list[float] = []
        self.settle_s = 0.0  # every published post is expected at once
        self._posts: list[Post] = []
        self._redis: aioredis.Redis | None = None

    async def prepare(self) -> None:
        """Connect to Redis and read the recording; raises ValueError or RedisError with a reason."""
        if not self.settings.redis_url:
            raise ValueError(f"driving load writes to a shared Redis: {NO_REDIS}")
        if self.replay_file is not None:
            self._posts = recorded_posts(self.settings, self.replay_file)
            if not self._posts:
                raise ValueError(f"{self.replay_file}: no post in any configured chat to replay")
        self._redis = connect.client(self.settings.redis_url, Keys(self.settings.key_prefix).feed)
        try:
            await self._redis.ping()
        except BaseException:
            await self.aclose()
            raise

    def _post(self, n: int, now_ms: int) -> Post:
        """Post ``n`` of the run, stamped now; a text unique to it so dedupe never folds two of them."""
        key = f"{self.marker}{n}"
        if self._posts:
            post = self._posts[n % len(self._posts)]
            return post.replace(key=key, text=f"{post.text} ({n})", created=now_ms, at=now_ms)
        tags = self.settings.chat_tags
        who = n % 97
        return Post(
            key=key,
            source="synth",
            chats=(tags[n % len(tags)],),
            author=Author(handle=f"load{who}", name=f"Load tester {who}"),
            text=f"load test post {n} of {self.marker.split(':')[1]}: what is the one tool you use every day?",
            url=f"https://example.invalid/loadtest/{n}",
            created=now_ms,
            at=now_ms,
        )

    def expected(self) -> int:
        """Every driven post has a key and text of its own: each one is a card, which every client gets when its
        chats pass the clients' filter (all of them without one)."""
        return self.published if self.chats is None else self.wanted

    async def settle(self) -> None:
        """Nothing to wait for: ``expected`` is known as soon as a post is published."""

    async def run(self, duration: float) -> None:
        """Publish for ``duration`` seconds, paced on the loop clock; a recording over and over, each pass's start
        noted in ``pass_starts`` (its posts keep fresh keys, ``loadtest:<run>:<n>``, so no pass is a repeat)."""
        assert self._redis is not None, "prepare() first"
        s = self.settings
        publisher = Publisher(self._redis, Keys(s.key_prefix), s.chat_tags, s.chat_maxlen)
        size, tags = len(self._posts), set(s.chat_tags)
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        while (now := loop.time()) < start + duration:
            due = int((now - start) * self.rate) + 1
            if due > n:
                now_ms = int(time.time() * 1000)
                if size:
                    self.pass_starts += [now_ms / 1000] * (
                        (due - 1) // size - (n - 1) // size
                    )  # multiples of size in [n, due)
                batch = [self._post(i, now_ms) for i in range(n, due)]
                self.published += await publisher.publish(batch)
                self.wanted += sum(1 for post in batch if passes(self.chats, set(post.chats) & tags))
                n = due
            await asyncio.sleep(min(0.02, (n + 1) / self.rate - (loop.time() - start)))

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
