"""The merge lease: one holder at a time, takeover after expiry, work stopped before the lease can pass on."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from mixer.codec import FIELD, unpack_post
from mixer.ingest.publish import Publisher
from mixer.keys import Keys
from mixer.merge.lease import Lease, fenced, new_holder_id
from mixer.streams import dedicated_client, read_new, read_range, text
from tests.helpers import make_post
from tests.processes import mixer_env, start_mixer

TAGS = ("smbiz", "edchat", "journchat")
Connect = Callable[..., aioredis.Redis]


@pytest.fixture
async def connect(redis_url: str) -> AsyncIterator[Connect]:
    """Dedicated single-connection clients (to the test Redis, or to ``url``), closed after the test."""
    made: list[aioredis.Redis] = []

    def make(url: str | None = None) -> aioredis.Redis:
        made.append(dedicated_client(url or redis_url, 0))
        return made[-1]

    yield make
    for client in made:
        await client.aclose()


class Work:
    """A ``work`` for ``Lease.hold``: runs until cancelled, recording when it started and stopped."""

    def __init__(self) -> None:
        self.starts = 0
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()
        self.started_at = self.stopped_at = 0.0

    async def __call__(self) -> None:
        self.starts += 1
        self.started_at = time.monotonic()
        self.stopped.clear()
        self.started.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.stopped_at = time.monotonic()
            self.started.clear()
            self.stopped.set()


@asynccontextmanager
async def running(coro: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class StallingProxy:
    """A TCP proxy to the test Redis that can stop passing bytes: Redis unreachable, sockets left open."""

    def __init__(self, target: str) -> None:
        self._target = urlsplit(target)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        t = self._target
        db = parse_qs(t.query).get("db", ["0"])[0] if t.scheme == "unix" else (t.path.strip("/") or "0")
        auth = t.netloc.rpartition("@")[0] + "@" if "@" in t.netloc else ""
        return f"redis://{auth}127.0.0.1:{port}/{db}"

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        t = self._target
        if t.scheme == "unix":
            up_reader, up_writer = await asyncio.open_unix_connection(t.path)
        else:
            up_reader, up_writer = await asyncio.open_connection(t.hostname, t.port or 6379)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                await self._flowing.wait()
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            dst.close()

    async def aclose(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()


def test_a_holder_id_names_the_host_and_process_and_is_unique() -> None:
    first, second = new_holder_id(), new_holder_id()
    host, pid, _ = first.split(":")
    assert (host, int(pid)) == (socket.gethostname(), os.getpid())
    assert first != second


def test_a_lease_refuses_timings_that_leave_no_room_to_renew(redis: aioredis.Redis, keys: Keys) -> None:
    with pytest.raises(ValueError, match="renew_every"):
        Lease(redis, keys.merge_lease, "a", ttl=1.0, renew_every=0.9)  # the default margin is ttl / 5
    with pytest.raises(ValueError):
        Lease(redis, keys.merge_lease, "a", ttl=1.0, renew_every=0.1, margin=1.0)


async def test_only_the_holder_can_renew_or_release_and_a_free_lease_can_be_taken(
    redis: aioredis.Redis, keys: Keys, connect: Connect
) -> None:
    a = Lease(connect(), keys.merge_lease, "host:1:a", ttl=2.0, renew_every=0.5)
    b = Lease(connect(), keys.merge_lease, "host:2:b", ttl=2.0, renew_every=0.5)
    assert await a.acquire() and a.held
    assert 0 < await redis.pttl(keys.merge_lease) <= 2000
    assert not await b.acquire() and not b.held
    assert not await b.renew()
    assert not await b.release()  # the Lua check: b cannot delete a's lease
    assert await b.holder() == "host:1:a"
    assert await a.acquire()  # taking a lease already ours just extends it
    assert await a.renew()
    assert await a.release() and not a.held
    assert await redis.exists(keys.merge_lease) == 0
    assert await b.acquire() and await a.holder() == "host:2:b"


async def test_a_standby_takes_over_within_ttl_plus_renew_after_the_holder_stops_renewing_and_keeps_it(
    redis: aioredis.Redis, keys: Keys, connect: Connect
) -> None:
    ttl, renew = 1.0, 0.2
    crashed = Lease(connect(), keys.merge_lease, "crashed", ttl=ttl, renew_every=renew)
    standby = Lease(connect(), keys.merge_lease, "standby", ttl=ttl, renew_every=renew)
    taken = time.monotonic()
    assert await crashed.acquire()
    work = Work()
    async with running(standby.hold(work)) as holding:
        await asyncio.wait_for(work.started.wait(), ttl + renew + 2)
        waited = work.started_at - taken
        print(f"standby took over {waited:.2f} s after the last acquire (ttl {ttl} s, renew every {renew} s)")
        assert ttl - 0.01 <= waited <= ttl + renew + 0.5
        assert not crashed.held  # the crashed holder stopped claiming it before Redis let the standby in
        assert not await crashed.renew() and not await crashed.release()  # and cannot renew or delete it now
        assert await redis.get(keys.merge_lease) == b"standby"
        assert work.starts == 1 and not holding.done()
        await asyncio.sleep(ttl * 1.5)  # several renewals: the standby keeps the lease while it works
        assert await redis.get(keys.merge_lease) == b"standby" and not work.stopped.is_set()
    assert await redis.exists(keys.merge_lease) == 0  # released on the way out


async def test_work_is_cancelled_when_a_renewal_is_refused_and_hold_waits_to_run_it_again(
    redis: aioredis.Redis, keys: Keys, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    lease = Lease(connect(), keys.merge_lease, "ours", ttl=1.0, renew_every=0.1)
    work = Work()
    caplog.set_level(logging.INFO, logger="mixer.merge.lease")
    async with running(lease.hold(work)) as holding:
        await asyncio.wait_for(work.started.wait(), 5)
        await redis.set(keys.merge_lease, "intruder", px=60_000)  # as if ours had expired and been taken
        await asyncio.wait_for(work.stopped.wait(), 1)
        assert not holding.done() and lease.counters["lost"] == 1
        assert "renewal refused, held by intruder" in caplog.text
        assert await redis.get(keys.merge_lease) == b"intruder"  # losing never deletes the new holder's lease
        await redis.delete(keys.merge_lease)
        await asyncio.wait_for(work.started.wait(), 5)
        assert work.starts == 2 and lease.counters["acquired"] == 2
        assert f"lease {keys.merge_lease} acquired again by ours after" in caplog.text  # INFO: it said it stood by
    assert work.stopped.is_set()
    assert await redis.exists(keys.merge_lease) == 0


async def test_work_stops_before_anyone_else_can_start_when_redis_becomes_unreachable(
    redis: aioredis.Redis, keys: Keys, connect: Connect, redis_url: str
) -> None:
    proxy = StallingProxy(redis_url)
    via_proxy = await proxy.start()
    cut_off = Lease(connect(via_proxy), keys.merge_lease, "cut-off", ttl=1.0, renew_every=0.1, margin=0.3)
    other = Lease(connect(), keys.merge_lease, "other", ttl=1.0, renew_every=0.1, margin=0.3)
    first, second = Work(), Work()
    try:
        async with running(cut_off.hold(first)) as cut_off_task:
            await asyncio.wait_for(first.started.wait(), 5)
            async with running(other.hold(second)):
                proxy.stall()
                stalled = time.monotonic()
                await asyncio.wait_for(first.stopped.wait(), 2)
                await asyncio.wait_for(second.started.wait(), 3)
                print(
                    f"stalled at 0; work stopped at {first.stopped_at - stalled:.2f} s; "
                    f"the other holder started at {second.started_at - stalled:.2f} s"
                )
                assert first.stopped_at < second.started_at
                assert first.stopped_at - stalled <= 0.7 + 0.2  # ttl - margin after the last renewal sent
                assert cut_off.counters["renew_errors"] >= 1 and cut_off.counters["lost"] == 1
                assert not cut_off_task.done()  # standing by again
                proxy.resume()
                assert await redis.get(keys.merge_lease) == b"other"
    finally:
        await proxy.aclose()


class Logged(logging.Handler):
    """An event set when ``mixer.merge.lease`` logs a line containing ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.INFO)
        self.text = text
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


