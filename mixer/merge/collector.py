"""Python's cycle collector tuned for the merge stage's throughput.

The merge stage allocates a dozen container objects per post (the decoded Post, its
feed dict, the reorder buffer's entries), nearly all freed by reference counting within
a batch. With the default threshold (a generation-0 walk every 700 net allocations, a
full walk when enough survivors pile up) the collector took ~10% of the stage's CPU in
``scripts/bench_merge.py`` (0.20 s of 2.2 s: 650 young, 60 middle and 5 full walks, the
full ones walking the compiled moderation pattern and every module each time).
``throughput_collector`` raises the generation-0 threshold and freezes what exists at
start-up (the compiled rules, modules) out of the collector's reach: measured, 0.06 s.
Cycles still get collected, only in larger batches; what is frozen is never collected
(it lives as long as the process anyway). Not here: the fan-out server's schedule of
freezes and sweeps (``mixer.fanout.collector``), which coexists with this one.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

GEN0 = 10_000  # net container allocations between young collections (CPython's default: 700)
_inside: list[tuple[int, int, int]] = []  # the thresholds found by each entry still inside, outermost first


@contextmanager
def throughput_collector(gen0: int = GEN0) -> Iterator[None]:
    """Inside: young collections every ``gen0`` allocations, start-up objects frozen. When the last of any
    overlapping entries (two stages in one process, in any order) leaves, the thresholds are as the first
    found them and everything is unfrozen, so the process's collector is as it was."""
    _inside.append(gc.get_threshold())
    gc.set_threshold(gen0, *_inside[0][1:])
    gc.freeze()
    try:
        yield
    finally:
        first = _inside[0]
        _inside.pop()
        if not _inside:
            gc.set_threshold(*first)
            gc.unfreeze()
