"""Benchmark: offers/s and takes/s of the rate shaper, beside a plain deque over the same items.

One invocation prints, for N items (default 100,000) spread over 30 chats (loudness skewed
like a real night: chat k posts in proportion to 1/(k+1); ~30% of posts in two chats):
  deque baseline   append every id, then popleft every id: the floor for any queue in Python
  full             the unshaped profile: offer in batches of 1000, take after each batch
  shaped, no drop  a profile fast enough to pass everything: every id through the weighted DRR
  wall, overload   the default wall profile (0.5/s, burst 3, 30 s) fed 1000 posts/s of virtual
                   time, taking whenever next_due() says: almost every id is dropped by max_wait,
                   mostly inside offer() (whose time includes them)
"takes/s" counts ids leaving the shaper inside take() (emitted or dropped) per second spent there.
No Redis, no sleeping: the clock is virtual.

    .venv/bin/python scripts/bench_shaping.py [--items 100000] [--chats 30]
"""

from __future__ import annotations

import argparse
import platform
import random
import time
from collections import deque

from mixer.merge.shaper import Shaper
from mixer.settings import FULL, WALL, Profile


def items(count: int, chats: int) -> list[tuple[str, tuple[str, ...]]]:
    rng = random.Random(7)
    tags = [f"chat{k}" for k in range(chats)]
    loudness = [1 / (k + 1) for k in range(chats)]
    out: list[tuple[str, tuple[str, ...]]] = []
    for n in range(count):
        first = rng.choices(tags, loudness)[0]
        second = rng.choice(tags) if rng.random() < 0.3 else first
        out.append((f"{1_700_000_000_000 + n}-0", (first,) if second == first else (first, second)))
    return out


def row(name: str, count: int, offer_s: float, taken: int, take_s: float, note: str = "") -> None:
    print(
        f"{name:<16} {count / offer_s:>12,.0f} offers/s {taken / take_s:>12,.0f} takes/s"
        f"  ({offer_s * 1e6 / count:.2f} + {take_s * 1e6 / max(taken, 1):.2f} us per id)  {note}"
    )


def bench_deque(data: list[tuple[str, tuple[str, ...]]]) -> None:
    queue: deque[str] = deque()
    started = time.perf_counter()
    for item_id, _ in data:
        queue.append(item_id)
    offer_s = time.perf_counter() - started
    started = time.perf_counter()
    while queue:
        queue.popleft()
    row("deque baseline", len(data), offer_s, len(data), time.perf_counter() - started)


def bench_batches(name: str, profile: Profile, data: list[tuple[str, tuple[str, ...]]]) -> None:
    shaper = Shaper(profile)
    offer_s = take_s = 0.0
    taken = 0
    for start in range(0, len(data), 1000):
        now = start / 1000  # one batch per virtual second
        began = time.perf_counter()
        for item_id, chats in data[start : start + 1000]:
            shaper.offer(item_id, chats, now)
        between = time.perf_counter()
        taken += len(shaper.take(now))
        take_s += time.perf_counter() - between
        offer_s += between - began
    assert taken == len(data) and not shaper.counters["dropped"], "this row must pass everything"
    row(name, len(data), offer_s, taken, take_s)


def bench_overload(data: list[tuple[str, tuple[str, ...]]]) -> None:
    dropped = 0

    def on_drop(_: str) -> None:
        nonlocal dropped
        dropped += 1

    shaper = Shaper(WALL, on_drop=on_drop)
    offer_s = take_s = 0.0
    left_in_take = emitted = 0
    for n, (item_id, chats) in enumerate(data):
        now = n / 1000  # 1000 posts per virtual second
        due = shaper.next_due(now)
        if due is not None and due <= now:
            before, began = dropped, time.perf_counter()
            out = shaper.take(now)
            take_s += time.perf_counter() - began
            emitted += len(out)
            left_in_take += len(out) + dropped - before
        began = time.perf_counter()
        shaper.offer(item_id, chats, now)  # drops what passed max_wait, so most drops happen here
        offer_s += time.perf_counter() - began
    note = f"{emitted:,} emitted, {dropped:,} dropped, {len(shaper):,} still held"
    row("wall, overload", len(data), offer_s, left_in_take, take_s, note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--chats", type=int, default=30)
    args = parser.parse_args()
    data = items(args.items, args.chats)
    print(f"{args.items:,} items over {args.chats} chats; Python {platform.python_version()} on {platform.machine()}")
    bench_deque(data)
    bench_batches("full", FULL, data)
    bench_batches("shaped, no drop", Profile("fast", rate=1e9, burst=5000, max_wait=1e9, max_queue=10**6), data)
    bench_overload(data)


if __name__ == "__main__":
    main()
