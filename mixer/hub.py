"""The client hub: who is connected, and writing each feed batch to all of them.

``Hub.broadcast`` is synchronous and never awaits a client: for every distinct
(chats filter, format) it encodes the batch's frames once (``posts``, ``update`` and
``retract`` messages, in feed order) and writes those same bytes to each subscriber's
transport; a frame of 16 KB or more goes from one in-memory file by ``sendfile``
(``mixer.zerocopy``: the kernel references its pages instead of copying the frame per
client). A client's backlog is the transport's unsent bytes; while
it is above ``backlog_bytes`` the client is skipped (the posts it missed are counted
and reported to it in a ``lag`` frame once it drains), and a client that stays full
for ``cutoff_seconds`` is closed with code 4008. So memory per client is bounded and a
client that stops reading cannot delay anyone else.

Flushing: the follower broadcasts a batch as soon as it reads one when the hub is idle (no
broadcast began in the last interval); while busy it waits out ``Hub.pause()`` first, so the
posts arriving meanwhile go out together, one frame per client per interval. The interval is
``flush_interval`` or, when a broadcast takes longer than ``BUSY_SHARE`` of that, the last
broadcast's duration divided by ``BUSY_SHARE`` (4/3 of it), up to ``STRETCH_MAX`` flush
intervals: with many clients the frames grow instead of the writes, so the writes per second (each is a syscall, and the
kernel's loopback work is most of the server's CPU) stay bounded and the loop keeps time for
reads, pings and new clients. The cap matters when broadcasts are long because the frames
are big (bytes, not writes, dominate): stretching further would only make them bigger still.
Past the cap a broadcast that takes longer than the interval is followed at once by the next
one. A read takes at most ``mixer.app.BATCH_POSTS`` posts, and a full read is followed by the
next at once (more are waiting): frames stay near one 64 KB segment, which costs the least per
delivery, so a server that fell behind catches up instead of sending ever bigger frames.
Latency added: none when idle, at most one interval under load.

Fairness: each broadcast starts writing at another client (``rotated``), so the spread of a
broadcast over time is shared by everyone instead of always delaying the same clients.

Heartbeats: ``Hub.heartbeat`` writes one shared ping frame to the websocket clients of one
heartbeat slot and drops those that did not answer their previous one (a pong or any frame
marks a client ``answered``); a round goes through ``HEARTBEAT_PARTS`` slots, so the pongs
come back spread over the interval. This replaces a timer and a ping task per connection:
less memory per idle client and no burst of tasks every interval.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .codec import wire
from .streams import id_key
from .zerocopy import SharedFrame, socket_fd

log = logging.getLogger(__name__)

CLOSE_SLOW = 4008  # our close code for "your backlog stayed full too long"
PING = b"\x89\x00"  # an empty websocket ping frame (server frames are unmasked): the same bytes for everyone
FLUSH_INTERVAL = 0.025  # seconds: at most one broadcast per interval while busy (see the module docstring)
# A heartbeat round is dealt out in this many parts, each pinging its share of the clients: the pongs
# of 10,000 clients at once stalled the loop once a round: 10,000x100 p99 608 ms, spread out 145 ms.
HEARTBEAT_PARTS = 20
BUSY_SHARE = 0.75  # while busy, broadcasting takes at most this share of the time (the rest: reads, pings, clients)
# (0.5 gave a 5,000-client broadcast of 40 ms an 80 ms interval: 138 ms p99; 0.75 gives 89 ms, docs/benchmarks.md)
STRETCH_MAX = 6  # ... but the interval stretches to at most this many flush intervals
GOLDEN = 0.6180339887498949  # turn * GOLDEN mod 1 spreads start positions evenly, whatever the number of turns
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
    answered: bool = True  # it sent something (a pong, a ping, a message) since the last heartbeat ping
    slot: int = 0  # which part of the heartbeat round pings it (Hub.heartbeat)
    fd: int = -1  # its socket, for frames sent by sendfile (mixer.zerocopy); -1: written through the transport

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


def rotated(members: list[Client], turn: int) -> list[Client]:
    """``members`` from a start that moves round by the golden ratio each turn: a broadcast takes tens of ms at
    thousands of clients, and none should be last every time (each start position comes about equally often)."""
    if len(members) < 2:
        return members
    start = int((turn * GOLDEN) % 1.0 * len(members))
    return members[start:] + members[:start]


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
        self,
        backlog_bytes: int = 1 << 20,
        cutoff_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        self.backlog_bytes = backlog_bytes
        self.cutoff_seconds = cutoff_seconds
        self.flush_interval = flush_interval
        self._clock = clock
        self._flushed = -flush_interval  # when the last broadcast began
        self._took = 0.0  # how long it took
        self._groups: dict[tuple[ChatFilter, str], set[Client]] = {}
        self.cursor = "0-0"  # id of the last feed entry broadcast; clients joining now get everything after it
        self.counters: Counter[str] = Counter()
        self.rates = ChatRates()
        self._joined = 0  # clients ever added: deals out heartbeat slots in turn

    @property
    def last_broadcast(self) -> float:
        """When (on the hub's clock) the latest broadcast began."""
        return self._flushed

    def __len__(self) -> int:
        return sum(len(g) for g in self._groups.values())

    def clients(self) -> list[Client]:
        return [c for group in self._groups.values() for c in group]

    def add(self, client: Client) -> None:
        """Subscribe: from now on the client gets every batch broadcast after ``self.cursor``."""
        client.slot = self._joined % HEARTBEAT_PARTS
        client.fd = socket_fd(client.transport)
        self._joined += 1
        self._groups.setdefault(client.group, set()).add(client)

    def remove(self, client: Client) -> None:
        group = self._groups.get(client.group)
        if group is not None:
            group.discard(client)
            if not group:
                del self._groups[client.group]

    def pause(self) -> float:
        """Seconds to wait before reading the next batch: 0 when idle, else what is left of the flush interval."""
        interval = min(max(self.flush_interval, self._took / BUSY_SHARE), STRETCH_MAX * self.flush_interval)
        return max(0.0, self._flushed + interval - self._clock())

    def broadcast(self, entries: list[FeedItem], last_id: str) -> None:
        """Send a feed batch (in feed order) to every subscriber; never blocks on a client."""
        if id_key(last_id) > id_key(self.cursor):
            self.cursor = last_id
        now = self._flushed = self._clock()
        began = time.perf_counter()
        wall_ms = time.time() * 1000
        delay = 0.0
        for kind, item in entries:
            if kind == "p":
                self.rates.add(item["chats"], now)
                at = item.get("at")
                if isinstance(at, int | float):
                    delay += wall_ms - at
                    self.counters["posts_timed"] += 1
        self.counters["broadcasts"] += 1
        self.counters["feed_delay_ms"] += round(delay)  # summed over posts: publish -> here (feed and follower)
        for (chats, fmt), group in list(self._groups.items()):
            messages = frames_for(chats, entries)
            if not messages:
                continue
            frame = wire(messages, fmt)
            count = sum(len(m.get("items", ())) for m in messages)
            self.counters["frames_encoded"] += len(messages)
            shared = SharedFrame.of(frame)
            sent = 0
            try:
                for client in rotated(list(group), self.counters["broadcasts"]):
                    sent += self._send(client, frame, count, now, shared)
            finally:
                if shared is not None:
                    shared.close()
                    self.counters["frames_zero_copy"] += shared.sent
            self.counters["frames_sent"] += sent
            self.counters["posts_sent"] += count * sent
            self.counters["bytes_sent"] += len(frame) * sent
        self._took = self._clock() - now
        self.counters["broadcast_us"] += round((time.perf_counter() - began) * 1e6)

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

    def _send(self, client: Client, frame: bytes, count: int, now: float, shared: SharedFrame | None = None) -> bool:
        """Write ``frame`` to one client unless it is closed or full (then count what it missed); True if written.

        With ``shared`` (the same frame in an in-memory file) it goes by sendfile while nothing is queued."""
        transport = client.transport
        if client.closed or transport.is_closing():
            self.remove(client)
            return False
        backlog = transport.get_write_buffer_size()
        if backlog > self.backlog_bytes:
            client.skipped += count
            self.counters["posts_skipped"] += count
            if client.full_since is None:
                client.full_since = now
            elif now - client.full_since >= self.cutoff_seconds:
                self.cut_off(client)
            return False
        if client.full_since is not None or client.skipped:
            client.full_since = None
            if client.skipped:
                self._report_lag(client)
                backlog = transport.get_write_buffer_size()
        if shared is not None and client.fd >= 0 and not backlog:
            shared.send(client.fd, transport)
        else:
            transport.write(frame)
        return True

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

    def heartbeat(self, part: int = 0, parts: int = 1) -> None:
        """Ping the websocket clients of heartbeat slot ``part`` (of ``parts``; all with the defaults); drop one
        that has not answered its previous ping (skips full clients)."""
        if part == 0:
            self.counters["heartbeats"] += 1  # heartbeat rounds begun
        for client in self.clients():
            transport = client.transport
            if client.slot % parts != part or client.fmt == "sse" or client.closed or transport.is_closing():
                continue
            if transport.get_write_buffer_size() > self.backlog_bytes:
                continue  # the ping would wait behind the backlog; the 4008 cut-off deals with this one
            if not client.answered:
                log.info("hub: dropping a client that did not answer a ping")
                self.counters["heartbeat_dropped"] += 1
                client.closed = True
                self.remove(client)
                transport.abort()
                continue
            client.answered = False
            transport.write(PING)

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
