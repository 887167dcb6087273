"""Publishing parsed events into the chat streams, follower cursors and what followers remember.

``Publisher.publish`` writes each post to the stream of every configured chat it belongs
to, in one round-trip per batch; with a cursor, the batch and the follower's cursor are
written in one MULTI, so a follower restarted at any moment resumes exactly after what
it published (no gap, no repeat). Edits and retractions travel the same streams as
entries of their own kind (fields ``u`` and ``r``). A post in no configured chat is
counted and dropped. The merge stage, not this module, removes duplicates. ``Recall`` is a
follower's memory of what it published, kept beside its cursor across restarts.

A Redis outage is ridden out (``outage``): ``publish`` waits and writes each batch exactly once
when Redis is back (a marker written with each batch tells a lost reply from a lost write);
``offer`` does not wait and holds at most ``PENDING_MAX`` events in memory, counting what
overflows; cursor reads and writes wait too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgpack
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError, WatchError

from mixer.codec import EDIT_FIELD, FIELD, RETRACT_FIELD, pack_post
from mixer.ingest.outage import AWAY, Outage, backoff, ride_out
from mixer.keys import Keys
from mixer.models import Edit, Event, Post, Retraction
from mixer.settings import Settings
from mixer.streams import append_many, raise_if_cancelling, text

log = logging.getLogger(__name__)

# Events a Publisher holds for ``offer`` callers while Redis is away (a few minutes of a busy night's stream);
# past it the oldest are dropped and counted as ``overflowed``. ``publish`` callers wait instead and hold one batch.
PENDING_MAX = 10_000
APPLIED_TTL = 3600  # seconds a Publisher's last-batch marker outlives its last write (it is read only after a failure)

K = TypeVar("K")
V = TypeVar("V")


class Publisher:
    """Writes events to chat streams; exactly-once per batch, also across a Redis outage (see ``publish``)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        chats: Iterable[str],
        maxlen: int,
        active: Callable[[str], bool] | None = None,
        *,
        role: str = "ingest",
        pending_max: int = PENDING_MAX,
    ) -> None:
        self._redis = redis
        self._active = active  # a chat's posts are published only while this says it is followed (its slot)
        self._keys = keys
        self._chats = tuple(dict.fromkeys(chats))
        self._chat_set = frozenset(self._chats)
        self._maxlen = maxlen
        self.counters: Counter[str] = Counter()
        self.outage = Outage.of(redis, role)
        # Each batch ends by setting this key to the batch's number, in its transaction: after a failure that may
        # have come after Redis applied the batch (the reply lost), reading it back says whether to write again.
        self._applied = keys.ingest_applied(uuid.uuid4().hex[:16])
        self._seq = 0
        self._lock = asyncio.Lock()  # one batch in flight at a time, so the marker above names the last one
        self._pending: deque[_Batch] = deque()  # offered batches not written yet, oldest first
        self._held = 0  # events in ``_pending``
        self._pending_max = pending_max
        self._drainer: asyncio.Task[None] | None = None

    @property
    def keys(self) -> Keys:
        return self._keys

    @property
    def redis(self) -> aioredis.Redis:
        """The Redis it writes to, for a follower's helpers that keep state beside the streams (a cache)."""
        return self._redis

    @property
    def pending(self) -> int:
        """Events offered and not written yet (at most ``pending_max``, but never less than the newest batch)."""
        return self._held

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
        *,
        patient: bool = True,
    ) -> int:
        """Append each event to its chats' streams, with ``cursor`` stored atomically (and ``recall``'s entries
        remembered in the same transaction); returns posts published.

        While Redis is away it waits (capped backoff) and returns once the batch is written, exactly once: the
        caller holds this one batch meanwhile and reads nothing more, so nothing it read is lost. With
        ``patient=False`` (a request that must answer now) the first failure raises, nothing written."""
        batch = self._batch(events, cursor, recall, None)
        if batch is None:
            return 0
        async with self._lock:
            await self._write(batch, patient)
        return batch.posts

    async def offer(
        self, events: Iterable[Event], cursor: tuple[str, str] | None = None, counters: Counter[str] | None = None
    ) -> None:
        """Publish without waiting, for a follower that cannot pause its source: batches are written in order by
        a task of this Publisher. While Redis is away they wait in memory, at most ``pending_max`` events; past
        that the oldest batches are dropped and counted as ``overflowed`` (here and in ``counters``, which also
        get ``published`` as batches land)."""
        batch = self._batch(events, cursor, None, counters)
        if batch is None:
            return
        self._pending.append(batch)
        self._held += batch.events
        # Past the bound the OLDEST go, the newest stay: on a live wall the posts people are reacting to now matter
        # more than ones minutes old, which would land as a stale burst; and a newer batch's cursor covers the
        # dropped ones anyway (a follower that offers can only resume forward from it).
        while self._held > self._pending_max and len(self._pending) > 1:
            dropped = self._pending.popleft()
            self._held -= dropped.events
            self._overflowed(dropped, 1)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name=f"{self.outage.role}: publishing offered posts")

    async def aclose(self) -> None:
        """Stop writing offered batches (what is still pending is dropped, not counted: the process is ending)."""
        if self._drainer is not None:
            self._drainer.cancel()
            await asyncio.wait([self._drainer])

    def _overflowed(self, batch: _Batch, sign: int) -> None:
        for counters in (self.counters, batch.counters):
            if counters is not None:
                counters["overflowed"] += batch.events * sign

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[0]
            async with self._lock:
                written = await self._write(batch, True, functools.partial(self._is_next, batch))
            if self._pending and self._pending[0] is batch:
                self._pending.popleft()
                self._held -= batch.events
            elif written:  # dropped for a newer one while its write was in flight, yet it got out: not lost
                self._overflowed(batch, -1)

    def _is_next(self, batch: _Batch) -> bool:
        return bool(self._pending) and self._pending[0] is batch

    def _batch(
        self,
        events: Iterable[Event],
        cursor: tuple[str, str] | None,
        recall: tuple[Recall, Mapping[str, str]] | None,
        counters: Counter[str] | None,
    ) -> _Batch | None:
        """The stream writes of ``events`` (routed; posts in no followed chat counted and left out), or None when
        there is nothing to write at all."""
        writes: list[tuple[str, dict[Any, bytes]]] = []
        posts = edits = retractions = 0
        for event in events:
            if isinstance(event, Retraction):
                chats = tuple(c for c in event.chats if c in self._chat_set) or self._chats
                raw = msgpack.packb({"key": event.key, "source": event.source}, use_bin_type=True)
                fields = {RETRACT_FIELD: raw}
                retractions += 1
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
                    edits += 1
                else:
                    posts += 1
            writes.extend((self._keys.chat(chat), fields) for chat in chats)
        if recall is not None and not recall[1]:
            recall = None
        if not writes and cursor is None and recall is None:
            return None
        self._seq += 1
        return _Batch(self._seq, writes, cursor, recall, posts, edits, retractions, counters)

    async def _write(self, batch: _Batch, patient: bool, wanted: Callable[[], bool] | None = None) -> bool:
        """Write ``batch`` (True), retrying while Redis is away until done or ``wanted()`` says to give up (False);
        not ``patient``: the first failure raises."""
        policy = backoff()
        unsure = False  # a failed EXEC may have been applied: look before writing again
        while True:
            try:
                if not (unsure and await self._landed(batch)):
                    await self._execute(batch)
                break
            except (*AWAY, WatchError) as exc:  # WatchError: the connection dropped during EXEC (see _execute)
                raise_if_cancelling()
                if not patient:  # the caller answers now (the webhook: a 503, which the fan-out logs): nothing held
                    raise
                unsure = True
                self.outage.failed(exc, "publishing")
                await asyncio.sleep(policy.next())
                if wanted is not None and not wanted():
                    return False
        raise_if_cancelling()
        self.outage.answered()
        self.counters["published"] += batch.posts
        self.counters["edits"] += batch.edits
        self.counters["retractions"] += batch.retractions
        if batch.counters is not None:
            batch.counters["published"] += batch.posts
        return True

    async def _landed(self, batch: _Batch) -> bool:
        value = await self._redis.get(self._applied)
        return value is not None and text(value) == str(batch.seq)

    async def _execute(self, batch: _Batch) -> None:
        if batch.recall is not None:
            await batch.recall[0].make_room(len(batch.recall[1]))
        # A transaction even without a cursor: all of a batch or none of it, so a retry never repeats half of one.
        async with self._redis.pipeline(transaction=True) as pipe:
            # Watching the marker makes redis-py raise (WatchError) when the connection drops during EXEC instead of
            # sending the transaction again on its own, which could write the batch twice: retrying is ours, after
            # reading the marker. Nothing else writes the marker, so the watch itself never fails.
            await pipe.watch(self._applied)
            pipe.multi()  # type: ignore[no-untyped-call]
            if batch.writes:
                append_many(pipe, batch.writes, self._maxlen)
            if batch.cursor is not None:
                pipe.hset(self._keys.ingest_cursor, batch.cursor[0], batch.cursor[1])
            if batch.recall is not None:
                batch.recall[0].stage(pipe, batch.recall[1])
            pipe.set(self._applied, batch.seq, ex=APPLIED_TTL)
            await pipe.execute()


