"""Rate shaping: the pure scheduler that turns the merged feed into one paced stream per profile.

A ``Profile`` (``mixer.settings``: it is config) is a named shape: ``wall`` (a readable pace) or
``full`` (everything, unshaped). ``Shaper`` applies one profile to feed ids offered in feed order, the clock passed
to every call: a GCRA token bucket (``rate``, ``burst``) paces what leaves, weighted deficit
round robin across per-chat queues shares it fairly between chats, and an id that waited longer
than ``max_wait`` is dropped (oldest first) and counted per chat for "+N more from #chat".
It holds ids only, never Posts, and touches no Redis: the stage that reads the feed, keeps the
Posts and writes each profile's stream is ``mixer.merge.shaping``, so that the shaped streams are computed
once and every replica reads the same ones. The bounds and why they hold: docs/shaping.md.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable

from mixer.settings import DEFAULT_WEIGHT, Profile


class _Queue:
    """One chat's waiting ids in offer order, with its deficit-round-robin state."""

    __slots__ = ("deficit", "ids", "quantum")

    def __init__(self, quantum: float) -> None:
        self.ids: OrderedDict[str, None] = OrderedDict()
        self.quantum = quantum  # items credited per turn: weight / smallest weight, so >= 1
        self.deficit = 0.0  # credit left; in [0, quantum + 1) at all times


