"""The client hub: who is connected, and writing each feed batch to all of them.

``Hub.broadcast`` is synchronous and never awaits a client: for every distinct
(chats filter, format) it encodes the batch's frames once (``posts``, ``update`` and
``retract`` messages, in feed order) and writes those same bytes to each subscriber's
transport. A client's backlog is the transport's unsent bytes; while
it is above ``backlog_bytes`` the client is skipped (the posts it missed are counted
and reported to it in a ``lag`` frame once it drains), and a client that stays full
for ``cutoff_seconds`` is closed with code 4008. So memory per client is bounded and a
client that stops reading cannot delay anyone else.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .codec import wire
from .streams import id_key

log = logging.getLogger(__name__)

CLOSE_SLOW = 4008  # our close code for "your backlog stayed full too long"
ChatFilter = frozenset[str] | None
FeedItem = tuple[str, dict[str, Any]]  # ("p", post) | ("u", updated post) | ("r", {"ids": [...]}) | ("n", {"post"})


@dataclass(eq=False, slots=True)
class Client:
    """One websocket subscriber: where to write, what it wants, how far behind it is."""

    transport: asyncio.WriteTransport
    chats: ChatFilter = None
    fmt: str = "json"
    full_since: float | None = None  # when its backlog first went over the limit, while it stays over
    skipped: int = 0  # posts not sent because it was full, not yet reported in a lag frame
    closed: bool = False
    stats: Counter[str] = field(default_factory=Counter)

    @property
    def group(self) -> tuple[ChatFilter, str]:
        return self.chats, self.fmt


def wants(chats: ChatFilter, item: dict[str, Any]) -> bool:
    """Whether an item passes a client's chats filter (no filter: everything)."""
    return chats is None or not chats.isdisjoint(item["chats"])


def select(chats: ChatFilter, items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item for item in items if wants(chats, item)]


def frames_for(chats: ChatFilter, entries: list[FeedItem]) -> list[dict[str, Any]]:
    """The messages a client with ``chats`` gets for a feed batch: runs of posts and updates, and retractions."""
    messages: list[dict[str, Any]] = []
    for kind, item in entries:
        if kind == "n":
            messages.append({"type": "pin", "post": item.get("post")})
            continue
        if kind == "r":
            if messages and messages[-1]["type"] == "retract":
                messages[-1]["ids"] += item["ids"]
            else:
                messages.append({"type": "retract", "ids": list(item["ids"])})
            continue
        if not wants(chats, item):
            continue
        kind_name = "posts" if kind == "p" else "update"
        if messages and messages[-1]["type"] == kind_name:
            messages[-1]["items"].append(item)
        else:
            messages.append({"type": kind_name, "items": [item]})
    return messages


def close_frame(code: int, reason: str) -> bytes:
    payload = struct.pack("!H", code) + reason.encode()[:120]
    return bytes([0x88, len(payload)]) + payload


class ChatRates:
    """Posts per chat: the total seen and how many in the last minute (clock passed in)."""

    def __init__(self, span: float = 60.0) -> None:
        self.span = span
        self.totals: Counter[str] = Counter()
        self._recent: deque[tuple[float, tuple[str, ...]]] = deque()

    def add(self, chats: Iterable[str], now: float) -> None:
        chats = tuple(chats)
        self.totals.update(chats)
        self._recent.append((now, chats))

    def per_minute(self, now: float) -> Counter[str]:
        """Posts per chat over the last ``span`` seconds, scaled to a minute."""
        while self._recent and self._recent[0][0] < now - self.span:
            self._recent.popleft()
        counts: Counter[str] = Counter()
        for _, chats in self._recent:
            counts.update(chats)
        scale = 60.0 / self.span
        return Counter({chat: round(n * scale) for chat, n in counts.items()})