@pytest.fixture
def logged() -> Iterator[Callable[[str], asyncio.Event]]:
    logger = logging.getLogger("mixer.merge.lease")
    handlers: list[Logged] = []
    level = logger.level
    logger.setLevel(logging.INFO)

    def watch(text: str) -> asyncio.Event:
        handlers.append(Logged(text))
        logger.addHandler(handlers[-1])
        return handlers[-1].event

    yield watch
    for handler in handlers:
        logger.removeHandler(handler)
    logger.setLevel(level)


async def test_cancelling_hold_propagates_and_releases_only_a_lease_it_holds(
    redis: aioredis.Redis, keys: Keys, connect: Connect, logged: Callable[[str], asyncio.Event]
) -> None:
    standing_by = logged("waiter standing by")
    holder = Lease(connect(), keys.merge_lease, "holder", ttl=2.0, renew_every=0.2)
    waiter = Lease(connect(), keys.merge_lease, "waiter", ttl=2.0, renew_every=0.2)
    work, never = Work(), Work()
    holding = asyncio.create_task(holder.hold(work))
    await asyncio.wait_for(work.started.wait(), 5)
    waiting = asyncio.create_task(waiter.hold(never))
    await asyncio.wait_for(standing_by.wait(), 5)  # it tried, and knows who holds the lease
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert never.starts == 0
    assert await redis.get(keys.merge_lease) == b"holder"
    holding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holding
    assert work.stopped.is_set()
    assert await redis.exists(keys.merge_lease) == 0


