"""The merge stage: every chat stream in, one deduplicated, time-ordered feed out.

``ReorderBuffer`` is the pure part (clock passed in): it holds each post for a short
window so its twins from other chats can join it (their ``chats`` are unioned), then
releases posts in ``created`` order. ``MergeStage`` is the Redis loop around it.

Guarantee: every chat-stream entry is read (plain XREAD from stored cursors, no
consumer groups), and each post key reaches the feed at most once. The feed entries,
the seen-set and the cursors are written in one MULTI, and a cursor never passes an
entry still waiting in the buffer, so a crash at any point neither loses nor repeats
a post: after a restart, entries read again are recognised by the seen-set.
Seams for later stages: ``MergeStage.filters`` run on each released post before it
is written (dedupe beyond keys, moderation, shaping plug in there).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .codec import FIELD, pack_post, unpack_post
from .keys import Keys
from .models import Post
from .streams import id_before, read_new, text

log = logging.getLogger(__name__)

PostFilter = Callable[[Post], Post | None]


@dataclass(slots=True)
class Pending:
    post: Post
    arrived: float  # seconds, monotonic clock of the caller
    entries: list[tuple[str, str]] = field(default_factory=list)  # (chat, stream entry id)


class ReorderBuffer:
    """Posts waiting ``window`` seconds for twins; released in created order, each key once."""

    def __init__(self, window: float, max_pending: int = 50_000) -> None:
        self.window = window
        self.max_pending = max_pending
        self._by_key: dict[str, Pending] = {}
        self._arrivals: deque[str] = deque()
        self._chat_ids: dict[str, dict[str, None]] = {}  # per chat, pending entry ids in stream order

    def __len__(self) -> int:
        return len(self._by_key)

    def add(self, chat: str, entry_id: str, post: Post, now: float) -> None:
        """Hold ``post``; a post already held under the same key gains this entry's chats."""
        self._chat_ids.setdefault(chat, {})[entry_id] = None
        held = self._by_key.get(post.key)
        if held is None:
            self._by_key[post.key] = Pending(post, now, [(chat, entry_id)])
            self._arrivals.append(post.key)
            return
        held.entries.append((chat, entry_id))
        extra = tuple(c for c in post.chats if c not in held.post.chats)
        if extra:
            held.post = held.post.with_chats(held.post.chats + extra)

    def next_due(self, now: float) -> float | None:
        """Seconds until the oldest held post is released, or None when nothing is held."""
        if not self._arrivals:
            return None
        return max(0.0, self._by_key[self._arrivals[0]].arrived + self.window - now)

    def pop_ready(self, now: float) -> list[Pending]:
        """Posts whose window has passed (and the oldest beyond ``max_pending``), in created order."""
        out: list[Pending] = []
        while self._arrivals:
            held = self._by_key[self._arrivals[0]]
            if held.arrived + self.window > now and len(self._by_key) <= self.max_pending:
                break
            self._arrivals.popleft()
            del self._by_key[held.post.key]
            for chat, entry_id in held.entries:
                self._chat_ids[chat].pop(entry_id, None)
            out.append(held)
        out.sort(key=lambda p: (p.post.created, p.post.key))
        return out

    def safe_cursor(self, chat: str, read_cursor: str) -> str:
        """The furthest id of ``chat`` such that every entry up to it has left the buffer."""
        ids = self._chat_ids.get(chat)
        if ids:
            return id_before(next(iter(ids)))
        return read_cursor


class MergeStage:
    """Reads chat streams, writes the merged feed; at-most-once per post key, nothing lost."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        chats: Iterable[str],
        *,
        window: float = 0.5,
        feed_maxlen: int = 100_000,
        seen_max: int = 200_000,
        batch: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis  # a dedicated connection: XREAD BLOCK runs on it
        self._keys = keys
        self._chats = tuple(chats)
        self._feed_maxlen = feed_maxlen
        self._seen_max = seen_max
        self._batch = batch
        self._clock = clock
        self.buffer = ReorderBuffer(window)
        self.filters: list[PostFilter] = []
        self.counters: Counter[str] = Counter()
        self._read: dict[str, str] = {}  # chat -> last id read
        self._committed: dict[str, str] = {}  # chat -> cursor stored in Redis

    async def load_cursors(self) -> None:
        """Start from the stored cursors (``0-0`` for a chat never merged); drops anything held."""
        stored = await self._redis.hgetall(self._keys.merge_cursor)
        cursors = {text(k): text(v) for k, v in stored.items()}
        self._read = {chat: cursors.get(chat, "0-0") for chat in self._chats}
        self._committed = dict(self._read)
        self.buffer = ReorderBuffer(self.buffer.window, self.buffer.max_pending)

    async def step(self, max_block: float = 1.0) -> int:
        """Read what is new (waiting at most until the next post is due), release, write; returns posts written."""
        due = self.buffer.next_due(self._clock())
        block = max_block if due is None else min(max_block, due)
        streams = {self._keys.chat(c): self._read[c] for c in self._chats}
        got = await read_new(self._redis, streams, max(1, int(block * 1000)), self._batch)
        now = self._clock()
        for chat in self._chats:
            for entry_id, raw in got.get(self._keys.chat(chat), ()):
                self._read[chat] = entry_id
                self.counters["read"] += 1
                try:
                    post = unpack_post("", raw)
                except Exception as exc:  # a bad entry is skipped, never fatal
                    self.counters["malformed"] += 1
                    log.warning("merge: skipping malformed entry %s in chat %s: %s", entry_id, chat, exc)
                    continue
                self.buffer.add(chat, entry_id, post, now)
        return await self._release(now)

    async def _release(self, now: float) -> int:
        ready = [held.post for held in self.buffer.pop_ready(now)]
        cursors = {c: self.buffer.safe_cursor(c, self._read[c]) for c in self._chats}
        changed = {c: v for c, v in cursors.items() if v != self._committed.get(c)}
        if not ready and not changed:
            return 0
        posts: list[Post] = []
        if ready:
            scores = await self._redis.zmscore(self._keys.seen, [p.key for p in ready])
            for post, score in zip(ready, scores, strict=True):
                if score is not None:
                    self.counters["duplicate"] += 1
                    continue
                kept = self._filter(post)
                if kept is None:
                    self.counters["filtered"] += 1
                else:
                    posts.append(kept)
        async with self._redis.pipeline(transaction=True) as tx:
            for post in posts:
                tx.xadd(self._keys.feed, {FIELD: pack_post(post)}, maxlen=self._feed_maxlen, approximate=True)
            if posts:
                tx.zadd(self._keys.seen, {p.key: p.at for p in posts})
                tx.zremrangebyrank(self._keys.seen, 0, -self._seen_max - 1)
            if changed:
                tx.hset(self._keys.merge_cursor, mapping=changed)  # type: ignore[arg-type]
            await tx.execute()
        self._committed.update(changed)
        self.counters["written"] += len(posts)
        return len(posts)

    def _filter(self, post: Post) -> Post | None:
        for keep in self.filters:
            kept = keep(post)
            if kept is None:
                return None
            post = kept
        return post

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Merge until cancelled; reconnects with capped backoff and resumes from stored cursors."""
        backoff = 0.1
        while True:
            try:
                await self.load_cursors()
                if ready is not None:
                    ready.set()
                while True:
                    await self.step()
                    backoff = 0.1
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self.counters["reconnects"] += 1
                log.warning("merge: redis error (%s); retrying in %.1fs from stored cursors", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
