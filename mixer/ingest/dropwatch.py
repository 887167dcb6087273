"""Telling a replay that the merge stage drops everything it publishes.

The merge stage publishes its counters to ``Keys.merge_stats`` (at most once a second; gone 30 s after
its last write). ``all_dropped`` is the pure decision over one interval, with the numbers passed in;
``DropWatch`` compares two readings and turns a change of verdict into one line ("dropped", then
"resumed"); ``watch_drops`` is the loop a replay runs beside itself, reading the hash every few seconds.
Nothing is said while the merge stage is not running (no hash, or it has been idle for 30 s) or
has restarted (a new ``run``: its counters began again). What a post's key is on each pass lives
in ``mixer.ingest.replay``; the counters themselves in ``mixer.merge.stage``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from mixer.keys import Keys
from mixer.streams import raise_if_cancelling, text

log = logging.getLogger(__name__)

WATCH_EVERY = 10.0  # seconds between readings of the merge stage's counters while a replay runs
# A post published just before a reading is merged (and counted) up to ~1.5 s later (reorder window, counters
# written once a second): over a 10 s interval at a steady rate ~85% of what was published shows as counted.
DROPPED_SHARE = 0.75


def all_dropped(published: int, written: int, duplicate: int) -> bool | None:
    """Over one interval: True when posts were published, none reached the feed and the merge stage counted about
    as many duplicates; False when posts reached the feed; None when the interval tells neither."""
    if written > 0:
        return False
    if published > 0 and duplicate >= DROPPED_SHARE * published:
        return True
    return None


@dataclass(frozen=True, slots=True)
class MergeStats:
    """One reading of ``Keys.merge_stats``: which merge stage instance, when (its ms), and the counters used here."""

    run: str
    at: int
    written: int
    duplicate: int

    @classmethod
    def parse(cls, raw: Mapping[bytes | str, bytes | str]) -> MergeStats | None:
        """An HGETALL reply as MergeStats; None when the hash is missing or not what the merge stage writes."""
        fields = {text(k): text(v) for k, v in raw.items()}
        try:
            return cls(fields["run"], int(fields["at"]), int(fields.get("written", 0)), int(fields.get("duplicate", 0)))
        except (KeyError, ValueError):
            return None


class DropWatch:
    """Readings in, at most one line out per change: "dropped" once when an interval's posts were all dropped as
    duplicates, "resumed" once when posts reach the feed again. ``hint`` ends the "dropped" line."""

    def __init__(self, hint: str = "") -> None:
        self.hint = hint
        self.dropping = False
        self._last: tuple[int, MergeStats | None] | None = None

    def observe(self, published: int, stats: MergeStats | None, seconds: float) -> str | None:
        """Take a reading (the replay's running ``published`` total, the merge stage's counters, the seconds since
        the previous reading); the line to report, if the verdict changed."""
        last, self._last = self._last, (published, stats)
        if last is None or stats is None or last[1] is None:
            return None
        before = last[1]
        if stats.run != before.run:
            return None  # another merge stage instance: its counters began again from 0
        sent, written = published - last[0], stats.written - before.written
        verdict = all_dropped(sent, written, stats.duplicate - before.duplicate)
        if verdict is True and not self.dropping:
            self.dropping = True
            return (
                f"replay: the merge stage dropped all {sent:,} posts published in the last {seconds:.0f} s "
                f"as duplicates{self.hint}"
            )
        if verdict is False and self.dropping:
            self.dropping = False
            return f"replay: resumed: posts reach the feed again ({written:,} written in the last {seconds:.0f} s)"
        return None


async def watch_drops(
    redis: aioredis.Redis,
    keys: Keys,
    published: Callable[[], int],
    report: Callable[[str], None],
    *,
    hint: str = "",
    every: float = WATCH_EVERY,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Read the merge stage's counters every ``every`` seconds and ``report`` each line ``DropWatch`` gives, until
    cancelled. A Redis error skips that reading (the replay's own Publisher rides out an outage); never raises
    anything else than CancelledError."""
    watch = DropWatch(hint)
    before = clock()
    while True:
        try:
            raw = await redis.hgetall(keys.merge_stats)
            stats = MergeStats.parse(raw)
        except RedisError as exc:
            log.debug("replay: cannot read the merge stage's counters: %s", exc)
            stats = None
        raise_if_cancelling()  # a cancel redis-py swallowed mid-read: `mixer replay` had hung at its end
        now = clock()
        line = watch.observe(published(), stats, now - before)
        before = now
        if line is not None:
            report(line)
        await sleep(every)