async def test_work_that_returns_or_raises_ends_hold_and_releases_the_lease(
    redis: aioredis.Redis, keys: Keys, connect: Connect
) -> None:
    lease = Lease(connect(), keys.merge_lease, "one", ttl=2.0, renew_every=0.2)

    async def finishes() -> None:
        assert await redis.get(keys.merge_lease) == b"one"

    async def fails() -> None:
        raise RuntimeError("boom")

    await asyncio.wait_for(lease.hold(finishes), 5)
    assert await redis.exists(keys.merge_lease) == 0
    with pytest.raises(RuntimeError, match="boom"):
        await asyncio.wait_for(lease.hold(fails), 5)
    assert await redis.exists(keys.merge_lease) == 0


async def test_of_several_contenders_exactly_one_works_at_a_time_and_each_handover_happens(
    redis: aioredis.Redis, keys: Keys, connect: Connect
) -> None:
    active: set[str] = set()
    overlaps: list[set[str]] = []
    starts: asyncio.Queue[str] = asyncio.Queue()

    def work_for(name: str) -> Callable[[], Coroutine[Any, Any, None]]:
        async def work() -> None:
            if active:
                overlaps.append({*active, name})
            active.add(name)
            starts.put_nowait(name)
            try:
                await asyncio.Event().wait()
            finally:
                active.discard(name)

        return work

    names = ["p1", "p2", "p3", "p4"]
    leases = {n: Lease(connect(), keys.merge_lease, n, ttl=1.0, renew_every=0.05) for n in names}
    tasks = {n: asyncio.create_task(leases[n].hold(work_for(n))) for n in names}
    leaders: list[str] = []
    try:
        for _ in names:
            leader = await asyncio.wait_for(starts.get(), 5)
            assert await redis.get(keys.merge_lease) == leader.encode()
            leaders.append(leader)
            tasks[leader].cancel()
            await asyncio.gather(tasks[leader], return_exceptions=True)
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    assert sorted(leaders) == names
    assert overlaps == []


async def _feed_after(redis: aioredis.Redis, keys: Keys, last: str, block_ms: int = 1000) -> tuple[str, int]:
    """Wait (XREAD BLOCK) for feed entries after ``last``; returns the new last id and how many came."""
    entries = (await read_new(redis, {keys.feed: last}, block_ms, 10_000)).get(keys.feed, [])
    return (entries[-1][0] if entries else last), len(entries)


