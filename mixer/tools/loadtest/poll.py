"""The counting clients of `mixer loadtest`: many sockets read in paced rounds, with no event loop per socket.

``poll_clients`` runs in a worker process of its own (``mixer.tools.loadtest.client`` starts it for the
workers without sampled clients). It connects its clients at their slots of the ramp (a
blocking connect and upgrade request, then non-blocking), keeps them in one level-triggered
``select.epoll``, and every ``plan.poll`` seconds makes one round: each socket with data is
read until drained, everything that arrived since the last round (often several frames),
walked by ``mixer.tools.loadtest.count.FrameCounter``; the payload of a frame another client already
counted (the server sends every client of a filter the same bytes) is dropped in the kernel
without being copied to us (``MSG_TRUNC``), which halved the load side's CPU at 10M
deliveries/s. Waking per round instead of per frame is what
makes a delivery cheap here; the delay costs no measurement, as latency is measured only by
the sampled clients, which stay event-driven in their own process. The receive buffers
(``RCVBUF``) hold many rounds of posts, so the server never sees a slow reader on our side:
a lag frame here would say otherwise, and is counted. Not here: latency, the parent's pool.
"""

from __future__ import annotations

import select
import socket
import time
from collections import deque

from mixer.tools.loadtest.client import PROGRESS_EVERY, Flag, Sink, WorkerPlan, WorkerStats
from mixer.tools.loadtest.count import BUFFER, CLOSE, FrameCounter, upgrade_request

RCVBUF = 1 << 20  # bytes of kernel receive buffer per socket: seconds of posts at the rates we drive
CONNECT_TIMEOUT = 5.0  # seconds for the TCP connect and sending the upgrade request


class PolledClient(FrameCounter):
    """One counting connection on a non-blocking socket; ``done`` once it closed, was refused or dropped."""

    def __init__(self, sock: socket.socket, n: int, stats: WorkerStats, t0: float) -> None:
        super().__init__(self._counted, self._lagged)
        self.sock, self.n, self.stats, self.t0 = sock, n, stats, t0
        self.was_open = False
        self.done = False

    def _counted(self, count: int, now: float) -> None:
        stats = self.stats
        stats.items += count
        stats.per_client[self.n] += count
        stats.per_second[int(now - self.t0)] += count

    def _lagged(self) -> None:
        self.stats.lag_frames += 1

    def opened(self) -> None:
        self.was_open = True
        stats = self.stats
        stats.connected += 1
        stats.peak = max(stats.peak, stats.connected)
        stats.per_client[self.n] = 0

    def refused(self, line: str) -> None:
        self.done = True

    def finish(self) -> None:
        self.done = True

    def write(self, frame: bytes) -> None:
        try:
            self.sock.send(frame)
        except OSError:  # a full send buffer or a dropped socket: the pong is not needed any more
            pass

    def read(self) -> None:
        """Take all that arrived since the last round; ``done`` at the end of the stream.

        The payload of a frame whose posts are known (another client counted the very same frame) is
        dropped in the kernel unread (``MSG_TRUNC``: TCP discards it without copying it to us); headers,
        small frames and frames not seen before are read and walked."""
        while not self.done:
            skip = self.skippable()
            pending = self.pending
            want = min(skip, BUFFER) if skip else self.read_size()
            try:
                n = self.sock.recv_into(self.get_buffer(-1), want, socket.MSG_TRUNC if skip else 0)
            except BlockingIOError:
                self.pending = pending  # nothing read after all: keep what waits for more
                return
            except OSError:
                n = 0
            if not n:
                if self.close_code is None:
                    self.close_code = 0
                self.done = True
            elif skip:
                self.skipped(n)
            else:
                self.buffer_updated(n)
            if n < want:
                return  # the socket is drained

    def drop(self, stopping: bool) -> None:
        """Close the socket and count how it ended: a failed connect, or a close before ``stopping``."""
        if stopping and not self.done:
            self.write(CLOSE)
        self.sock.close()
        stats = self.stats
        if not self.was_open:
            stats.failed += 1
            return
        stats.connected -= 1
        if not stopping:
            stats.closes += 1
            stats.close_codes[self.close_code or 0] += 1


def connect(plan: WorkerPlan, n: int, stats: WorkerStats, t0: float) -> PolledClient | None:
    """Client ``n`` of ``plan`` with its upgrade request sent (``failed`` counted and None when that failed)."""
    host, port, request = upgrade_request(plan.url)
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)  # before connect: it sets the TCP window
        sock.settimeout(CONNECT_TIMEOUT)
        sock.connect(address)
        sock.sendall(request)
        sock.setblocking(False)
    except OSError:
        sock.close()
        stats.failed += 1
        return None
    return PolledClient(sock, n, stats, t0)


def read_round(epoll: select.epoll, live: dict[int, PolledClient]) -> None:
    """One read of every socket with data (all of them, not epoll's default 1023); the ended ones are dropped."""
    for fd, _ in epoll.poll(0, len(live) or 1):
        client = live[fd]
        client.read()
        if client.done:
            epoll.unregister(fd)
            del live[fd]
            client.drop(stopping=False)


def poll_clients(plan: WorkerPlan, stats: WorkerStats, out: Sink, t0: float, stop: Flag) -> None:
    """Run ``plan``'s counting clients from ``t0`` until ``stop``: one read per socket per round of ``plan.poll`` s."""
    epoll = select.epoll()
    live: dict[int, PolledClient] = {}
    slots = deque(plan.clients)
    report_at = 0.0
    try:
        while not stop.is_set():
            began = time.monotonic()
            while slots and t0 + plan.ramp * slots[0] / max(plan.total, 1) <= time.time():
                client = connect(plan, slots.popleft(), stats, t0)
                if client is not None:
                    live[client.sock.fileno()] = client
                    epoll.register(client.sock.fileno(), select.EPOLLIN)
            read_round(epoll, live)
            if began >= report_at:
                out.put(("progress", plan.worker, stats.progress()))
                report_at = began + PROGRESS_EVERY
            time.sleep(max(0.0, began + plan.poll - time.monotonic()))
    finally:
        for client in live.values():
            client.drop(stopping=True)
        epoll.close()
