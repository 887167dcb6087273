"""The shaping stage: the merged feed in, one paced stream per shaped profile out.

Runs beside the merge stage (one leader computes the shaped streams; every fan-out
replica reads them, so all clients of a profile see the same posts with the same ids).
Each shaped profile's ``Shaper`` decides what leaves when; this stage keeps the posts
while they wait, writes what leaves to ``Keys.shaped(profile)`` with ids of that stream
and ``ref`` = the post's feed id, and counts drops per chat. Only posts are shaped: every
other feed entry is a control message that every profile passes on (edits of emitted posts
as ``update`` entries, retractions as ``retract`` entries, pins and unpins as ``pin`` entries,
and any kind added later the same way, as it is), with the feed ids in it mapped to the
profile's; a pin also sets ``Keys.shaped_pinned(profile)`` (what a new client's hello shows).
Entries, drop counts, pins and the cursor are written in one MULTI; the cursor never
passes a post still waiting, and the refs of the newest ``REMEMBER`` entries are reloaded
on start, so a restart neither loses nor repeats a post, and edits and retractions of the
posts it emitted before the restart still reach the profile's screens.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import msgpack
import msgspec
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from mixer.backoff import Backoff
from mixer.codec import EDIT_FIELD, FIELD, PIN_FIELD, RETRACT_FIELD
from mixer.keys import Keys
from mixer.merge.entries import FeedIds
from mixer.merge.lease import Fence, fenced
from mixer.merge.shaper import Shaper
from mixer.settings import Profile
from mixer.streams import block_for, id_before, id_key, last_id, raise_if_cancelling, read_new, text

log = logging.getLogger(__name__)


class _Chats(msgspec.Struct, frozen=True, gc=False):  # gc=False: it holds strings only, so no cycle; a quarter faster
    chats: tuple[str, ...]


_CHATS = msgspec.msgpack.Decoder(_Chats)  # a feed post's chats, the rest only checked to be msgpack

REMEMBER = 20_000  # emitted feed id -> profile id, per profile, for mapping later edits and retractions
LOAD_PAGE = 2000  # shaped entries read per XREVRANGE while reloading that map on start


class ShapingStage:
    """Feed -> shaped streams; each feed post is emitted at most once per profile, or dropped and counted."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        profiles: Iterable[Profile],
        *,
        maxlen: int = 10_000,
        batch: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis  # a dedicated connection: XREAD BLOCK runs on it
        self.fence: Fence | None = None  # (lease key, holder): writes only while the lease names us
        self._keys = keys
        self._profiles = [p for p in profiles if p.shaped]
        self._maxlen = maxlen
        self._batch = batch
        self._clock = clock
        self._finished: set[str] = set()  # ids some shaper emitted or dropped since the last step
        self.shapers = {p.name: Shaper(p, on_drop=self._finished.add) for p in self._profiles}
        # feed id -> the post as the feed holds it (msgpack, without id) or as an edit left it, while any shaper holds
        # it (feed order); decoded only if a profile emits it: the wall emits one post in hundreds on a busy night
        self._waiting: dict[str, bytes | dict[str, Any]] = {}
        self._emitted: dict[str, OrderedDict[str, str]] = {p.name: OrderedDict() for p in self._profiles}
        self._ids: dict[str, FeedIds] = {}
        self._pins: dict[str, dict[str, Any] | None] = {}  # profile -> its newest pin of this step (None: unpinned)
        self._read = "0-0"
        self._committed = "0-0"

    async def load(self) -> None:
        """Resume after the stored cursor, knowing what recent shaped entries already hold."""
        stored = await self._redis.hget(self._keys.shaped_cursor, "feed")
        self._read = self._committed = (
            text(stored) if stored is not None else await last_id(self._redis, self._keys.feed)
        )
        self._finished.clear()
        self.shapers = {p.name: Shaper(p, on_drop=self._finished.add) for p in self._profiles}
        self._waiting.clear()
        for profile in self._profiles:
            stream = self._keys.shaped(profile.name)
            self._ids[profile.name] = FeedIds(await last_id(self._redis, stream))
            self._emitted[profile.name] = await self._load_refs(stream)

    async def _load_refs(self, stream: str) -> OrderedDict[str, str]:
        """Feed id -> profile id of the newest ``REMEMBER`` posts of ``stream``, oldest first (read in pages)."""
        pages: list[list[tuple[str, str]]] = []
        before, found = "+", 0
        while found < REMEMBER:
            page: Any = await self._redis.xrevrange(stream, max=before, count=LOAD_PAGE)
            if not page:
                break
            refs = []
            for raw_id, fields in page:
                raw = fields.get(FIELD)
                ref = msgpack.unpackb(raw, raw=False).get("ref") if raw is not None else None
                if isinstance(ref, str):
                    refs.append((ref, text(raw_id)))
            pages.append(refs)
            found += len(refs)
            before = "(" + text(page[-1][0])
        emitted: OrderedDict[str, str] = OrderedDict()
        for refs in reversed(pages):
            for ref, entry_id in reversed(refs):
                emitted[ref] = entry_id
        while len(emitted) > REMEMBER:
            emitted.popitem(last=False)
        return emitted

    async def step(self, max_block: float = 1.0) -> int:
        """Read new feed entries, emit what each profile allows now, write; returns entries written."""
        now = self._clock()
        dues = [d for s in self.shapers.values() if (d := s.next_due(now)) is not None]
        wait = min([max_block, *(d - now for d in dues)])
        got = await read_new(self._redis, {self._keys.feed: self._read}, block_for(wait * 1000), self._batch)
        now = self._clock()
        writes: dict[str, list[tuple[bytes, str, dict[str, Any]]]] = {p.name: [] for p in self._profiles}
        for entry_id, raw, kind in got.get(self._keys.feed, []):
            self._read = entry_id
            try:
                self._handle(entry_id, raw, kind, now, writes)
            except Exception as exc:  # a bad entry is skipped, never fatal
                log.warning("shaping: skipping feed entry %s: %s", entry_id, exc)
        drops: dict[str, dict[str, int]] = {}
        for name, shaper in self.shapers.items():
            for feed_id in shaper.take(now):
                self._finished.add(feed_id)
                post = self._waiting.get(feed_id)
                if post is not None:
                    body = msgpack.unpackb(post, raw=False) if isinstance(post, bytes) else post
                    body.pop("id", None)
                    writes[name].append((FIELD, self._emit(name, feed_id, now), {**body, "ref": feed_id}))
            drops[name] = shaper.drain_drops()
        self._forget_finished()
        return await self._write(writes, drops)

    def _handle(self, entry_id: str, raw: bytes, kind: bytes, now: float, writes: dict[str, list[Any]]) -> None:
        """Posts are offered to the shapers; every other entry is a control message for every profile."""
        if kind == FIELD:
            chats = _CHATS.decode(raw).chats  # a bad entry raises here, before any shaper saw it
            emitted = self._emitted
            taken = False
            for name, shaper in self.shapers.items():
                if entry_id not in emitted[name] and shaper.offer(entry_id, chats, now):
                    taken = True
            if taken:  # a post every profile emitted before a restart waits for nothing: kept, it held the cursor
                self._waiting[entry_id] = raw
        elif not kind:
            raise ValueError("an entry of a kind this version does not know")
        elif not isinstance(payload := msgpack.unpackb(raw, raw=False), dict):
            raise ValueError("a control entry that is not a map")
        else:
            self._pass_on(kind, payload, now, writes)

    def _pass_on(self, kind: bytes, payload: dict[str, Any], now: float, writes: dict[str, list[Any]]) -> None:
        """A control entry to every profile, with the feed ids in it as the profile's where it showed the post.

        Edits and retractions concern only posts a profile emitted (one still waiting leaves edited, one
        retracted never leaves); a pin, and any kind added later, goes to every profile as it is.
        """
        if kind == EDIT_FIELD:
            post = payload
            feed_id = post["id"]
            if feed_id in self._waiting:  # it leaves as a post: ``joined`` is the update entry's alone
                self._waiting[feed_id] = {k: v for k, v in post.items() if k not in ("id", "joined")}
            for name in self.shapers:
                if (mine := self._emitted[name].get(feed_id)) is not None:
                    writes[name].append((EDIT_FIELD, self._next(name, now), {**post, "id": mine, "ref": feed_id}))
        elif kind == RETRACT_FIELD:
            gone = payload["ids"]
            for name, shaper in self.shapers.items():
                for feed_id in gone:
                    shaper.remove(feed_id)
                    self._finished.add(feed_id)
                mapped = [m for f in gone if (m := self._emitted[name].get(f)) is not None]
                if mapped:
                    writes[name].append((RETRACT_FIELD, self._next(name, now), {"ids": mapped}))
        else:
            for name in self.shapers:
                passed = self._mapped(name, payload)
                writes[name].append((kind, self._next(name, now), passed))
                if kind == PIN_FIELD:
                    self._pins[name] = passed.get("post")

    def _mapped(self, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        """``payload`` with its ``post`` under the profile's id (and ``ref`` = its feed id) if the profile showed it."""
        post = payload.get("post")
        mine = self._emitted[name].get(str(post.get("id"))) if isinstance(post, dict) else None
        if not isinstance(post, dict) or mine is None:
            return payload
        return {**payload, "post": {**post, "id": mine, "ref": post["id"]}}

    def _next(self, name: str, now: float) -> str:
        return self._ids[name].next(int(now * 1000))

    def _emit(self, name: str, feed_id: str, now: float) -> str:
        mine = self._next(name, now)
        emitted = self._emitted[name]
        emitted[feed_id] = mine
        while len(emitted) > REMEMBER:
            emitted.popitem(last=False)
        return mine

    def _forget_finished(self) -> None:
        """Let go of posts no shaper holds any more (emitted or dropped); only this step's are checked."""
        gone: set[str] = self._finished
        for shaper in self.shapers.values():
            gone = shaper.unheld(gone)
        for feed_id in gone:
            self._waiting.pop(feed_id, None)
        self._finished.clear()

    async def _write(
        self, writes: dict[str, list[tuple[bytes, str, dict[str, Any]]]], drops: dict[str, dict[str, int]]
    ) -> int:
        oldest = next(iter(self._waiting), None)
        cursor = id_before(oldest) if oldest is not None else self._read
        if id_key(cursor) < id_key(self._committed):
            cursor = self._committed
        count = sum(len(w) for w in writes.values())
        pins, self._pins = self._pins, {}
        if not count and not any(drops.values()) and cursor == self._committed:
            return 0

        def fill(tx: Pipeline) -> None:
            for name, entries in writes.items():
                for field, entry_id, payload in entries:
                    body = msgpack.packb(payload, use_bin_type=True)
                    tx.xadd(self._keys.shaped(name), {field: body}, id=entry_id, maxlen=self._maxlen, approximate=True)
            for name, counts in drops.items():
                for chat, n in counts.items():
                    tx.hincrby(self._keys.shaped_drops(name), chat, n)
            for name, pinned in pins.items():  # nil, not deleted, once unpinned: the hello then shows no pin
                tx.set(self._keys.shaped_pinned(name), msgpack.packb(pinned, use_bin_type=True))
            tx.hset(self._keys.shaped_cursor, "feed", cursor)

        await fenced(self._redis, self.fence, fill)
        self._committed = cursor
        return count

    async def run(self, loaded: Callable[[], None] | None = None) -> None:
        """Shape until cancelled (redis errors propagate to the caller, which restarts it); ``loaded`` is called
        once the cursor is read."""
        await self.load()
        if loaded is not None:
            loaded()
        while True:
            await self.step()
            raise_if_cancelling()


async def shape_forever(shaping: ShapingStage) -> None:
    """The shaping stage, restarted from its cursor after a Redis error (capped backoff)."""
    backoff = Backoff(base=0.1, cap=5.0)
    failing_since: float | None = None  # an outage is one WARNING when it starts and one INFO when it ends

    def loaded() -> None:
        nonlocal failing_since
        if failing_since is not None:
            away = time.monotonic() - failing_since
            log.info("shaping: redis answers again after %.1f s; resumed from its cursor", away)
            failing_since = None
            backoff.reset()

    while True:
        try:
            await shaping.run(loaded)
        except (RedisError, OSError) as exc:
            raise_if_cancelling()
            delay = backoff.next()
            if failing_since is None:
                failing_since = time.monotonic()
                log.warning("shaping: redis error (%s); resuming from its cursor (backoff up to 5 s)", exc)
            else:
                log.debug("shaping: redis error (%s); resuming from its cursor in %.1f s", exc, delay)
            await asyncio.sleep(delay)
