"""Ingest and replay across a Redis outage, on a redis-server of the test's own that it stops and starts again.

`mixer replay` and `mixer ingest --replay` run as real processes; the Redis goes away mid-run for a couple of
seconds (the point of the test is the outage, so that wait is a sleep), and every post of the recording must
then be in the chat streams exactly once. The Publisher's bounded buffer, the cursor store, the stats write
and the log lines are checked in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
from collections import Counter
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

import mixer.ingest.replay as replay_module
from mixer.codec import FIELD, unpack_post
from mixer.ingest.outage import Outage, where
from mixer.ingest.publish import CursorStore, Publisher
from mixer.ingest.replay import Replayer, ReplayOptions
from mixer.ingest.stats import write_stats
from mixer.keys import Keys
from mixer.streams import read_range
from tests.helpers import eventually, make_post
from tests.processes import mixer_env, start_mixer
from tests.redis_server import RestartableRedis, restartable_redis

CHATS = ("smbiz", "edchat")
OUTAGE_S = 2.0  # how long the Redis stays away mid-run


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[RestartableRedis]:
    async with restartable_redis(tmp_path) as server:
        yield server


@pytest.fixture
async def client(own_redis: RestartableRedis) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(own_redis.url, socket_timeout=5, socket_connect_timeout=1)
    try:
        yield redis
    finally:
        await redis.aclose()


def write_recording(path: Path, count: int, spacing_ms: int) -> dict[str, tuple[str, ...]]:
    """``count`` posts ``spacing_ms`` apart, in #smbiz, #edchat or both in turn; returns key -> chats."""
    turns = (("smbiz",), ("edchat",), ("smbiz", "edchat"))
    posts = [make_post(f"x:{i}", turns[i % 3], created=1_700_000_000_000 + i * spacing_ms) for i in range(count)]
    path.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in posts))
    return {p.key: p.chats for p in posts}


async def stream_keys(redis: aioredis.Redis, keys: Keys) -> Counter[tuple[str, str]]:
    """(chat, post key) -> how many times that chat's stream holds the post."""
    found: Counter[tuple[str, str]] = Counter()
    for chat in CHATS:
        for eid, raw, kind in await read_range(redis, keys.chat(chat), "0-0", count=1_000_000):
            if kind == FIELD:
                found[chat, unpack_post(eid, raw).key] += 1
    return found


def expected(recording: dict[str, tuple[str, ...]], suffix: str = "") -> set[tuple[str, str]]:
    return {(chat, key + suffix) for key, chats in recording.items() for chat in chats}


async def published(redis: aioredis.Redis, keys: Keys) -> int:
    return sum([int(await redis.xlen(keys.chat(chat))) for chat in CHATS])


async def outage_mid_run(server: RestartableRedis, redis: aioredis.Redis, keys: Keys, total: int) -> int:
    """Once some posts are in (not all), stop the Redis for OUTAGE_S and start it again; returns posts before."""
    await eventually(lambda: _some(redis, keys), 30)
    before = await published(redis, keys)
    await server.stop()
    await asyncio.sleep(OUTAGE_S)  # the outage itself: nothing to await but time
    await server.start()
    await redis.connection_pool.disconnect()  # the test's own connections died with the server: new ones
    assert before < total, "the replay ended before the outage: it did not test anything"
    return before


async def _some(redis: aioredis.Redis, keys: Keys) -> bool:
    return await published(redis, keys) > 0


async def test_mixer_replay_rides_out_a_redis_restart_and_publishes_every_post_exactly_once(
    own_redis: RestartableRedis, client: aioredis.Redis, keys: Keys, tmp_path: Path
) -> None:
    recording = write_recording(tmp_path / "night.jsonl", 600, spacing_ms=10)  # 6 s at --speed 1
    total = sum(len(chats) for chats in recording.values())
    env = mixer_env(own_redis.url, keys, ",".join(CHATS))
    with (tmp_path / "replay.log").open("wb") as log:
        proc = await start_mixer("replay", str(tmp_path / "night.jsonl"), "--speed", "1", env=env, log=log)
        try:
            await outage_mid_run(own_redis, client, keys, total)
            code = await asyncio.wait_for(proc.wait(), 40)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    output = (tmp_path / "replay.log").read_text()
    assert code == 0, output
    found = await stream_keys(client, keys)
    assert set(found) == expected(recording) and set(found.values()) == {1}, output
    assert "Redis was away 1 time(s)" in output


