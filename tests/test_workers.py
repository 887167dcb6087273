"""The `serve --workers` supervision: how a sibling fan-out process that ended is replaced."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from mixer.backoff import Backoff
from mixer.workers import watch_workers
from tests.helpers import eventually


async def test_a_worker_that_keeps_dying_young_is_replaced_after_a_growing_wait_one_that_lived_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started: list[subprocess.Popen[bytes]] = []

    def respawn() -> subprocess.Popen[bytes]:
        # the third replacement lives (a while, by the clock below); the others end at once, as one that cannot start
        started.append(subprocess.Popen(["sleep", "0.2"] if len(started) == 3 else ["true"]))
        return started[-1]

    def clock() -> float:  # a minute passes while the third replacement runs
        return 60.0 if len(started) >= 4 and started[3].poll() is not None else 0.0

    children = [respawn()]  # the first: it ends at once, as the replacements after it do
    backoff = Backoff(base=0.1, factor=2.0, jitter=0.0)
    watching = asyncio.ensure_future(watch_workers(children, respawn, every=0.01, clock=clock, backoff=backoff))
    try:
        await eventually(lambda: len(started) >= 6)
    finally:
        watching.cancel()
        for child in started:
            child.wait()
    lines = [r.getMessage() for r in caplog.records if "starting another" in r.getMessage()]
    # young deaths wait 0.1, 0.2, 0.4 s; the one that lived is replaced at once, and the wait starts over
    assert [line.rsplit(" in ", 1)[1] for line in lines[:5]] == ["0.1 s", "0.2 s", "0.4 s", "0.0 s", "0.1 s"]
    assert "(exit status 0)" in lines[0]