async def test_two_merge_processes_one_killed_the_other_takes_over_and_the_feed_is_exact(
    redis: aioredis.Redis, keys: Keys, redis_url: str, tmp_path: Path
) -> None:
    total = 30_000
    publisher = Publisher(redis, keys, TAGS, 1_000_000)
    for start in range(0, total, 2000):
        batch = range(start, start + 2000)
        await publisher.publish([make_post(f"x:{i}", (TAGS[i % 3],), created=1_700_000_000_000 + i) for i in batch])
    env = mixer_env(redis_url, keys, ",".join(TAGS), MIXER_MERGE_WINDOW_MS="20")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    with logs[0].open("wb") as log_a, logs[1].open("wb") as log_b:
        procs = [await start_mixer("merge", env=env, log=log_a), await start_mixer("merge", env=env, log=log_b)]
        try:
            last, seen = "0-0", 0
            while seen < 3000:
                last, count = await _feed_after(redis, keys, last)
                seen += count
            holder = text(await redis.get(keys.merge_lease) or b"")
            dead_holder = holder
            leader = next(p for p in procs if holder.split(":")[1] == str(p.pid))
            survivor = next(p for p in procs if p is not leader)
            leader.send_signal(signal.SIGKILL)
            await asyncio.wait_for(leader.wait(), 10)
            killed = time.monotonic()
            written_before_kill = await redis.xlen(keys.feed)
            assert written_before_kill < total, "the merge finished before the kill: raise the count"
            while True:  # the first entries written while the survivor holds the lease mark the takeover
                assert time.monotonic() - killed < 20, "no takeover"
                last, count = await _feed_after(redis, keys, last)
                holder = text(await redis.get(keys.merge_lease) or b"")
                if count and holder.split(":")[1:2] == [str(survivor.pid)]:
                    break
            takeover = time.monotonic() - killed
            print(f"takeover: the standby wrote to the feed {takeover:.2f} s after the leader was killed")
            assert 2.5 < takeover < 5.0 + 1.0 + 2.0  # the dead lease expires (ttl 5 s, renewed every 1 s)
            while await redis.xlen(keys.feed) < total:
                assert time.monotonic() - killed < 40, f"feed stuck at {await redis.xlen(keys.feed)}"
                last, _ = await _feed_after(redis, keys, last)
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(survivor.wait(), 15) == 0
    assert await redis.exists(keys.merge_lease) == 0  # released on SIGTERM
    survivor_log = logs[procs.index(survivor)].read_text()
    assert f"acquired by {socket.gethostname()}:{survivor.pid}:" in survivor_log
    assert f"(taking over from {dead_holder})" in survivor_log
    feed = await read_range(redis, keys.feed, "0-0", count=1_000_000)
    assert {kind for _, _, kind in feed} == {FIELD}
    feed_keys = [unpack_post(eid, raw).key for eid, raw, _ in feed]
    assert len(feed_keys) == total
    assert sorted(int(k[2:]) for k in feed_keys) == list(range(total))  # every post once, none twice


class CutAfterWatch:
    """A TCP proxy to Redis that closes the client's connection as soon as a GET follows a WATCH: the connection is
    lost in the middle of a fenced write."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        watched = False

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()

        relay = asyncio.create_task(downstream())
        try:
            while data := await reader.read(65536):
                if watched and b"GET" in data.upper():
                    break
                watched = watched or b"WATCH" in data.upper()
                up_writer.write(data)
                await up_writer.drain()
        finally:
            relay.cancel()
            writer.close()
            up_writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_a_connection_lost_during_a_fenced_write_is_an_outage_not_a_lost_lease(
    redis_url: str, keys: Keys, connect: Connect
) -> None:
    """redis-py reports the loss as a WatchError; the merge stage must see a connection error (it reconnects and
    retries from its cursors) rather than an unknown error that ends the process."""
    parts = urlsplit(redis_url)
    proxy = CutAfterWatch(parts.hostname or "127.0.0.1", parts.port or 6379)
    url = await proxy.start()
    try:
        target = connect(url)
        await connect().set(keys.merge_lease, "me")
        with pytest.raises(RedisConnectionError):
            await fenced(target, (keys.merge_lease, "me"), lambda tx: tx.set(f"{keys.prefix}:x", 1))
        assert await connect().get(f"{keys.prefix}:x") is None
    finally:
        await proxy.aclose()
