"""The reorder buffer: where events wait for their twins before the merge stage releases them.

Pure (the watermark is passed in; the entries' own stamps are its only other clock). Every chat
stream entry is added; entries of the same post (same key, from several chats or followers)
become one held post whose ``chats`` are their union; a retraction written to several chat
streams is held once. ``safe_cursor`` tells how far each chat's stream is fully handled.

When an event is released (the release rule, docs/architecture.md "The reorder rule"): once the
watermark (how far every chat stream has been read; a drained stream counts as read up to now)
has passed its stamp plus its *hold*. The hold is ``window_ms`` only while the event is in a chat
that is **late**, else 0, so an event nobody can still send a twin of leaves in the step that
read it. A chat is late for ``late_for_ms`` after it was seen taking part in a *union twin* (a
copy of a post, from another publish, that brings chats the earlier copies did not carry: two
followers that see the same post differently, the one case the window exists for; copies from
one publish are written to all of the post's chats in one MULTI and arrive together). Every chat
counts as late for the first ``learn_ms`` after the buffer starts, while it cannot know yet. An
edit or retraction never leaves before a held post of its key, nor before an earlier edit of it.
An event never leaves before one read earlier from the same chat stream (its due is at least theirs),
so a chat's posts keep their stream order when its hold drops from the window to 0 (learning ends,
or its lateness runs out); only a hold raised later by a union twin can put a held post behind newer
ones of its chat.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass, field
from operator import attrgetter

from mixer.models import Edit, Event, Post, Retraction
from mixer.streams import id_before, id_ms

LATE_FOR_MS = 60_000  # how long a chat stays late after a union twin was seen in it
LEARN_WINDOWS = 10  # while the buffer starts, every chat counts as late for this many windows
REMEMBER_RELEASED = 20_000  # released post keys remembered (with their chats) to notice a twin that came too late
_ORDER = attrgetter("order")


@dataclass(slots=True)
class Pending:
    event: Event
    stamp: int  # ms of the first stream entry id that carried it (Redis time of ingest)
    entries: list[tuple[str, str]] = field(default_factory=list)  # (chat, stream entry id)
    due: int = 0  # the watermark (ms) at which it may leave: stamp + its hold, never before its key's earlier events
    seq: int = 0  # which heap entry is current (a raised ``due`` pushes a new one)
    key: str = ""  # the key of the post it is about (``post_key``), kept: the buffer asks for it at every step
    # Release order: a post by its creation time, an edit or retraction by when it arrived (its stamp), then its key.
    order: tuple[int, str] = (0, "")  # kept, not derived at each sort: a held post's created and key never change


def post_key(event: Event) -> str:
    """The key of the post an event is about."""
    if isinstance(event, Post | Retraction):
        return event.key
    return event.post.key


def event_chats(event: Event) -> tuple[str, ...]:
    if isinstance(event, Edit):
        return event.post.chats
    return event.chats


def hold_key(event: Event, entry_id: str) -> str:
    """Entries holding the same value share a key: a post's twins, a retraction's copies; each edit is its own."""
    if isinstance(event, Post):
        return event.key
    if isinstance(event, Retraction):
        return f"retract\0{event.key}"
    return f"edit\0{event.post.key}\0{entry_id}"


class ReorderBuffer:
    """Events held until the watermark passes their stamp plus their hold (``window_ms`` in a late chat, else 0).

    The watermark is the caller's: the oldest point every chat stream has been read up to,
    where a chat whose stream is drained counts as read up to now. So a backlog read in
    chunks still meets its twins from other chats, and a silent chat holds nothing back.
    """

    def __init__(
        self,
        window_ms: int,
        max_pending: int = 50_000,
        *,
        started_ms: int | None = None,  # the watermark when the buffer starts (None: the first one it is given)
        learn_ms: int | None = None,  # every chat counts as late until started_ms + learn_ms (default 10 windows)
        late_for_ms: int = LATE_FOR_MS,
    ) -> None:
        self.window_ms = window_ms
        self.max_pending = max_pending
        self.late_for_ms = late_for_ms
        self.learn_ms = LEARN_WINDOWS * window_ms if learn_ms is None else learn_ms
        self._started = started_ms
        self._held: dict[str, Pending] = {}
        self._due: list[tuple[int, int, str]] = []  # heap of (due, seq, hold key); stale when seq is not current
        self._seq = 0
        self._chat_ids: dict[str, dict[str, None]] = {}  # per chat, pending entry ids in stream order
        self._late_until: dict[str, int] = {}  # chat -> stamp (ms) until which it counts as late
        self._key_due: dict[str, tuple[int, int]] = {}  # post key -> (latest due of its held events, how many)
        self._stream_due: dict[str, int] = {}  # chat stream -> latest due of an event read from it (the floor)
        self._released: OrderedDict[str, tuple[str, ...]] = OrderedDict()  # post key -> chats, newest last

    def __len__(self) -> int:
        return len(self._held)

    def late_chats(self, at_ms: int) -> list[str]:
        """The chats whose events wait out the window at ``at_ms`` (a stamp); every chat while learning."""
        return sorted(c for c, until in self._late_until.items() if until > at_ms)

    def _hold(self, chats: tuple[str, ...], stamp: int) -> int:
        if self._started is None or stamp < self._started + self.learn_ms:
            return self.window_ms
        late = self._late_until
        if not chats:  # a retraction that names no chat may be any chat's: late if any is
            return self.window_ms if any(until > stamp for until in late.values()) else 0
        for chat in chats:  # a loop, not any() over a generator: asked for every new event
            if late.get(chat, -1) > stamp:
                return self.window_ms
        return 0

    def _mark_late(self, chats: tuple[str, ...], stamp: int) -> None:
        for chat in chats:
            self._late_until[chat] = max(self._late_until.get(chat, -1), stamp + self.late_for_ms)

    def _push(self, key: str, pending: Pending) -> None:
        """Schedule ``pending`` at its (raised) due; its key's and its streams' latest dues follow."""
        streams = self._stream_due
        for chat, _ in pending.entries:
            if streams.get(chat, -1) < pending.due:
                streams[chat] = pending.due
        self._seq += 1
        pending.seq = self._seq
        heapq.heappush(self._due, (pending.due, self._seq, key))
        latest, count = self._key_due[pending.key]
        if pending.due > latest:
            self._key_due[pending.key] = (pending.due, count)

    def add(self, chat: str, entry_id: str, event: Event) -> None:
        """Hold ``event``; a post already held under the same key gains this entry's chats."""
        ids = self._chat_ids.get(chat)
        if ids is None:
            ids = self._chat_ids[chat] = {}
        ids[entry_id] = None
        stamp = id_ms(entry_id)
        if isinstance(event, Post):
            key = pkey = event.key
            chats = event.chats
            held = self._held.get(key)
            known = held.event.chats if held is not None and isinstance(held.event, Post) else self._released.get(key)
            if known is not None and known != chats and any(c not in known for c in chats):
                self._mark_late(known + chats, stamp)  # a union twin: every chat it joins is late
        else:
            key, pkey, chats = hold_key(event, entry_id), post_key(event), event_chats(event)
            held = self._held.get(key)
        if held is not None:
            self._join(held, key, chat, entry_id, event)
            return
        due = stamp + self._hold(chats, stamp)
        floor = self._stream_due.get(chat, -1)
        if floor > due:
            due = floor  # never ahead of an event read before it from this stream
        before = self._key_due.get(pkey)
        if before is None:
            self._key_due[pkey] = (due, 1)
        else:
            if not isinstance(event, Post):
                due = max(due, before[0])  # never ahead of its post or an earlier edit
            self._key_due[pkey] = (max(before[0], due), before[1] + 1)
        order = (event.created, pkey) if isinstance(event, Post) else (stamp, pkey)
        pending = self._held[key] = Pending(event, stamp, [(chat, entry_id)], due, key=pkey, order=order)
        self._push(key, pending)

    def _join(self, held: Pending, key: str, chat: str, entry_id: str, event: Event) -> None:
        """Another entry of an event held under ``key``: a post's twin widens its chats (and maybe its hold)."""
        held.entries.append((chat, entry_id))
        if self._stream_due.get(chat, -1) < held.due:
            self._stream_due[chat] = held.due  # this stream's later events leave after it too
        if isinstance(held.event, Post) and isinstance(event, Post):
            known = held.event.chats
            if known == event.chats:  # a copy of one publish, the common twin: nothing to add
                return
            extra = tuple(c for c in event.chats if c not in known)
            if extra:
                held.event = held.event.with_chats(known + extra)
                due = held.stamp + self._hold(held.event.chats, held.stamp)
                if due > held.due:
                    held.due = due
                    self._push(key, held)

    def next_due(self) -> int | None:
        """The watermark (ms) at which the next held event is released, or None when nothing is held."""
        while self._due:
            due, seq, key = self._due[0]
            held = self._held.get(key)
            if held is not None and held.seq == seq:
                return due
            heapq.heappop(self._due)  # a stale entry: its event left or its due was raised
        return None

    def pop_ready(self, watermark: int, limit: int | None = None) -> list[Pending]:
        """Events whose due is at or below ``watermark`` (and the oldest beyond ``max_pending``), in time order; at
        most ``limit`` of them, the earliest due first: the rest stay held, due, for the next call."""
        if self._started is None:
            self._started = watermark
        out: list[Pending] = []
        heap, pending, chat_ids, key_due = self._due, self._held, self._chat_ids, self._key_due
        released, heappop, max_pending = self._released, heapq.heappop, self.max_pending
        room = len(pending) if limit is None else limit
        while len(out) < room and (due := self.next_due()) is not None:
            if due > watermark and len(pending) <= max_pending:
                break
            _, _, key = heappop(heap)
            held = pending[key]
            pkey = held.key
            event = held.event
            if not isinstance(event, Post) and pkey in pending and len(pending) <= max_pending:
                held.due = max(held.due, pending[pkey].due)  # its post got a later due after it came: follow it
                self._push(key, held)
                continue
            del pending[key]
            for chat, entry_id in held.entries:
                chat_ids[chat].pop(entry_id, None)
            latest, count = key_due[pkey]
            if count > 1:
                key_due[pkey] = (latest, count - 1)
            else:
                del key_due[pkey]
            if isinstance(event, Post):
                released[pkey] = event.chats
                released.move_to_end(pkey)
                if len(released) > REMEMBER_RELEASED:
                    released.popitem(last=False)
            out.append(held)
        out.sort(key=_ORDER)
        return out

    def safe_cursor(self, chat: str, read_cursor: str) -> str:
        """The furthest id of ``chat`` such that every entry up to it has left the buffer."""
        ids = self._chat_ids.get(chat)
        if ids:
            return id_before(next(iter(ids)))
        return read_cursor
