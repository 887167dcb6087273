"""The reorder buffer: where events wait for their twins before the merge stage releases them.

Pure (the watermark is passed in). Every chat stream entry is added; entries of the same
post (same key, from several chats or followers) become one held post whose ``chats``
are their union; a retraction written to several chat streams is held once. Events are
released once the watermark passes their stamp plus the window, in time order, and
``safe_cursor`` tells how far each chat's stream is fully handled.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from mixer.models import Event, Post, Retraction
from mixer.streams import id_before, id_key


@dataclass(slots=True)
class Pending:
    event: Event
    stamp: int  # ms of the first stream entry id that carried it (Redis time of ingest)
    entries: list[tuple[str, str]] = field(default_factory=list)  # (chat, stream entry id)

    @property
    def order(self) -> tuple[int, str]:
        """Release order: a post by its creation time, an edit or retraction by when it arrived."""
        if isinstance(self.event, Post):
            return self.event.created, self.event.key
        key = self.event.key if isinstance(self.event, Retraction) else self.event.post.key
        return self.stamp, key


def hold_key(event: Event, entry_id: str) -> str:
    """Entries holding the same value share a key: a post's twins, a retraction's copies; each edit is its own."""
    if isinstance(event, Post):
        return event.key
    if isinstance(event, Retraction):
        return f"retract\0{event.key}"
    return f"edit\0{event.post.key}\0{entry_id}"


class ReorderBuffer:
    """Events held until the watermark passes their stamp plus ``window_ms``; released in time order.

    The watermark is the caller's: the oldest point every chat stream has been read up to,
    where a chat whose stream is drained counts as read up to now. So a backlog read in
    chunks still meets its twins from other chats, and a silent chat holds nothing back.
    """

    def __init__(self, window_ms: int, max_pending: int = 50_000) -> None:
        self.window_ms = window_ms
        self.max_pending = max_pending
        self._held: dict[str, Pending] = {}
        self._stamps: list[tuple[int, int, str]] = []  # heap of (stamp, seq, hold key)
        self._seq = 0
        self._chat_ids: dict[str, dict[str, None]] = {}  # per chat, pending entry ids in stream order

    def __len__(self) -> int:
        return len(self._held)

    def add(self, chat: str, entry_id: str, event: Event) -> None:
        """Hold ``event``; a post already held under the same key gains this entry's chats."""
        self._chat_ids.setdefault(chat, {})[entry_id] = None
        key = hold_key(event, entry_id)
        held = self._held.get(key)
        if held is None:
            stamp = id_key(entry_id)[0]
            self._held[key] = Pending(event, stamp, [(chat, entry_id)])
            self._seq += 1
            heapq.heappush(self._stamps, (stamp, self._seq, key))
            return
        held.entries.append((chat, entry_id))
        if isinstance(held.event, Post) and isinstance(event, Post):
            extra = tuple(c for c in event.chats if c not in held.event.chats)
            if extra:
                held.event = held.event.with_chats(held.event.chats + extra)

    def next_due(self) -> int | None:
        """The watermark (ms) at which the oldest held event is released, or None when nothing is held."""
        return self._stamps[0][0] + self.window_ms if self._stamps else None

    def pop_ready(self, watermark: int) -> list[Pending]:
        """Events whose stamp + window is at or below ``watermark`` (and the oldest beyond ``max_pending``)."""
        out: list[Pending] = []
        while self._stamps:
            stamp, _, key = self._stamps[0]
            if stamp + self.window_ms > watermark and len(self._held) <= self.max_pending:
                break
            heapq.heappop(self._stamps)
            held = self._held.pop(key)
            for chat, entry_id in held.entries:
                self._chat_ids[chat].pop(entry_id, None)
            out.append(held)
        out.sort(key=lambda p: p.order)
        return out

    def safe_cursor(self, chat: str, read_cursor: str) -> str:
        """The furthest id of ``chat`` such that every entry up to it has left the buffer."""
        ids = self._chat_ids.get(chat)
        if ids:
            return id_before(next(iter(ids)))
        return read_cursor