class Hub:
    """Subscribers grouped by filter and format; broadcast writes one shared frame per group."""

    def __init__(
        self, backlog_bytes: int = 1 << 20, cutoff_seconds: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.backlog_bytes = backlog_bytes
        self.cutoff_seconds = cutoff_seconds
        self._clock = clock
        self._groups: dict[tuple[ChatFilter, str], set[Client]] = {}
        self.cursor = "0-0"  # id of the last feed entry broadcast; clients joining now get everything after it
        self.counters: Counter[str] = Counter()
        self.rates = ChatRates()

    def __len__(self) -> int:
        return sum(len(g) for g in self._groups.values())

    def clients(self) -> list[Client]:
        return [c for group in self._groups.values() for c in group]

    def add(self, client: Client) -> None:
        """Subscribe: from now on the client gets every batch broadcast after ``self.cursor``."""
        self._groups.setdefault(client.group, set()).add(client)

    def remove(self, client: Client) -> None:
        group = self._groups.get(client.group)
        if group is not None:
            group.discard(client)
            if not group:
                del self._groups[client.group]

    def broadcast(self, entries: list[FeedItem], last_id: str) -> None:
        """Send a feed batch (in feed order) to every subscriber; never blocks on a client."""
        if id_key(last_id) > id_key(self.cursor):
            self.cursor = last_id
        now = self._clock()
        for kind, item in entries:
            if kind == "p":
                self.rates.add(item["chats"], now)
        for (chats, fmt), group in list(self._groups.items()):
            messages = frames_for(chats, entries)
            if not messages:
                continue
            frame = wire(messages, fmt)
            count = sum(len(m.get("items", ())) for m in messages)
            self.counters["frames_encoded"] += len(messages)
            for client in list(group):
                self._send(client, frame, count, now)

    def send_all(self, message: dict[str, Any]) -> None:
        """One message (e.g. ``stats``) to every subscriber, encoded once per format; full clients skip it."""
        frames: dict[str, bytes] = {}
        for client in self.clients():
            if client.closed or client.transport.is_closing():
                continue
            if client.transport.get_write_buffer_size() > self.backlog_bytes:
                continue
            if client.fmt not in frames:
                frames[client.fmt] = wire([message], client.fmt)
            client.transport.write(frames[client.fmt])

    def _send(self, client: Client, frame: bytes, count: int, now: float) -> None:
        transport = client.transport
        if client.closed or transport.is_closing():
            self.remove(client)
            return
        if transport.get_write_buffer_size() > self.backlog_bytes:
            client.skipped += count
            self.counters["posts_skipped"] += count
            if client.full_since is None:
                client.full_since = now
            elif now - client.full_since >= self.cutoff_seconds:
                self.cut_off(client)
            return
        client.full_since = None
        if client.skipped:
            self._report_lag(client)
        transport.write(frame)
        self.counters["frames_sent"] += 1
        self.counters["posts_sent"] += count
        self.counters["bytes_sent"] += len(frame)

    def _report_lag(self, client: Client) -> None:
        lag = {"type": "lag", "skipped": client.skipped}
        client.transport.write(wire([lag], client.fmt))
        client.skipped = 0
        self.counters["lag_frames"] += 1

    def cut_off(self, client: Client) -> None:
        """Close a client that stayed full: a close frame, then the socket is dropped."""
        log.info("hub: closing a client whose backlog stayed over %d bytes", self.backlog_bytes)
        self.counters["cut_off"] += 1
        client.closed = True
        self.remove(client)
        transport = client.transport
        if client.fmt != "sse":
            transport.write(close_frame(CLOSE_SLOW, "backlog full, reconnect with since"))
        # the close frame sits behind the backlog it never read: do not wait for it
        transport.abort()

    def sweep(self) -> None:
        """Between batches: close clients full for too long; tell drained ones what they missed."""
        now = self._clock()
        for client in self.clients():
            if client.full_since is None:
                continue
            if client.transport.get_write_buffer_size() > self.backlog_bytes:
                if now - client.full_since >= self.cutoff_seconds:
                    self.cut_off(client)
                continue
            client.full_since = None
            if client.skipped:
                self._report_lag(client)
