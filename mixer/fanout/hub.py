"""The hub: the feed's batches written to every client, lap by lap.

Publishing and writing are apart. ``Hub.publish`` (the feed follower, for each batch it reads)
stores the batch and returns at once; ``Hub.run`` writes to the clients in *laps*: it goes
round every client in turn, a step of ``STEP`` clients at a time with the loop free between
steps (for reads, pings, new clients), and writes each client everything published since its
last turn. A batch published mid-lap reaches the rest of that lap's clients in that lap and
the others in the next, so a post waits at most one lap, not a wait for the next broadcast
plus that broadcast's length. ``Hub.broadcast`` publishes and writes a whole lap at once
(tests and tools).

It never awaits a client: for every distinct (chats filter, format, what the client has
seen) it encodes the frames once (``posts``, ``update``, ``retract`` and ``pin`` messages,
in feed order; each post's bytes are encoded once per format and joined) and writes those
same bytes to each such client's transport; clients that had their previous turn in the
same stretch of the lap have seen the same batches, so a lap encodes a few frames, not one
per client. A frame of 16 KB or more goes from one in-memory file by ``sendfile``
(``mixer.fanout.zerocopy``). A client gets at most ``BATCH_POSTS`` posts per frame (more go in
further frames of the same turn, split at batch boundaries): bigger frames cost more per
delivery, so a hub that fell behind catches up instead of sending ever bigger frames.

Each write to a client obeys the backlog, lag, cut-off and heartbeat rules of ``ClientRing``
(``mixer.fanout.clients``), which ``Hub`` extends. A feed entry that cannot be encoded is
skipped and logged, its neighbours delivered (``entries_unencodable``); a step that fails
anyway is logged and the lap goes on.

Flushing: a lap that begins when the hub was idle (the previous lap's interval is over) goes
at full speed from a new start client (golden-ratio steps, so no client is always first):
a post on a quiet feed goes out at once. While busy, a lap is paced over the *interval*:
``flush_interval``, or the last lap's writing time divided by ``BUSY_SHARE`` (4/3 of it),
up to ``STRETCH_MAX`` flush intervals, and the next lap starts where this one did. Each
client then gets at most one turn per interval, its posts coalesced into one frame: the
writes per second (each a syscall, and the kernel's loopback work is most of the server's
CPU) stay bounded, and the loop keeps a quarter of its time for reads, pings and new clients.
Latency added: none when idle, at most one interval under load.

"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Callable

from mixer.fanout.clients import Client, ClientRing
from mixer.fanout.messages import ChatFilter, Piece, encode_batches
from mixer.fanout.rates import ChatRates
from mixer.feed import FeedItem
from mixer.streams import id_key

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.025  # seconds: while busy, at most one turn per client per interval (see the module docstring)
BUSY_SHARE = 0.75  # while busy, writing takes at most this share of the time (the rest: reads, pings, clients)
# (0.5 gave a 5,000-client broadcast of 40 ms an 80 ms interval: 138 ms p99; 0.75 gives 89 ms, docs/benchmarks.md)
STRETCH_MAX = 6  # ... but the interval stretches to at most this many flush intervals
STEP = 256  # clients written per step of a lap (2-3 ms on loopback), the loop free in between
GOLDEN = 0.6180339887498949  # turn * GOLDEN mod 1 spreads start positions evenly, whatever the number of turns


def lap_interval(work: float, flush_interval: float) -> float:
    """How long a busy lap takes when its writing took ``work`` seconds last time: writing is at most
    ``BUSY_SHARE`` of the time, and a lap lasts at least ``flush_interval``, at most ``STRETCH_MAX`` of them."""
    return min(max(flush_interval, work / BUSY_SHARE), STRETCH_MAX * flush_interval)


def first_of(turn: int, size: int) -> int:
    """Where among ``size`` clients lap ``turn`` begins when it begins from idle: a step round by the golden
    ratio each time, so no client is always first and each start comes about equally often."""
    return int((turn * GOLDEN) % 1.0 * size)


class Hub(ClientRing):
    """Published batches written to the subscribers lap by lap (see the module docstring)."""

    def __init__(
        self,
        backlog_bytes: int = 1 << 20,
        cutoff_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        flush_interval: float = FLUSH_INTERVAL,
        step: int = STEP,
    ) -> None:
        super().__init__(backlog_bytes, cutoff_seconds, clock)
        self.step = step
        self.flush_interval = flush_interval
        self.cursor = "0-0"  # id of the last feed entry published; clients joining now get everything after it
        self.seq = 0  # batches published; a client's ``seen`` is the last one it was written (or skipped)
        self._batches: list[list[FeedItem]] = []  # published batches someone has yet to see: seq _first, _first+1..
        self._first = 1
        self._memo: dict[str, dict[int, bytes]] = {}  # per format, the stored batches' encoded items
        self._pieces: dict[tuple[ChatFilter, str, int], list[Piece]] = {}  # turns' frames up to ``seq``
        self._lap: list[Client] = []  # the clients of the lap under way, in the order they are written
        self._at = 0  # the next of them
        self._lap_seq = 0  # ``seq`` when the lap began: at its end, every client has seen that much
        self._lap_began = -flush_interval  # when (hub clock) the lap under way, or the last one, began
        self._steps: tuple[list[int], list[float]] = ([], [])  # this lap's steps: where each began, and when
        self._prev_steps: tuple[list[int], list[float]] = ([], [])  # ... the previous lap's
        self._continues = False  # batches came during the last lap: the next one goes on from it, paced
        self._interval = 0.0  # how long the lap under way should take (0: at full speed)
        self._work = 0.0  # seconds spent writing in this lap
        self._last_work = 0.0  # ... in the last complete one
        self._start = 0  # where in the ring laps begin
        self._flushed = -flush_interval  # when the latest step of writing ran
        self._wake = asyncio.Event()  # set by ``publish``: there is something to write
        self.rates = ChatRates()

    def add(self, client: Client) -> None:
        """Subscribe: from now on the client gets every batch published after ``self.cursor``."""
        super().add(client)
        client.seen = self.seq

    @property
    def last_broadcast(self) -> float:
        """When (on the hub's clock) the latest step of writing to clients ran."""
        return self._flushed

    def publish(self, entries: list[FeedItem], last_id: str) -> None:
        """Take a feed batch (in feed order) for every subscriber; ``run`` (or ``write``) writes it."""
        if id_key(last_id) > id_key(self.cursor):
            self.cursor = last_id
        now = self._clock()
        wall_ms = time.time() * 1000
        delay = 0.0
        for kind, item in entries:
            if kind == "p":
                self.rates.add(item["chats"], now)
                at = item.get("at")
                if isinstance(at, int | float):
                    delay += wall_ms - at
                    self.counters["posts_timed"] += 1
            elif kind == "u" and (joined := item.get("joined")):
                self.rates.add(joined, now)  # a post new to these chats: it counts for them now
        self.counters["broadcasts"] += 1  # batches published
        self.counters["feed_delay_ms"] += round(delay)  # summed over posts: publish -> here (feed and follower)
        self.seq += 1
        self._batches.append(entries)
        self._drop_pieces()
        self._wake.set()

    def broadcast(self, entries: list[FeedItem], last_id: str) -> None:
        """Publish a batch and write it (and anything pending) to every subscriber now."""
        self.publish(entries, last_id)
        while self.pending:  # the lap under way, if any, then one for those it had passed
            self.write()

    @property
    def held(self) -> int:
        """Published batches held because some client has yet to see them."""
        return len(self._batches)

    @property
    def pending(self) -> bool:
        """Whether a lap is under way or some client has yet to see a published batch."""
        return bool(self._lap) or self._lap_seq < self.seq

    def write(self, clients: int | None = None) -> bool:
        """Write the next ``clients`` clients of the lap under way (the whole lap with None), beginning a lap
        if something is pending; True when a lap ended."""
        if not self._lap_ready():
            return False
        now = self._flushed = self._clock()
        end = len(self._lap) if clients is None else min(len(self._lap), self._at + clients)
        self._steps[0].append(self._at)
        self._steps[1].append(now)
        for client in self._lap[self._at : end]:
            if client.seen != self.seq and client in self._ring:
                pieces = self._pieces_for(client)
                try:
                    self._turn(client, pieces, now)
                except Exception:  # one broken connection must not stop the others' posts
                    self._drop_broken(client)
        self._at = end
        took = self._clock() - now
        self._work += took
        self.counters["broadcast_us"] += round(took * 1e6)
        if self._at < len(self._lap):
            return False
        self._end_lap()
        return True

    def due(self) -> float | None:
        """When (hub clock) the next step of writing is due, beginning a lap if something is pending; None while
        there is nothing to write. In a paced lap a step is due when its share of the interval has begun, and
        not before its clients' previous turn is an interval old."""
        if not self._lap_ready():
            return None
        if not self._interval:
            return self._clock()
        due = self._lap_began + self._interval * self._at / len(self._lap)
        starts, times = self._prev_steps
        if times:  # when the previous lap wrote the client at this position (same start, so same clients)
            due = max(due, times[bisect.bisect_right(starts, self._at) - 1] + self._interval)
        return due

    async def run(self) -> None:
        """Write published batches to the clients lap after lap, ``step`` clients at a time, until cancelled."""
        while True:
            try:
                due = self.due()
                if due is None:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if due - self._clock() >= 0.001:  # (a shorter sleep is none: this step goes now, later ones wait)
                    await asyncio.sleep(due - self._clock())
                    continue
                self.write(self.step)
            except Exception:  # (a bug, not a client: ``write`` drops broken clients) go on without this step
                log.exception("hub: a step of writing failed; skipping it")
                self.counters["write_errors"] += 1
                self._skip_step()
            await asyncio.sleep(0)  # reads, pings, new clients

    def _skip_step(self) -> None:
        """Past a step that failed: its clients miss what it would have written (logged); without a lap (it
        failed to begin), everything pending is dropped, so a failure cannot repeat forever."""
        if not self._lap:
            self._lap_seq = self.seq
            self._forget()
            return
        self._at = min(len(self._lap), self._at + self.step)
        if self._at == len(self._lap):
            self._end_lap()

    def _lap_ready(self) -> bool:
        """Whether a lap is under way, beginning one if some client has yet to see a published batch."""
        if not self._lap and self._lap_seq < self.seq:
            self._begin_lap()
        return bool(self._lap)

    def _begin_lap(self) -> None:
        now = self._clock()
        interval = lap_interval(self._last_work, self.flush_interval)
        members = list(self._ring)
        if not members:  # no one to write: everything is seen
            self._lap_seq = self.seq
            self._forget()
            return
        self._prev_steps, self._steps = self._steps, ([], [])
        if not self._continues and now >= self._flushed + interval:  # idle: full speed, from a new start
            self._interval = 0.0
            self._start = first_of(self.counters["laps"], len(members))
        else:  # busy: paced, from where the last lap began, so no client waits more than one interval
            self._interval = interval
        start = min(self._start, len(members))
        self._lap = members[start:] + members[:start]
        self._at = 0
        self._lap_seq = self.seq
        self._lap_began = now
        self._work = 0.0

    def _end_lap(self) -> None:
        """Every client has seen ``_lap_seq``: forget the batches up to it."""
        self.counters["laps"] += 1
        self._continues = self.seq > self._lap_seq
        self._last_work = self._work
        self._lap = []
        self._forget()

    def _forget(self) -> None:
        """Drop the batches every client has seen (up to ``_lap_seq``) and what was encoded of them."""
        del self._batches[: self._lap_seq - self._first + 1]
        self._first = self._lap_seq + 1
        self._drop_pieces()
        self._memo.clear()  # (the stored batches' items are encoded again when next needed: ids stay unique)

    def _drop_pieces(self) -> None:
        for pieces in self._pieces.values():
            for piece in pieces:
                if piece.shared is not None:
                    piece.shared.close()
                    self.counters["frames_zero_copy"] += piece.shared.sent
        self._pieces.clear()

    def _pieces_for(self, client: Client) -> list[Piece]:
        """What was published since the client's last turn, in frames of at most ``BATCH_POSTS`` posts."""
        key = (client.chats, client.fmt, client.seen)
        pieces = self._pieces.get(key)
        if pieces is None:  # the batches after ``seen``, encoded once for every client of this key
            batches = self._batches[max(0, client.seen - self._first + 1) :]
            memo = self._memo.setdefault(client.fmt, {})
            pieces = self._pieces[key] = encode_batches(batches, client.chats, client.fmt, memo, self.counters)
        return pieces

    def _turn(self, client: Client, pieces: list[Piece], now: float) -> None:
        """Write a client its frames (or count them skipped while it is full)."""
        client.seen = self.seq
        for piece in pieces:
            if self._send(client, piece.frame, piece.posts, now, piece.shared):
                self.counters["frames_sent"] += 1
                self.counters["posts_sent"] += piece.posts
                self.counters["bytes_sent"] += len(piece.frame)
            elif client not in self._ring:
                return