async def test_mixer_ingest_replay_rides_out_a_redis_restart_logs_it_once_and_repeats_nothing(
    own_redis: RestartableRedis, client: aioredis.Redis, keys: Keys, tmp_path: Path
) -> None:
    recording = write_recording(tmp_path / "night.jsonl", 600, spacing_ms=10)
    total = sum(len(chats) for chats in recording.values())
    env = mixer_env(own_redis.url, keys, ",".join(CHATS))
    with (tmp_path / "ingest.log").open("wb") as log:
        proc = await start_mixer("ingest", "--replay", str(tmp_path / "night.jsonl"), "--speed", "1", env=env, log=log)
        try:
            await outage_mid_run(own_redis, client, keys, total)

            async def first_pass_in() -> bool:
                found = set(await stream_keys(client, keys))
                tags = {key.rpartition("~")[2] for _, key in found if key.endswith(".0")}  # keys end ~<run>.<pass>
                return len(tags) == 1 and expected(recording, "~" + tags.pop()) <= found

            await eventually(first_pass_in, 40)
            assert proc.returncode is None, "mixer ingest stopped during the outage"
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    output = (tmp_path / "ingest.log").read_text()
    assert code == 0, output
    found = await stream_keys(client, keys)
    assert set(found.values()) == {1}, [k for k, n in found.items() if n > 1][:10]  # later passes: keys ~<run>.1, ...
    assert output.count("went away") == 1 and output.count("is back after") == 1, output


async def test_publisher_buffer_overflow_keeps_the_newest_and_counts_the_rest(
    own_redis: RestartableRedis, client: aioredis.Redis, keys: Keys
) -> None:
    publisher = Publisher(client, keys, CHATS, 1000, pending_max=5)
    counters: Counter[str] = Counter()
    await own_redis.stop()
    try:
        for i in range(8):
            await publisher.offer([make_post(f"x:{i}")], cursor=("x", str(i)), counters=counters)
        assert publisher.pending == 5
        assert counters["overflowed"] == 3 and publisher.counters["overflowed"] == 3
        await own_redis.start()
        await eventually(lambda: publisher.pending == 0, 15)
        await client.connection_pool.disconnect()
    finally:
        await publisher.aclose()
    found = await stream_keys(client, keys)
    assert sorted(key for _, key in found) == [f"x:{i}" for i in range(3, 8)]  # the newest five, in order
    assert counters["published"] == 5 and counters["overflowed"] == 3
    assert await CursorStore(client, keys).get("x") == "7"


