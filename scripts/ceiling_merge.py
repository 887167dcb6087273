"""Benchmark: how fast the merge stage could be if some of its parts cost (almost) nothing, beside the real stage.

Issue 17.1 asks 50,000 posts/s of `scripts/bench_merge.py`'s merge stage. Before writing any part again in native
code, this measures what that could buy at most: the same run as bench_merge (the demo, N passes, 29% of posts in
two chats; the baseline and the real stage first), then the stage with parts replaced by stand-ins that do a
fraction of the work, each alone and then all together:

  moderation free     Moderator.judge shows every post without looking at it
  fingerprints free   a text's fingerprint is its hash() (no folding, link/mention stripping, blake2b)
  reorder free        events held in a dict by key, released by stamp + window: no late chats, no heap,
                      no edit ordering, no cursor bookkeeping beyond a list
  shaping off         the 'wall' shaping stage not stepped at all
  all four            everything above at once

A stand-in is a ceiling, not an implementation: native code of a part costs more than its stand-in, never less.
So if "all four" is below the target, no rewrite of those parts alone can reach it.

    .venv/bin/python scripts/ceiling_merge.py [--passes 10] [--runs 3] [--redis redis://127.0.0.1:6379/15]
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_merge

from mixer.keys import Keys
from mixer.merge import dedupe, stage
from mixer.merge.moderation import Moderator, Verdict
from mixer.merge.reorder import post_key
from mixer.models import Event, Post
from mixer.streams import id_before, id_ms

STAND_INS = ("moderation", "fingerprints", "reorder", "shaping")


def _show(_: Moderator, post: Post) -> Verdict:
    return Verdict("show", post)


def _cheap_fingerprint(text: str) -> str | None:
    return None if len(text) < dedupe.FINGERPRINT_MIN else format(hash(text) & 0xFFFFFFFFFFFF, "x")


class _Released:
    __slots__ = ("event", "order")

    def __init__(self, event: Event, order: tuple[int, str]) -> None:
        self.event = event
        self.order = order


class ReleaseByStamp:
    """The reorder buffer's stand-in: twins joined by key, each event released once the watermark passes its stamp
    plus the window (as the real buffer holds every chat while it learns, the whole of this run), in time order.
    Each chat's entries wait in a queue in stream order (so in stamp order): a step looks only at what it releases."""

    def __init__(self, window_ms: int, max_pending: int = 50_000, **_: object) -> None:
        self.window_ms = window_ms
        self.max_pending = max_pending
        self._held: dict[str, tuple[int, Event]] = {}  # hold key -> (stamp, event)
        self._queues: dict[str, deque[tuple[int, str, str]]] = {}  # chat -> (stamp, entry id, hold key)
        self._others = 0

    def __len__(self) -> int:
        return len(self._held)

    def add(self, chat: str, entry_id: str, event: Event) -> None:
        stamp = id_ms(entry_id)
        if isinstance(event, Post):
            key = event.key
        else:
            self._others += 1
            key = f"\0{self._others}"
        if key not in self._held:
            self._held[key] = (stamp, event)
        queue = self._queues.get(chat)
        if queue is None:
            queue = self._queues[chat] = deque()
        queue.append((stamp, entry_id, key))

    def next_due(self) -> int | None:
        firsts = [queue[0][0] for queue in self._queues.values() if queue]
        return min(firsts) + self.window_ms if firsts else None

    def pop_ready(self, watermark: int, limit: int | None = None) -> list[_Released]:
        """As the real buffer's: at most ``limit`` (here taken a chat after another, not by due), the rest held."""
        last = watermark - self.window_ms
        out: list[_Released] = []
        held = self._held
        room = len(held) if limit is None else limit
        for queue in self._queues.values():
            while queue and queue[0][0] <= last and len(out) < room:
                event = held.pop(queue.popleft()[2], None)
                if event is not None:
                    stamp, e = event
                    out.append(_Released(e, (e.created if isinstance(e, Post) else stamp, post_key(e))))
        out.sort(key=lambda r: r.order)
        return out

    def safe_cursor(self, chat: str, read_cursor: str) -> str:
        queue = self._queues.get(chat)
        return id_before(queue[0][1]) if queue else read_cursor


@contextlib.contextmanager
def stand_ins(names: tuple[str, ...]) -> Iterator[None]:
    """The named parts replaced for the duration (``shaping`` is left to the caller: it is not stepped)."""
    with contextlib.ExitStack() as stack:
        if "moderation" in names:
            stack.enter_context(mock.patch.object(Moderator, "judge", _show))
        if "fingerprints" in names:
            stack.enter_context(mock.patch.object(dedupe, "fingerprint", _cheap_fingerprint))
        if "reorder" in names:
            stack.enter_context(mock.patch.object(stage, "ReorderBuffer", ReleaseByStamp))
        yield


async def one_row(url: str, passes: int, names: tuple[str, ...]) -> tuple[int, float, dict[str, int]]:
    """(posts, seconds, counters) of the merge stage with ``names`` replaced, on keys of its own."""
    keys = Keys(f"bench-{uuid.uuid4().hex[:8]}")
    try:
        posts = await bench_merge.fill(url, keys, passes)
        with stand_ins(names):
            elapsed, counters = await bench_merge.full(url, keys, posts, shaping_on="shaping" not in names)
        return posts, elapsed, counters
    finally:
        await bench_merge.scratch_cleanup(url, keys)


async def base_row(url: str, passes: int) -> tuple[int, float]:
    keys = Keys(f"bench-{uuid.uuid4().hex[:8]}")
    try:
        posts = await bench_merge.fill(url, keys, passes)
        return posts, await bench_merge.baseline(url, keys, await bench_merge.chat_entries(url, keys))
    finally:
        await bench_merge.scratch_cleanup(url, keys)


ROWS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("merge as it is", ()),
    *((f"{name} {'off' if name == 'shaping' else 'free'}", (name,)) for name in STAND_INS),
    ("all four", STAND_INS),
)


async def bench(url: str, passes: int, runs: int, say: Callable[[str], None] = print) -> None:
    """Every row ``runs`` times, rows interleaved within a run (so drift hits them alike), then each row's median."""
    seconds: dict[str, list[float]] = {label: [] for label in ("baseline", *(label for label, _ in ROWS))}
    posts = 0
    for n in range(runs):
        posts, elapsed = await base_row(url, passes)
        seconds["baseline"].append(elapsed)
        for label, names in ROWS:
            posts, elapsed, counters = await one_row(url, passes, names)
            seconds[label].append(elapsed)
            if n == 0:
                say(f"{label:<18} counters {counters}")
    say(f"posts: {posts:,}; medians of {runs} run(s)")
    base = statistics.median(seconds["baseline"])
    for label, times in seconds.items():
        median = statistics.median(times)
        say(f"{label:<18} {posts / median:>9,.0f} posts/s  ({median:.2f} s; {median / base:.1f}x the baseline's time)")


def main() -> None:
    bench_merge.run_bench(__doc__, bench, 3)


if __name__ == "__main__":
    main()
