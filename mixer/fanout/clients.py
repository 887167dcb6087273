"""The hub's clients: who is connected, and how each one is written to without ever waiting for it.

``ClientRing`` holds the subscribers in the order they joined and writes one frame to one
client (``_send``) under the rules every path shares. A client's backlog is the transport's
unsent bytes; while it is above ``backlog_bytes`` the client is skipped (the posts it missed
are counted and reported to it in a ``lag`` frame once it drains), and a client that stays
full for ``cutoff_seconds`` is closed with code 4008. So memory per client is bounded and a
client that stops reading delays no one. A client whose write fails in a way not foreseen is
dropped (``write_errors``, logged at the 1st, 2nd, 4th... time).

What a client gets before it joins (its hello, its ``since`` catch-up) goes through
``deliver``, which waits for the backlog to drain to ``backlog_bytes`` instead of skipping,
under the same cut-off. Nothing else writes to a client's transport but the answers to what it
sends (pongs, close frames: ``mixer.fanout.parked``, or aiohttp for a socket that could not be
parked), and no write raises for a client that has gone (``write_to``). A cut-off client gets its close
frame behind its backlog and ``CLOSE_GRACE`` seconds to read them and answer (the close
handshake) before the socket is dropped.

Heartbeats: ``heartbeat`` writes one shared ping frame to the websocket clients of one
heartbeat slot and drops those that did not answer their previous one (a pong or any frame
marks a client ``answered``), unless the client is still taking the bytes queued for it (a
slow reader's ping waits behind them: the backlog rule governs it); a round goes through
``HEARTBEAT_PARTS`` slots, so the pongs come back spread over the interval. This replaces a
timer and a ping task per connection: less memory per idle client and no burst of tasks
every interval.

Not here: what is written and when (the feed's batches, laps, pacing): ``mixer.fanout.hub``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mixer.fanout.frames import wire
from mixer.fanout.messages import ChatFilter, close_frame
from mixer.fanout.zerocopy import SharedFrame, socket_fd

log = logging.getLogger(__name__)

CLOSE_SLOW = 4008  # our close code for "your backlog stayed full too long"
CLOSE_SLOW_REASON = "backlog full, reconnect with since"
# How long a cut-off client may take to read its backlog and the 4008 close frame behind it before the socket is
# dropped: long enough for a slow but live reader to learn why (~1 MiB at a few hundred KB/s), short enough that
# what it holds (at most about backlog_bytes) is freed soon after.
CLOSE_GRACE = 5.0
SIOCOUTQNSD = 0x894B  # Linux ioctl: bytes in a socket's send queue not sent yet (include/uapi/linux/sockios.h)
DRAIN_POLL = (0.01, 0.25)  # ``deliver``'s waits for a backlog to drain: first, then doubling up to the second
PING = b"\x89\x00"  # an empty websocket ping frame (server frames are unmasked): the same bytes for everyone
# A heartbeat round is dealt out in this many parts, each pinging its share of the clients: the pongs
# of 10,000 clients at once stalled the loop once a round: 10,000x100 p99 608 ms, spread out 145 ms.
HEARTBEAT_PARTS = 20


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
    seen: int = 0  # the last batch (``Hub.seq``) written to it or skipped
    fd: int = -1  # its socket, for frames sent by sendfile (mixer.fanout.zerocopy); -1: written through the transport
    written: int = 0  # bytes written to it (transport or sendfile) by the ring
    taken_at_ping: int = 0  # bytes that had left this host for it when it was last pinged (``heartbeat``)


class ClientRing:
    """Subscribers, and the backlog, lag, cut-off and heartbeat rules of writing to each (module docstring)."""

    def __init__(
        self, backlog_bytes: int = 1 << 20, cutoff_seconds: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.backlog_bytes = backlog_bytes
        self.cutoff_seconds = cutoff_seconds
        self._clock = clock
        self._ring: dict[Client, None] = {}  # every subscriber, in the order they joined
        self._full: set[Client] = set()  # subscribers whose backlog is over the limit (``full_since`` set)
        self.counters: Counter[str] = Counter()
        self._joined = 0  # clients ever added: deals out heartbeat slots in turn

    def __len__(self) -> int:
        return len(self._ring)

    def clients(self) -> list[Client]:
        return list(self._ring)

    def add(self, client: Client) -> None:
        """Subscribe a client (``Hub.add`` also marks where in the feed it starts)."""
        client.slot = self._joined % HEARTBEAT_PARTS
        client.fd = socket_fd(client.transport)
        self._joined += 1
        self._ring[client] = None

    def remove(self, client: Client) -> None:
        self._ring.pop(client, None)
        self._full.discard(client)

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
            self.write_to(client, frames[client.fmt])

    def write_to(self, client: Client, data: bytes) -> bool:
        """Queue ``data`` for a client, whatever its backlog; False (nothing written, nothing raised) once it is
        closed or gone: a client leaving is not an error (some event loops raise on a write to a closed socket)."""
        if client.closed or client.transport.is_closing():
            return False
        client.transport.write(data)
        client.written += len(data)
        return True

    async def drained(self, client: Client) -> bool:
        """Wait until a client's backlog is at most ``backlog_bytes``; a client that stays over it for
        ``cutoff_seconds`` is cut off (4008). False once it is closed or gone."""
        transport = client.transport
        pause, began = DRAIN_POLL[0], None
        while not (client.closed or transport.is_closing()):
            if transport.get_write_buffer_size() <= self.backlog_bytes:
                return True
            now = self._clock()
            if began is None:
                began = now
            elif now - began >= self.cutoff_seconds:
                self.cut_off(client)
                break
            # (transports only say when they drop under their own low-water mark: look again, less often)
            await asyncio.sleep(pause)
            pause = min(2 * pause, DRAIN_POLL[1])
        return False

    async def deliver(self, client: Client, data: bytes) -> bool:
        """Write ``data`` to a client once its backlog is at most ``backlog_bytes`` (``drained``), so what it holds
        stays about ``backlog_bytes`` plus one frame however much is sent; False once it is closed, gone or cut off."""
        return await self.drained(client) and self.write_to(client, data)

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
                self._full.add(client)
            elif now - client.full_since >= self.cutoff_seconds:
                self.cut_off(client)
            return False
        if client.full_since is not None or client.skipped:
            self._drained(client)
            backlog = transport.get_write_buffer_size()
        if shared is not None and client.fd >= 0 and not backlog:
            shared.send(client.fd, transport)
            client.written += len(frame)
        else:
            self.write_to(client, frame)
        return True

    def _drop_broken(self, client: Client) -> None:
        self.counters["write_errors"] += 1
        if self.counters["write_errors"] & (self.counters["write_errors"] - 1) == 0:  # 1st, 2nd, 4th...: not a flood
            log.exception("hub: writing to a client failed (%d times); dropping it", self.counters["write_errors"])
        client.closed = True
        self.remove(client)
        with contextlib.suppress(Exception):  # (it is broken already)
            client.transport.abort()

    def _drained(self, client: Client) -> None:
        """A client's backlog went back under the limit: no longer full; tell it what it missed, if anything."""
        client.full_since = None
        self._full.discard(client)
        if client.skipped:
            self._report_lag(client)

    def _report_lag(self, client: Client) -> None:
        lag = {"type": "lag", "skipped": client.skipped}
        self.write_to(client, wire([lag], client.fmt))
        client.skipped = 0
        self.counters["lag_frames"] += 1

    def cut_off(self, client: Client) -> None:
        """Close a client that stayed full. A websocket gets a 4008 close frame behind its backlog: its end reads
        them and answers with its own, and that answer closes the socket (``mixer.fanout.parked``); an SSE stream
        is closed once its backlog is sent. Either way the socket is dropped ``CLOSE_GRACE`` seconds later if it is
        still open: a slow reader learns why, one that never reads holds its backlog that much longer, no more."""
        log.info("hub: closing a client whose backlog stayed over %d bytes", self.backlog_bytes)
        self.counters["cut_off"] += 1
        transport = client.transport
        if client.fmt != "sse":
            self.write_to(client, close_frame(CLOSE_SLOW, CLOSE_SLOW_REASON))
        elif not transport.is_closing():
            transport.close()  # (sends what is queued first)
        client.closed = True
        self.remove(client)
        if not transport.is_closing() or transport.get_write_buffer_size():
            asyncio.get_running_loop().call_later(CLOSE_GRACE, transport.abort)  # (a no-op once closed)

    def heartbeat(self, part: int = 0, parts: int = 1) -> None:
        """Ping the websocket clients of heartbeat slot ``part`` (of ``parts``; all with the defaults); drop one
        that has not answered its previous ping, unless bytes are still queued for it and it took some since
        (a slow reader: its ping is behind them); skips full clients: the backlog rule deals with those."""
        if part == 0:
            self.counters["heartbeats"] += 1  # heartbeat rounds begun
        for client in self.clients():
            transport = client.transport
            if client.slot % parts != part or client.fmt == "sse" or client.closed or transport.is_closing():
                continue
            if transport.get_write_buffer_size() > self.backlog_bytes:
                continue  # the ping would wait behind the backlog; the 4008 cut-off deals with this one
            queued = transport.get_write_buffer_size() + _kernel_unsent(client.fd)
            taken = client.written - queued  # (bytes that left this host for it: grows only while its end reads)
            if not client.answered:
                if taken > client.taken_at_ping and queued:  # reading slowly: its ping is behind the rest
                    client.taken_at_ping = taken
                    self.counters["heartbeat_waited"] += 1
                    continue
                log.info("hub: dropping a client that did not answer a ping")
                self.counters["heartbeat_dropped"] += 1
                client.closed = True
                self.remove(client)
                transport.abort()
                continue
            client.answered = False
            client.taken_at_ping = taken
            self.write_to(client, PING)

    def sweep(self) -> None:
        """Between batches: close clients full for too long; tell drained ones what they missed."""
        now = self._clock()
        for client in list(self._full):
            if client.full_since is None or client not in self._ring:
                self._full.discard(client)
                continue
            if client.transport.get_write_buffer_size() > self.backlog_bytes:
                if now - client.full_since >= self.cutoff_seconds:
                    self.cut_off(client)
                continue
            self._drained(client)


def _kernel_unsent(fd: int) -> int:
    """Bytes a socket's kernel send queue has not sent yet (Linux SIOCOUTQNSD); 0 when unknown (another system,
    TLS: then only the transport's bytes count as queued, which errs towards keeping a client)."""
    if fd < 0 or not sys.platform.startswith("linux"):
        return 0
    import fcntl  # (Unix only)

    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, SIOCOUTQNSD, b"\0\0\0\0"))[0])
    except OSError:
        return 0