@dataclass(eq=False, slots=True)
class _Batch:
    """One publish: its stream writes and cursor, written in one transaction."""

    seq: int  # this Publisher's number for it (the marker that tells a lost reply from a lost write)
    writes: list[tuple[str, dict[Any, bytes]]]  # (chat stream, fields), one per chat of each event
    cursor: tuple[str, str] | None
    recall: tuple[Recall, Mapping[str, str]] | None
    posts: int
    edits: int
    retractions: int
    counters: Counter[str] | None  # the offering follower's, told of what lands and what overflows

    @property
    def events(self) -> int:
        return self.posts + self.edits + self.retractions


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
        """Everything remembered, older generation first (a key in both: the newer value); waits while Redis is
        away."""

        async def read() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            pipe.hgetall(self._old)
            pipe.hgetall(self._new)
            return await pipe.execute()

        old, new = await ride_out(read, Outage.of(self._redis), "reading what a follower published")
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
    """Followers' resume points in Redis (written by ``Publisher.publish(..., cursor=...)`` or ``set``); both
    calls wait while Redis is away (capped backoff, one log line per outage) rather than fail."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._key = keys.ingest_cursor
        self._outage = Outage.of(redis)

    async def get(self, name: str) -> str | None:
        value = await ride_out(lambda: self._redis.hget(self._key, name), self._outage, f"reading cursor {name}")
        return None if value is None else text(value)

    async def set(self, name: str, value: str) -> None:
        """Move a cursor when nothing was published (e.g. a batch of ignored events)."""
        await ride_out(lambda: self._redis.hset(self._key, name, value), self._outage, f"saving cursor {name}")
