"""Publishing parsed events into the chat streams, follower cursors and what followers remember.

``Publisher.publish`` writes each post to the stream of every configured chat it belongs
to, in one round-trip per batch; with a cursor, the batch and the follower's cursor are
written in one MULTI, so a follower restarted at any moment resumes exactly after what
it published (no gap, no repeat). Edits and retractions travel the same streams as
entries of their own kind (fields ``u`` and ``r``). A post in no configured chat is
counted and dropped. The merge stage, not this module, removes duplicates. ``Recall`` is a
follower's memory of what it published, kept beside its cursor across restarts.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgpack
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from mixer.codec import EDIT_FIELD, FIELD, RETRACT_FIELD, pack_post
from mixer.keys import Keys
from mixer.models import Edit, Event, Post, Retraction
from mixer.settings import Settings
from mixer.streams import raise_if_cancelling, text

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")


class Publisher:
    """Writes events to chat streams; at-least-once without a cursor, exactly-once with one."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        chats: Iterable[str],
        maxlen: int,
        active: Callable[[str], bool] | None = None,
    ) -> None:
        self._redis = redis
        self._active = active  # a chat's posts are published only while this says it is followed (its slot)
        self._keys = keys
        self._chats = tuple(dict.fromkeys(chats))
        self._chat_set = frozenset(self._chats)
        self._maxlen = maxlen
        self.counters: Counter[str] = Counter()

    @property
    def keys(self) -> Keys:
        return self._keys

    @property
    def redis(self) -> aioredis.Redis:
        """The Redis it writes to, for a follower's helpers that keep state beside the streams (a cache)."""
        return self._redis

    def recall(self, name: str, size: int) -> Recall:
        """Follower ``name``'s memory in the same Redis (at most ``2 x size`` entries)."""
        return Recall(self._redis, self._keys, name, size)

    def route(self, post: Post) -> Post | None:
        """The post restricted to configured chats followed now, or None when it belongs to none (nothing counted)."""
        chats = tuple(c for c in post.chats if c in self._chat_set)
        if chats and self._active is not None:
            followed = tuple(c for c in chats if self._active(c))
            if not followed:
                return None
            chats = followed
        if not chats:
            return None
        return post if chats == post.chats else post.with_chats(chats)

    async def publish(
        self,
        events: Iterable[Event],
        cursor: tuple[str, str] | None = None,
        recall: tuple[Recall, Mapping[str, str]] | None = None,
    ) -> int:
        """Append each event to its chats' streams, with ``cursor`` stored atomically (and ``recall``'s entries
        remembered in the same transaction); returns posts published."""
        if recall is not None:
            await recall[0].make_room(len(recall[1]))
        pipe = self._redis.pipeline(transaction=cursor is not None)
        published = writes = 0
        for event in events:
            if isinstance(event, Retraction):
                chats = tuple(c for c in event.chats if c in self._chat_set) or self._chats
                raw = msgpack.packb({"key": event.key, "source": event.source}, use_bin_type=True)
                fields = {RETRACT_FIELD: raw}
                self.counters["retractions"] += 1
            else:
                post = event.post if isinstance(event, Edit) else event
                routed = self.route(post)
                if routed is None:
                    off = "skipped_no_chat" if self._chat_set.isdisjoint(post.chats) else "skipped_off_slot"
                    self.counters[off] += 1
                    continue
                chats = routed.chats
                fields = {EDIT_FIELD if isinstance(event, Edit) else FIELD: pack_post(routed)}
                if isinstance(event, Edit):
                    self.counters["edits"] += 1
                else:
                    published += 1
            for chat in chats:
                pipe.xadd(self._keys.chat(chat), fields, maxlen=self._maxlen, approximate=True)  # type: ignore[arg-type]
                writes += 1
        if cursor is not None:
            pipe.hset(self._keys.ingest_cursor, cursor[0], cursor[1])
        if recall is not None and recall[1]:
            recall[0].stage(pipe, recall[1])
            writes += 1
        if writes or cursor is not None:
            await pipe.execute()
            raise_if_cancelling()
        self.counters["published"] += published
        return published


