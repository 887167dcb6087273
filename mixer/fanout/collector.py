"""When Python's cycle collector may stop the fan-out server.

With thousands of connections the server holds millions of long-lived objects, and a full
(generation 2) collection walks every one with the event loop stopped: measured at 10,000
clients (scripts/bench_fanout.py), 20-260 ms every 2-3 s while they connect and 360 ms once
mid-load, a stall every client sees; with the freezes below, no full collection ran during
the same load. So the server keeps what has lived a while out of the collector's reach:

- every ``FREEZE_EVERY`` seconds ``gc.freeze()`` moves every tracked object to the permanent
  generation (a list splice, no walk), so collections only walk objects newer than that;
- cycles among frozen objects (those of a closed connection) are only found by a sweep:
  ``gc.unfreeze()`` then a full ``gc.collect()``, then a freeze. A sweep is due every
  ``SWEEP_EVERY`` seconds and waits for a quiet moment (no broadcast for ``QUIET`` seconds),
  but never longer than another ``SWEEP_EVERY``; so garbage cycles live at most
  ``2 * SWEEP_EVERY`` seconds and the one full walk falls where nobody is waiting for a post.

``Collector`` is the pure schedule (the clock passed in); ``keep_collector`` runs it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

FREEZE_EVERY = 1.0  # seconds between freezes (a freeze is a list splice: cheap)
SWEEP_EVERY = 300.0  # seconds between full collections of frozen objects (at a quiet moment)
QUIET = 1.0  # seconds without a broadcast that make a moment quiet
TICK = 1.0  # seconds between looks at the schedule


@dataclass(slots=True)
class Collector:
    """What to do with the cycle collector now: ``"sweep"``, ``"freeze"`` or None."""

    started: float
    freeze_every: float = FREEZE_EVERY
    sweep_every: float = SWEEP_EVERY
    frozen: float = float("-inf")  # when the last freeze was (never: freeze at the first look)
    swept: float | None = None  # when the last sweep was (None: count from ``started``)

    def due(self, now: float, quiet: bool) -> str | None:
        since_sweep = now - (self.started if self.swept is None else self.swept)
        if since_sweep >= self.sweep_every and (quiet or since_sweep >= 2 * self.sweep_every):
            return "sweep"
        if now - self.frozen >= self.freeze_every:
            return "freeze"
        return None

    def done(self, action: str, now: float) -> None:
        if action == "sweep":
            self.swept = now
        self.frozen = now  # a sweep ends with a freeze


def apply(action: str) -> int:
    """Do ``action`` to the process's collector; returns the objects a sweep collected (0 for a freeze)."""
    collected = 0
    if action == "sweep":
        gc.unfreeze()
        collected = gc.collect()
    gc.freeze()
    return collected


async def keep_collector(
    last_broadcast: Callable[[], float],
    clock: Callable[[], float] = time.monotonic,
    schedule: Collector | None = None,
    tick: float = TICK,
) -> None:
    """Run the schedule until cancelled (``last_broadcast()``: the clock's time of the latest broadcast);
    on the way out everything is unfrozen, so the process's collector is as it found it."""
    schedule = schedule or Collector(clock())
    try:
        while True:
            now = clock()
            action = schedule.due(now, quiet=now - last_broadcast() >= QUIET)
            if action is not None:
                began = time.perf_counter()
                collected = apply(action)
                if action == "sweep":
                    took = (time.perf_counter() - began) * 1000
                    frozen = gc.get_freeze_count()
                    log.debug("collector: swept %d objects in %.0f ms; %d frozen", collected, took, frozen)
                schedule.done(action, clock())
            await asyncio.sleep(tick)
    finally:
        gc.unfreeze()