class Shaper:
    """One profile's scheduler over feed ids: pure and deterministic, the caller's clock passed to every call.

    Guarantees (shaped profile; proofs in docs/shaping.md): an id is emitted at most once and only
    if it is held; every offered id ends up emitted, dropped (counted, ``on_drop`` called), removed,
    or is still held and has waited at most ``max_wait``; over any window of ``w`` seconds at most
    ``rate * w + burst`` ids are emitted; no id is emitted after waiting more than ``max_wait``;
    while chats i and j both have ids waiting, their emissions n_i/q_i and n_j/q_j (q = weight /
    smallest weight) drift apart by less than 1 + 1/q_i + 1/q_j, and by at most 1 for whole quanta.
    A clock that goes backwards is treated as standing still. An unshaped profile emits everything
    at the next take(), in offer order, and never drops.
    """

    def __init__(self, profile: Profile, on_drop: Callable[[str], None] | None = None) -> None:
        self.profile = profile
        self._on_drop = on_drop  # told each dropped id, so the caller can let go of its Post
        self._shaped = profile.shaped
        self._interval = 1.0 / profile.rate if self._shaped else 0.0
        self._tolerance = (profile.burst - 1) * self._interval  # GCRA: how far ahead of the pace a burst may run
        self._tat = -math.inf  # GCRA theoretical arrival time: the pace allows an emission at tat - tolerance
        self._now = -math.inf  # the latest clock reading seen
        self._unit = min((DEFAULT_WEIGHT, *profile.weights.values()))  # the smallest weight gets quantum 1
        # At most the offer time of every held id (they rise with the clock): while now - this <= max_wait for a
        # finite now, nothing held has expired (float subtraction is monotonic), and offer() skips _expire.
        self._oldest = -math.inf
        self._held: OrderedDict[str, tuple[str, tuple[str, ...], float]] = OrderedDict()  # id -> (queue, chats, t)
        self._queues: dict[str, _Queue] = {}  # exactly the chats in the ring
        self._ring: deque[str] = deque()  # round-robin order; its head is the chat whose turn it is
        self._charged = False  # whether the head has been given its quantum for this turn
        self._drops: dict[str, int] = {}
        # A plain dict, not a Counter: a Counter's += costs 150 ns (a dict subclass), paid twice a post on a busy night
        self._counts = dict.fromkeys(("offered", "duplicate", "emitted", "dropped", "removed"), 0)

    @property
    def counters(self) -> Counter[str]:
        """Ids offered, offered again while held (duplicate), emitted, dropped and removed so far: a copy, no zeros."""
        return Counter({name: count for name, count in self._counts.items() if count})

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._held

    def offer(self, item_id: str, chats: tuple[str, ...], now: float) -> bool:
        """Queue ``item_id`` (a feed id) under one of ``chats``; False, changing nothing, if it is already held.

        A post in several chats waits in the queue of the one with the fewest waiting posts per unit
        of weight (the first such, in ``chats`` order); it counts against that chat's share, and is
        emitted at most once. A full queue (``max_queue``) drops its own oldest id to make room.
        """
        if item_id in self._held:
            self._counts["duplicate"] += 1
            return False
        now = self._tick(now)
        self._counts["offered"] += 1
        if not self._shaped:
            self._held[item_id] = (chats[0] if chats else "", chats, now)
            return True
        if not (now - self._oldest <= self.profile.max_wait and now < math.inf):  # else something may have expired
            self._expire(now)
        chat = self._choose(chats)
        queue = self._queues.get(chat)
        if queue is None:
            queue = self._queues[chat] = _Queue(self.profile.weight(chat) / self._unit)
            self._ring.append(chat)
        elif len(queue.ids) >= self.profile.max_queue:
            self._drop(next(iter(queue.ids)))
        queue.ids[item_id] = None
        self._held[item_id] = (chat, chats, now)
        return True

    def take(self, now: float) -> list[str]:
        """The ids to emit now, in emission order; first drops (and counts) every id older than ``max_wait``."""
        now = self._tick(now)
        if not self._shaped:
            out = list(self._held)
            self._held.clear()
        else:
            self._expire(now)
            out = []
            while self._held and now >= self._tat - self._tolerance:
                out.append(self._pick())
                self._tat = max(self._tat, now) + self._interval
        self._counts["emitted"] += len(out)
        return out

    def next_due(self, now: float) -> float | None:
        """The earliest time >= ``now`` at which take() may emit (it may find all expired); None while nothing waits."""
        if not self._held:
            return None
        if not self._shaped:
            return now
        return max(now, self._tat - self._tolerance)

    def unheld(self, ids: Iterable[str]) -> set[str]:
        """Those of ``ids`` not held (never offered, or emitted, dropped or removed since)."""
        held = self._held
        return {item_id for item_id in ids if item_id not in held}

    def remove(self, item_id: str) -> bool:
        """Forget a waiting id (hidden by a moderator, retracted): never emitted, not counted as dropped.

        False if it is not held (never offered, already emitted or dropped).
        """
        if item_id not in self._held:
            return False
        self._unhold(item_id)
        self._counts["removed"] += 1
        return True

    def dropped(self, chat: str) -> int:
        """Posts of ``chat`` dropped since the last drain_drops() (a post in several chats counts in each)."""
        return self._drops.get(chat, 0)

    def drain_drops(self) -> dict[str, int]:
        """Per-chat counts of dropped posts since the last call ("+N more from #chat"), then zeroed."""
        drops, self._drops = self._drops, {}
        return drops

    def queued(self, chat: str) -> int:
        """How many ids wait in the queue of ``chat``."""
        queue = self._queues.get(chat)
        return len(queue.ids) if queue is not None else 0

    def queue_of(self, item_id: str) -> str | None:
        """The chat whose queue holds ``item_id`` (whose share it counts against), or None if not held."""
        held = self._held.get(item_id)
        return held[0] if held is not None else None

    def _tick(self, now: float) -> float:
        if now > self._now:
            self._now = now
        return self._now

    def _choose(self, chats: tuple[str, ...]) -> str:
        if len(chats) <= 1:
            return chats[0] if chats else ""
        best, best_load = chats[0], math.inf
        for chat in chats:
            queue = self._queues.get(chat)
            load = (len(queue.ids) if queue is not None else 0) / self.profile.weight(chat)
            if load < best_load:
                best, best_load = chat, load
        return best

    def _expire(self, now: float) -> None:
        # Offer times rise with the (clamped) clock, so the oldest held id is always the first.
        held, max_wait = self._held, self.profile.max_wait
        while held:
            item_id = next(iter(held))
            offered = held[item_id][2]
            if now - offered <= max_wait:
                self._oldest = offered
                return
            self._drop(item_id)
        self._oldest = now  # nothing held: what comes next is offered at now or later

    def _pick(self) -> str:
        """Deficit round robin, one id at a time, so a chat's turn may span several take() calls."""
        ring, queues = self._ring, self._queues
        while True:
            chat = ring[0]
            queue = queues[chat]
            if not queue.ids:  # emptied by expiry or removal: it leaves the ring and forfeits its credit
                self._leave(chat)
                continue
            if not self._charged:
                queue.deficit += queue.quantum
                self._charged = True
            if queue.deficit >= 1.0:
                queue.deficit -= 1.0
                item_id, _ = queue.ids.popitem(last=False)
                del self._held[item_id]
                if not queue.ids:
                    self._leave(chat)
                return item_id
            ring.rotate(-1)
            self._charged = False

    def _leave(self, chat: str) -> None:
        self._ring.popleft()
        del self._queues[chat]
        self._charged = False

    def _unhold(self, item_id: str) -> tuple[str, tuple[str, ...], float]:
        held = self._held.pop(item_id)
        queue = self._queues.get(held[0])
        if queue is not None:
            del queue.ids[item_id]  # stays in the ring even if empty: _pick clears it in O(1)
        return held

    def _drop(self, item_id: str) -> None:
        chat, chats, _ = self._unhold(item_id)
        for tag in chats or (chat,):
            self._drops[tag] = self._drops.get(tag, 0) + 1
        self._counts["dropped"] += 1
        if self._on_drop is not None:
            self._on_drop(item_id)
