"""The merge stage: every chat stream in, one deduplicated, time-ordered feed out.

Events wait in a ``ReorderBuffer`` until every chat stream has been read past their
ingest time (plus the window, in a chat seen late: docs/architecture.md "The reorder rule"),
then ``Deduper`` decides what each means for the feed (a new post, an ``update`` of a
shown one, a ``retract``) and everything is written in one MULTI: the feed entries (with
ids this stage assigns, so the post index can name them), the post index, the text
fingerprints, the seen-set and the chat cursors. The copies of a post that one publish wrote to several chat
streams (the same bytes) are decoded once (``Twins``; how entries are decoded and written: ``entries``).

Guarantee: every chat-stream entry is read (plain XREAD from stored cursors, no
consumer groups); each post key becomes at most one card; a retracted key never
returns; and a cursor never passes an event still held, so a crash at any point
neither loses nor repeats a post: entries read again after a restart find their keys
in the index (a post, edit or boost of a retracted key is counted as
``dropped:<reason>``). ``MergeStage.filters`` (moderation, Q/A tagging) run on each new post
before dedupe. Its ``counters`` are also published to ``Keys.merge_stats`` at most once a second
(one pipelined HSET + EXPIRE after a batch), so another process (a looping replay) can tell that
everything it publishes is being dropped. Memory is bounded per step, not by how far behind the stage is: a step
reads at most ``read_budget`` entries over every stream and releases at most as many events (``READ_BUDGET``);
while the reorder buffer is nearly full, the streams read far ahead of the slowest one wait (``AHEAD_MS``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import msgpack
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mixer.codec import FIELD, pack_post
from mixer.keys import CHANGES_MAXLEN, Keys
from mixer.merge.actions import apply_action
from mixer.merge.dedupe import Book, Changes, Deduper, FeedWrite
from mixer.merge.entries import BATCH_WRITE, FeedIds, Twins, batch_write
from mixer.merge.lease import Fence, fenced
from mixer.merge.moderation import Moderator
from mixer.merge.reorder import ReorderBuffer
from mixer.models import Edit, Event, Post, Retraction
from mixer.rules import Rules
from mixer.streams import block_for, id_ms, last_id, raise_if_cancelling, read_new, text

log = logging.getLogger(__name__)

PostFilter = Callable[[Post], Post | None]
_WRITE_COUNTER = {"p": "written", "u": "updates", "r": "retractions_written", "n": "pins"}
ACTIONS_CURSOR = "~actions"  # the actions stream's field in the merge cursor hash
STATS_EVERY = 1.0  # seconds between writes of the counters to Keys.merge_stats: never per post, nor per batch
# What one step may hold at once, so that memory has a bound however many chats there are and however far behind the
# stage is (docs/deploy.md "Merge memory"): a step reads at most READ_BUDGET entries in all (every chat stream and the
# moderator actions share one XREAD COUNT: up to 10 chats still read ``batch``, 1000, a stream) and releases at most
# as many events; the reorder buffer holds at most MAX_PENDING events between steps (beyond them, the oldest leave).
READ_BUDGET = 11_000
MAX_PENDING = 20_000
# While the buffer holds more than a full read could add without passing MAX_PENDING, a step leaves out the streams
# (not drained) read more than AHEAD_MS beyond the slowest one not drained, the one holding the watermark back: their
# entries would only be held, and enough of them force the oldest out of time order (docs/architecture.md).
AHEAD_MS = 1_000
STATS_TTL = 30  # seconds Keys.merge_stats outlives its last write: a stage gone quiet or away leaves no stale figures


class MergeStage:
    """Reads chat streams, writes the merged feed; one card per post key, nothing lost, nothing repeated."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        chats: Iterable[str],
        *,
        window: float = 0.5,
        feed_maxlen: int = 100_000,
        seen_max: int = 200_000,
        batch: int = 1000,  # entries a stream per read, at most (fewer when READ_BUDGET is shared by more streams)
        read_budget: int = READ_BUDGET,  # entries read, and events released, per step: over every stream together
        max_pending: int = MAX_PENDING,  # events the reorder buffer holds between steps (beyond them, the oldest leave)
        trim_every: int = 200,
        rules: Rules | None = None,
        clock: Callable[[], float] = time.time,
        stats_every: float = STATS_EVERY,  # seconds between writes of the counters to Keys.merge_stats (tests: 0)
    ) -> None:
        self._redis = redis  # a dedicated connection: XREAD BLOCK runs on it
        self.fence: Fence | None = None  # (lease key, holder): writes only while the lease names us
        self._config_rules = rules or Rules()
        self.moderator = Moderator(self._config_rules)  # the rules in force, compiled (Redis overrides the config's)
        self._keys = keys
        self._chats = tuple(chats)
        self._feed_maxlen = feed_maxlen
        self._seen_max = seen_max
        self._batch = batch
        self._read_budget = read_budget
        self._clock = clock
        self.buffer = ReorderBuffer(int(window * 1000), max_pending, started_ms=int(clock() * 1000))
        self.deduper = Deduper()
        # posts decoded from recent entries, for the copies of them in other chats: two steps' worth (a copy comes in
        # the read of its post or soon after; one forgotten early is only decoded again), as memory allows
        self._twins = Twins(2 * read_budget)
        self.filters: list[PostFilter] = []
        self.counters: Counter[str] = Counter()
        self._read: dict[str, str] = {}  # chat -> last id read
        self._drained: set[str] = set()  # chats whose last read reached the end of their stream
        self._committed: dict[str, str] = {}  # chat -> cursor stored in Redis
        self._ids = FeedIds()
        self._batches = 0
        self._trim_every = trim_every  # batches between trims of the index and fingerprints
        self._stats_every = stats_every
        self._stats_run = secrets.token_hex(4)  # names this instance's counters in Keys.merge_stats
        self._stats_at = -math.inf  # clock() when the counters were last published
        self._stats_sent: Counter[str] = Counter()  # the counters as last published

    async def load_cursors(self) -> None:
        """Start from the stored cursors (``0-0`` for a chat never merged); drops anything held."""
        stored = await self._redis.hgetall(self._keys.merge_cursor)
        cursors = {text(k): text(v) for k, v in stored.items()}
        self._read = {chat: cursors.get(chat, "0-0") for chat in self._chats}
        self._committed = dict(self._read)
        self._actions_read = cursors.get(ACTIONS_CURSOR) or await last_id(self._redis, self._keys.mod_actions)
        self._actions: list[dict[str, Any]] = []
        await self.load_rules()
        self._drained = set()
        started = int(self._clock() * 1000)  # a new leader learns afresh which chats are late
        self.buffer = ReorderBuffer(self.buffer.window_ms, self.buffer.max_pending, started_ms=started)
        self._twins = Twins(2 * self._read_budget)
        self._ids = FeedIds(await last_id(self._redis, self._keys.feed))

    async def load_rules(self) -> None:
        """The rules a moderator set (in Redis), else the config's; bad stored rules are logged and ignored.

        New rules are compiled in a thread: 10,000 long entries (within the rules' limits) take seconds, and on the
        event loop they would stall every screen of this process and the lease's renewal; the old rules stay in
        force until the new ones are ready."""
        stored = await self._redis.get(self._keys.mod_rules)
        try:
            rules = Rules.from_json(stored) if stored is not None else self._config_rules
        except ValueError as exc:
            log.warning("merge: ignoring bad moderation rules in Redis: %s", exc)
            return
        if rules != self.moderator.rules:
            self.moderator = await asyncio.to_thread(Moderator, rules)

    async def step(self, max_block: float = 1.0) -> int:
        """Read what is new, release what the watermark allows, write; returns feed entries written.

        Waits for new entries only when every stream is drained, and then no longer than
        until the oldest held event is due.
        """
        block_ms: int | None = None
        if len(self._drained) == len(self._chats):
            due = self.buffer.next_due()
            wait = max_block * 1000 if due is None else min(max_block * 1000, due - self._clock() * 1000)
            block_ms = block_for(wait)
        reading = self._reading()
        streams = {self._keys.chat(c): self._read[c] for c in reading}
        streams[self._keys.mod_actions] = self._actions_read
        count = self.read_count(len(self._chats) + 1)  # as if every stream were read: no stream reads more than then
        got = await read_new(self._redis, streams, block_ms, count)
        for entry_id, raw, _ in got.get(self._keys.mod_actions, []):
            self._actions_read = entry_id
            try:
                self._actions.append(msgpack.unpackb(raw, raw=False))
            except Exception as exc:
                log.warning("merge: skipping malformed moderator action %s: %s", entry_id, exc)
        for chat in reading:  # a stream left out keeps its state: not drained
            entries = got.get(self._keys.chat(chat), [])
            if len(entries) < count:  # less than it asked for: the stream's end (a full read may have more)
                self._drained.add(chat)
            else:
                self._drained.discard(chat)
            hold, decoded, decode = self.buffer.add, self._twins.events, self._twins.decode
            for entry_id, raw, kind in entries:
                event: Event | None = decoded.get(raw) if kind == FIELD else None
                if event is None:
                    try:
                        event = decode(kind, raw)
                    except Exception as exc:  # a bad entry is skipped, never fatal
                        self.counters["malformed"] += 1
                        log.warning("merge: skipping malformed entry %s in chat %s: %s", entry_id, chat, exc)
                        continue
                hold(chat, entry_id, event)
            if entries:  # once per chat, not per entry: the loop above only holds what it read
                self._read[chat] = last = entries[-1][0]
                self._twins.read(chat, id_ms(last))
                self.counters["read"] += len(entries)
        watermark = self._watermark()
        self._twins.forget(watermark)
        written = await self._release(watermark)
        await self._publish_counters()
        return written

    def read_count(self, streams: int) -> int:
        """XREAD's COUNT for ``streams`` streams: ``batch``, or the read budget's even share when that is smaller, so
        a step never reads more than ``read_budget`` entries (while there are no more streams than that)."""
        return max(1, min(self._batch, self._read_budget // streams))

    def _reading(self) -> tuple[str, ...]:
        """The chats whose streams this step reads: every one, unless the buffer holds more than ``max_pending`` less
        a step's read budget; then not those (not drained) read more than ``AHEAD_MS`` beyond the slowest one not
        drained. That one is always read (so a step reads or drains something, and never waits while it could read),
        and so is a drained stream (it counts as read up to now: left out, its new entries would be passed)."""
        if len(self.buffer) <= max(0, self.buffer.max_pending - self._read_budget):
            return self._chats
        behind = [id_ms(self._read[c]) for c in self._chats if c not in self._drained]
        if not behind:
            return self._chats
        reach = min(behind) + AHEAD_MS
        return tuple(c for c in self._chats if c in self._drained or id_ms(self._read[c]) <= reach)

    def _watermark(self) -> int:
        """Ms up to which every chat stream has been read; a drained stream counts as read up to now."""
        now = int(self._clock() * 1000)
        marks = [now if c in self._drained else id_ms(self._read[c]) for c in self._chats]
        return min(marks, default=now)

    async def _release(self, watermark: int) -> int:
        held: dict[str, Post] = {}
        events = [
            e
            for p in self.buffer.pop_ready(watermark, self._read_budget)
            if (e := self._filter(p.event, held)) is not None
        ]
        actions, self._actions = self._actions, []
        cursors = {c: self.buffer.safe_cursor(c, self._read[c]) for c in self._chats}
        if actions:
            cursors[ACTIONS_CURSOR] = self._actions_read
        changed = {c: v for c, v in cursors.items() if v != self._committed.get(c)}
        if not events and not changed and not held:
            return 0
        now_ms = int(self._clock() * 1000)
        changes = Changes()
        writes: list[FeedWrite] = []
        if events or actions:
            book = await self._load_book(events, [a["key"] for a in actions if isinstance(a.get("key"), str)])
            for event in events:
                writes += self.deduper.apply(event, book, changes, lambda: self._ids.next(now_ms), now_ms)
            for action in actions:
                try:
                    writes += apply_action(action, book, changes, self.deduper, lambda: self._ids.next(now_ms), now_ms)
                except ValueError as exc:
                    log.warning("merge: skipping moderator action %s: %s", action.get("action"), exc)
                if action.get("action") == "rules":
                    await self.load_rules()

        def fill(tx: Pipeline) -> None:
            if writes or changes.posts or changes.fingerprints:
                ks = self._keys
                keys = (ks.feed, ks.index, ks.seen, ks.fingerprints, ks.fingerprint_times)
                batch = msgpack.packb(batch_write(writes, changes), use_bin_type=False)
                tx.eval(BATCH_WRITE, len(keys), *keys, self._feed_maxlen, batch)
            if held:
                tx.hset(self._keys.mod_queue, mapping={k: pack_post(p) for k, p in held.items()})
            decided = [a["key"] for a in actions if a.get("action") in ("approve", "reject")]
            if decided:
                tx.hdel(self._keys.mod_queue, *decided)
            if held or decided:  # consoles waiting on /api/mod/changes refresh their queue now
                tx.xadd(self._keys.mod_changes, {"c": "queue"}, maxlen=CHANGES_MAXLEN, approximate=True)
            if changes.pinned is None:
                tx.delete(self._keys.pinned)
            elif changes.pinned is not False:
                tx.set(self._keys.pinned, msgpack.packb(changes.pinned, use_bin_type=True))
            if changed:
                tx.hset(self._keys.merge_cursor, mapping=changed)  # type: ignore[arg-type]

        await fenced(self._redis, self.fence, fill)
        self._committed.update(changed)
        kinds = Counter(kind for kind, _, _ in writes)
        for kind, count in kinds.items():
            self.counters[_WRITE_COUNTER[kind]] += count
        dropped = changes.dropped["retracted"] + changes.dropped["boost_of_retracted"]  # posts, not duplicates
        self.counters["duplicate"] += sum(1 for e in events if isinstance(e, Post)) - kinds["p"] - dropped
        for reason, count in changes.dropped.items():
            self.counters[f"dropped:{reason}"] += count
            log.debug("merge: %d post(s) kept off the feed: %s", count, reason)
        self._batches += 1
        if self._batches % self._trim_every == 0:
            await self._trim(now_ms)
        return len(writes)

    async def _publish_counters(self) -> None:
        """Write ``counters`` to ``Keys.merge_stats`` when they changed and the last write is ``stats_every`` old (so
        an idle stage's last figures land within a step, ``max_block``, of it): one round trip, then nothing."""
        now = self._clock()
        if now - self._stats_at < self._stats_every or self.counters == self._stats_sent:
            return
        self._stats_at, self._stats_sent = now, self.counters.copy()
        stats: dict[str, str | int] = {**self.counters, "at": int(now * 1000), "run": self._stats_run}
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(self._keys.merge_stats, mapping=stats)  # type: ignore[arg-type]
            pipe.expire(self._keys.merge_stats, STATS_TTL)
            await pipe.execute()

    async def _load_book(self, events: list[Event], more_keys: Iterable[str] = ()) -> Book:
        """What the index knows about the keys and texts of ``events`` (and ``more_keys``)."""
        keys, prints = self.deduper.needs(events)
        keys.update(more_keys)
        book = Book()
        if prints:
            found: list[Any] = await self._redis.hmget(self._keys.fingerprints, list(prints))
            for fp, value in zip(prints, found, strict=True):
                if value is not None:
                    key, _, ms = text(value).rpartition("|")
                    book.fingerprints[fp] = (key, int(ms))
                    keys.add(key)
        if keys:
            ordered = list(keys)
            stored: list[Any] = await self._redis.hmget(self._keys.index, ordered)
            for key, raw in zip(ordered, stored, strict=True):
                post = msgpack.unpackb(raw, raw=False) if raw is not None else None
                book.posts[key] = post
                if post is not None and post.get("retracted"):
                    book.retracted.add(key)
        return book

    async def _trim(self, now_ms: int) -> None:
        """Forget the oldest keys beyond ``seen_max`` and fingerprints older than the dedupe window."""
        excess = await self._redis.zcard(self._keys.seen) - self._seen_max
        old_keys: list[Any] = await self._redis.zrange(self._keys.seen, 0, excess - 1) if excess > 0 else []
        old_prints: list[Any] = await self._redis.zrangebyscore(
            self._keys.fingerprint_times, "-inf", now_ms - self.deduper.window_ms
        )
        if not old_keys and not old_prints:
            return
        async with self._redis.pipeline(transaction=True) as tx:
            if old_keys:
                tx.hdel(self._keys.index, *old_keys)
                tx.zrem(self._keys.seen, *old_keys)
            if old_prints:
                tx.hdel(self._keys.fingerprints, *old_prints)
                tx.zrem(self._keys.fingerprint_times, *old_prints)
            await tx.execute()

    def _filter(self, event: Event, held: dict[str, Post]) -> Event | None:
        """Moderation, then the extra filters, on a post; an edit the rules would block retracts its card (an edit
        must not bring a blocked word or account onto a screen); other edits and retractions pass."""
        if isinstance(event, Edit):
            if self.moderator.judge(event.post).post is None:
                self.counters["blocked_edit"] += 1
                log.info("merge: an edit of %s is blocked; retracting the card", event.post.key)
                return Retraction(event.post.key, event.post.source)
            return event
        if not isinstance(event, Post):
            return event
        verdict = self.moderator.judge(event)
        if verdict.post is None:
            self.counters["blocked"] += 1
            log.info("merge: blocked %s (%s)", event.key, verdict.reason)
            return None
        if verdict.action == "hold":
            held[event.key] = verdict.post
            self.counters["held"] += 1
            return None
        post: Post = verdict.post
        for keep in self.filters:
            kept = keep(post)
            if kept is None:
                self.counters["filtered"] += 1
                return None
            post = kept
        return post

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Merge until cancelled; reconnects with capped backoff and resumes from stored cursors."""
        backoff = 0.1
        failing_since: float | None = None  # an outage is one WARNING when it starts and one INFO when it ends
        while True:
            try:
                await self.load_cursors()
                if failing_since is not None:
                    away = time.monotonic() - failing_since
                    log.info("merge: redis answers again after %.1f s; resumed from stored cursors", away)
                    failing_since = None
                if ready is not None:
                    ready.set()
                while True:
                    await self.step()
                    raise_if_cancelling()
                    backoff = 0.1
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                raise_if_cancelling()  # redis-py may turn a cancel into a connection error
                self.counters["reconnects"] += 1
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("merge: redis error (%s); retrying from stored cursors (backoff up to 5 s)", exc)
                else:
                    log.debug("merge: redis error (%s); retrying in %.1f s from stored cursors", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
