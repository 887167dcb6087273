"""The merge stage: every chat stream in, one deduplicated, time-ordered feed out.

``ReorderBuffer`` is the pure part (watermark passed in): it holds each post until
every chat stream has been read past its ingest time plus a short window, so its twins
from other chats join it (their ``chats`` are unioned), then releases posts in
``created`` order. ``MergeStage`` is the Redis loop around it.

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
import heapq
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .codec import EDIT_FIELD, FIELD, RETRACT_FIELD, pack_post, unpack_post
from .keys import Keys
from .models import Post
from .streams import id_before, id_key, raise_if_cancelling, read_new, text

log = logging.getLogger(__name__)

PostFilter = Callable[[Post], Post | None]


@dataclass(slots=True)
class Pending:
    post: Post
    stamp: int  # ms of the first stream entry id that carried it (Redis time of ingest)
    entries: list[tuple[str, str]] = field(default_factory=list)  # (chat, stream entry id)


class ReorderBuffer:
    """Posts held until the watermark passes their stamp plus ``window_ms``; released in created order, each key once.

    The watermark is the caller's: the oldest point every chat stream has been read up to,
    where a chat whose stream is drained counts as read up to now. So a backlog read in
    chunks still meets its twins from other chats, and a silent chat holds nothing back.
    """

    def __init__(self, window_ms: int, max_pending: int = 50_000) -> None:
        self.window_ms = window_ms
        self.max_pending = max_pending
        self._by_key: dict[str, Pending] = {}
        self._stamps: list[tuple[int, int, str]] = []  # heap of (stamp, seq, key)
        self._seq = 0
        self._chat_ids: dict[str, dict[str, None]] = {}  # per chat, pending entry ids in stream order

    def __len__(self) -> int:
        return len(self._by_key)

    def add(self, chat: str, entry_id: str, post: Post) -> None:
        """Hold ``post``; a post already held under the same key gains this entry's chats."""
        self._chat_ids.setdefault(chat, {})[entry_id] = None
        held = self._by_key.get(post.key)
        if held is None:
            stamp = id_key(entry_id)[0]
            self._by_key[post.key] = Pending(post, stamp, [(chat, entry_id)])
            self._seq += 1
            heapq.heappush(self._stamps, (stamp, self._seq, post.key))
            return
        held.entries.append((chat, entry_id))
        extra = tuple(c for c in post.chats if c not in held.post.chats)
        if extra:
            held.post = held.post.with_chats(held.post.chats + extra)

    def next_due(self) -> int | None:
        """The watermark (ms) at which the oldest held post is released, or None when nothing is held."""
        return self._stamps[0][0] + self.window_ms if self._stamps else None

    def pop_ready(self, watermark: int) -> list[Pending]:
        """Posts whose stamp + window is at or below ``watermark`` (and the oldest beyond ``max_pending``)."""
        out: list[Pending] = []
        while self._stamps:
            stamp, _, key = self._stamps[0]
            if stamp + self.window_ms > watermark and len(self._by_key) <= self.max_pending:
                break
            heapq.heappop(self._stamps)
            held = self._by_key.pop(key)
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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis  # a dedicated connection: XREAD BLOCK runs on it
        self._keys = keys
        self._chats = tuple(chats)
        self._feed_maxlen = feed_maxlen
        self._seen_max = seen_max
        self._batch = batch
        self._clock = clock
        self.buffer = ReorderBuffer(int(window * 1000))
        self.filters: list[PostFilter] = []
        self.counters: Counter[str] = Counter()
        self._read: dict[str, str] = {}  # chat -> last id read
        self._drained: set[str] = set()  # chats whose last read reached the end of their stream
        self._committed: dict[str, str] = {}  # chat -> cursor stored in Redis

    async def load_cursors(self) -> None:
        """Start from the stored cursors (``0-0`` for a chat never merged); drops anything held."""
        stored = await self._redis.hgetall(self._keys.merge_cursor)
        cursors = {text(k): text(v) for k, v in stored.items()}
        self._read = {chat: cursors.get(chat, "0-0") for chat in self._chats}
        self._committed = dict(self._read)
        self._drained = set()
        self.buffer = ReorderBuffer(self.buffer.window_ms, self.buffer.max_pending)

    async def step(self, max_block: float = 1.0) -> int:
        """Read what is new, release what the watermark allows, write; returns posts written.

        Waits for new entries only when every stream is drained, and then no longer than
        until the oldest held post is due.
        """
        block_ms: int | None = None
        if len(self._drained) == len(self._chats):
            due = self.buffer.next_due()
            wait = max_block * 1000 if due is None else min(max_block * 1000, due - self._clock() * 1000)
            block_ms = max(1, int(wait))
        streams = {self._keys.chat(c): self._read[c] for c in self._chats}
        got = await read_new(self._redis, streams, block_ms, self._batch)
        for chat in self._chats:
            entries = got.get(self._keys.chat(chat), [])
            if len(entries) < self._batch:
                self._drained.add(chat)
            else:
                self._drained.discard(chat)
            for entry_id, raw, kind in entries:
                self._read[chat] = entry_id
                self.counters["read"] += 1
                if kind in (EDIT_FIELD, RETRACT_FIELD):
                    self.counters["edit" if kind == EDIT_FIELD else "retraction"] += 1
                    continue  # applied to the feed by the dedupe/moderation stage (next issue)
                try:
                    post = unpack_post("", raw)
                except Exception as exc:  # a bad entry is skipped, never fatal
                    self.counters["malformed"] += 1
                    log.warning("merge: skipping malformed entry %s in chat %s: %s", entry_id, chat, exc)
                    continue
                self.buffer.add(chat, entry_id, post)
        return await self._release(self._watermark())

    def _watermark(self) -> int:
        """Ms up to which every chat stream has been read; a drained stream counts as read up to now."""
        now = int(self._clock() * 1000)
        marks = [now if c in self._drained else id_key(self._read[c])[0] for c in self._chats]
        return min(marks, default=now)

    async def _release(self, watermark: int) -> int:
        ready = [held.post for held in self.buffer.pop_ready(watermark)]
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
                    raise_if_cancelling()
                    backoff = 0.1
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                raise_if_cancelling()  # redis-py may turn a cancel into a connection error
                self.counters["reconnects"] += 1
                log.warning("merge: redis error (%s); retrying in %.1fs from stored cursors", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
