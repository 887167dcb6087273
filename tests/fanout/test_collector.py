"""The cycle collector's schedule (pure, clock passed in) and its effect on a real process's collector."""

from __future__ import annotations

import asyncio
import gc
import weakref

import aiohttp
import redis.asyncio as aioredis

from mixer.fanout.collector import QUIET, Collector, apply, keep_collector
from mixer.keys import Keys
from tests.servers import running_app, settings_for


def test_freezes_every_interval_and_sweeps_at_a_quiet_moment_or_when_overdue() -> None:
    schedule = Collector(started=0.0, freeze_every=1.0, sweep_every=300.0)
    assert schedule.due(0.0, quiet=False) == "freeze"  # at the first look
    schedule.done("freeze", 0.0)
    assert schedule.due(0.5, quiet=True) is None
    assert schedule.due(1.0, quiet=False) == "freeze"
    schedule.done("freeze", 1.0)
    assert schedule.due(300.0, quiet=False) == "freeze"  # a sweep is due but the server is busy: wait
    schedule.done("freeze", 300.0)
    assert schedule.due(301.0, quiet=True) == "sweep"  # the first quiet moment
    schedule.done("sweep", 301.0)
    assert schedule.due(301.5, quiet=True) is None  # a sweep ends with a freeze
    assert schedule.due(600.0, quiet=True) == "freeze"  # 299 s since the sweep: not yet
    busy = Collector(started=0.0, freeze_every=1.0, sweep_every=300.0)
    assert busy.due(599.0, quiet=False) == "freeze"
    assert busy.due(600.0, quiet=False) == "sweep"  # never quiet: overdue after twice the interval


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cycle collector frees it


def test_a_frozen_cycle_is_kept_until_a_sweep_frees_it() -> None:
    try:
        node = Node()
        gone = weakref.ref(node)
        apply("freeze")
        del node
        gc.collect()
        assert gone() is not None  # frozen: out of the collector's reach
        assert gc.get_freeze_count() > 0
        apply("sweep")
        assert gone() is None
        assert gc.get_freeze_count() > 0  # the sweep froze what is left
    finally:
        gc.unfreeze()


class Watched(Collector):
    """The schedule, telling the test each thing it did."""

    actions: asyncio.Queue[str]

    def done(self, action: str, now: float) -> None:
        super().done(action, now)
        self.actions.put_nowait(action)


async def test_the_task_freezes_while_running_and_unfreezes_on_the_way_out() -> None:
    now = [1000.0]
    schedule = Watched(started=now[0], freeze_every=1.0, sweep_every=300.0)
    schedule.actions = asyncio.Queue()
    task = asyncio.create_task(keep_collector(lambda: now[0] - QUIET, lambda: now[0], schedule, tick=0.001))
    try:
        assert await asyncio.wait_for(schedule.actions.get(), 5) == "freeze"  # the first look
        assert gc.get_freeze_count() > 0
        now[0] += 301.0  # a sweep is due, and the hub was quiet
        assert await asyncio.wait_for(schedule.actions.get(), 5) == "sweep"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert gc.get_freeze_count() == 0


async def test_the_fan_out_server_runs_the_collector(redis: aioredis.Redis, keys: Keys, redis_url: str) -> None:
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.get(srv.url + "/healthz") as resp:
            assert resp.status == 200
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