def follow_gate(
    settings: Settings, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> Callable[[str], bool] | None:
    """Which chats are followed right now, from each chat's ``follow`` (or the event's): always, never, or
    during its scheduled slot plus ``follow_margin_minutes``; the event's own hashtag always. None: all, always."""
    modes = {c.tag: c.follow or settings.follow for c in settings.chats}
    if all(mode == "always" for mode in modes.values()):
        return None
    from mixer.schedule import Schedule, is_live

    margin = timedelta(minutes=settings.follow_margin_minutes)
    slots = {c.tag: Schedule.parse(c.schedule) for c in settings.chats if c.schedule}

    def active(chat: str) -> bool:
        mode = modes.get(chat, "always")
        if chat == settings.event_hashtag or mode == "always":
            return True
        if mode == "never":
            return False
        slot = slots.get(chat)
        return slot is None or is_live(slot, clock(), margin)

    return active


def remember(memory: OrderedDict[K, V], entries: Iterable[tuple[K, V]], limit: int) -> None:
    """Put ``entries`` in a follower's bounded in-memory memory, newest last; past ``limit``, the oldest go."""
    for key, value in entries:
        memory[key] = value
        memory.move_to_end(key)
    forget_oldest(memory, limit)


def forget_oldest(memory: OrderedDict[K, V], limit: int) -> None:
    """Bound an in-memory memory (a follower's, a reader's, the webhook's) to its ``limit`` newest entries."""
    while len(memory) > limit:
        memory.popitem(last=False)


class Recall:
    """A follower's memory of what it published (post key -> chats, status id -> uri), kept in Redis beside its
    cursor so that after a restart it still routes the deletes and edits of posts it published before.

    Bounded without per-field expiry: two hashes (``Keys.ingest_recall`` ``new`` and ``old``) of at most ``size``
    entries each; when ``new`` is full it becomes ``old`` (the previous ``old`` is dropped). So the last ``size``
    to ``2 x size`` entries are kept. Entries are written in the same transaction as the events they describe."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, name: str, size: int) -> None:
        self._redis = redis
        self._new = keys.ingest_recall(name, "new")
        self._old = keys.ingest_recall(name, "old")
        self.size = size
        self._count = 0  # entries in ``new`` (from ``load``, then counted; a failed write leaves it a little high)

    async def load(self) -> dict[str, str]:
        """Everything remembered, older generation first (a key in both: the newer value)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(self._old)
        pipe.hgetall(self._new)
        old, new = await pipe.execute()
        self._count = len(new)
        return {text(k): text(v) for k, v in (*old.items(), *new.items())}

    async def make_room(self, adding: int) -> None:
        """Before writing ``adding`` entries: turn a full ``new`` into ``old``."""
        if self._count and self._count + adding > self.size:
            with contextlib.suppress(ResponseError):  # (no ``new`` to rename: someone removed it)
                await self._redis.rename(self._new, self._old)
            self._count = 0

    def stage(self, pipe: Pipeline, entries: Mapping[str, str]) -> None:
        """Add writing ``entries`` to a pipeline (the caller's transaction)."""
        mapping: dict[Any, Any] = dict(entries)
        pipe.hset(self._new, mapping=mapping)
        self._count += len(entries)


class CursorStore:
    """Followers' resume points in Redis (written by ``Publisher.publish(..., cursor=...)`` or ``set``)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._key = keys.ingest_cursor

    async def get(self, name: str) -> str | None:
        value = await self._redis.hget(self._key, name)
        return None if value is None else text(value)

    async def set(self, name: str, value: str) -> None:
        """Move a cursor when nothing was published (e.g. a batch of ignored events)."""
        await self._redis.hset(self._key, name, value)