async def test_cursor_store_and_publish_wait_out_an_outage_that_is_logged_once(
    own_redis: RestartableRedis, client: aioredis.Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mixer.ingest.outage")
    publisher = Publisher(client, keys, CHATS, 1000, role="test-ingest")
    cursors = CursorStore(client, keys)
    outage = publisher.outage
    await own_redis.stop()
    writing = asyncio.create_task(publisher.publish([make_post("x:1")], cursor=("follower", "41")))
    reading = asyncio.create_task(cursors.get("follower"))
    assert not await write_stats(client, keys, {"follower": Counter(received=1)})  # skipped, not raised
    await eventually(lambda: outage.failures >= 5, 15)  # retried a few times meanwhile
    assert not writing.done() and not reading.done()
    await own_redis.start()
    assert await asyncio.wait_for(writing, 10) == 1
    assert await asyncio.wait_for(reading, 10) in (None, "41")
    assert await cursors.get("follower") == "41"
    assert await write_stats(client, keys, {"follower": Counter(received=1)})
    lines = [r for r in caplog.records if r.name == "mixer.ingest.outage"]
    assert [r.levelno for r in lines] == [logging.WARNING, logging.INFO], [r.getMessage() for r in lines]
    assert "test-ingest" in lines[0].getMessage() and own_redis.url.rsplit("/", 1)[0] in lines[0].getMessage()
    assert "is back after" in lines[1].getMessage()
    assert (await stream_keys(client, keys))["smbiz", "x:1"] == 1


def test_where_a_role_logs_its_redis_never_shows_the_password() -> None:
    redis = aioredis.Redis.from_url("redis://:s3cretpw@127.0.0.1:6390/2")
    assert where(redis) == "redis://127.0.0.1:6390/2"
    assert "s3cretpw" not in Outage.of(redis, "ingest").where


async def test_a_publish_that_cannot_wait_fails_at_once_while_redis_is_away(
    own_redis: RestartableRedis, client: aioredis.Redis, keys: Keys
) -> None:
    publisher = Publisher(client, keys, CHATS, 1000)
    await own_redis.stop()
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(publisher.publish([make_post("x:1")], patient=False), 10)


async def test_replay_reads_its_files_off_the_event_loop(
    redis: aioredis.Redis, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_recording(tmp_path / "night.jsonl", 50, spacing_ms=1)
    threads: set[int] = set()
    real = replay_module.read_grouped

    def watched(*args: Any, **kwargs: Any) -> Generator[Any, None, None]:
        for item in real(*args, **kwargs):
            threads.add(threading.get_ident())
            yield item

    monkeypatch.setattr(replay_module, "read_grouped", watched)
    publisher = Publisher(redis, keys, CHATS, 1000)
    progress = await Replayer(publisher, [tmp_path / "night.jsonl"], ReplayOptions(speed=0, batch=7)).run()
    assert progress.published == 50
    assert threads and threading.get_ident() not in threads


class ReplyCutter:
    """A TCP proxy to Redis that forwards the first transaction (EXEC) but never its reply: it closes the client's
    connection instead, as a Redis that dies right after applying a transaction would."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.armed = True
        self.cut = asyncio.Event()
        self.handlers: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        cutting = False

        async def upstream() -> None:
            nonlocal cutting
            while data := await reader.read(1 << 16):
                if self.armed and b"EXEC\r\n" in data:
                    self.armed, cutting = False, True
                up_writer.write(data)
                await up_writer.drain()

        async def downstream() -> None:
            while data := await up_reader.read(1 << 16):
                if cutting:  # the transaction's reply: swallowed, and the client's connection dropped
                    self.cut.set()
                    return
                writer.write(data)
                await writer.drain()

        pumps = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        for each in (writer, up_writer):
            each.close()
            with contextlib.suppress(OSError):
                await each.wait_closed()

    async def aclose(self) -> None:
        """Wait for every connection's handler to end (each ends when its client goes)."""
        await asyncio.gather(*self.handlers, return_exceptions=True)


async def test_a_batch_whose_reply_was_lost_is_not_written_twice(redis_url: str, keys: Keys) -> None:
    target = aioredis.Redis.from_url(redis_url).connection_pool.connection_kwargs
    cutter = ReplyCutter(target.get("host", "127.0.0.1"), target.get("port", 6379))
    server = await asyncio.start_server(cutter.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = aioredis.Redis(port=port, db=target.get("db", 0), password=target.get("password"))
    try:
        publisher = Publisher(client, keys, CHATS, 1000)
        assert await asyncio.wait_for(publisher.publish([make_post("x:once")], cursor=("f", "1")), 10) == 1
        assert cutter.cut.is_set()  # the reply was lost: the Publisher had to find out whether the batch landed
        assert (await stream_keys(client, keys))["smbiz", "x:once"] == 1
    finally:
        async for key in client.scan_iter(match=keys.pattern()):
            await client.delete(key)
        await client.aclose()
        await cutter.aclose()
        server.close()
        await server.wait_closed()
