"""`mixer record` across a Redis outage: it waits for its Redis and goes on recording from where it was."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import redis.asyncio as aioredis

from mixer.ingest.publish import Publisher
from mixer.keys import Keys
from mixer.tools.record import RecordOptions, record
from tests.helpers import eventually, make_post
from tests.redis_server import restartable_redis


async def test_record_rides_out_a_redis_restart_and_records_what_comes_after(tmp_path: Path) -> None:
    keys = Keys("rec")
    out = io.BytesIO()
    async with restartable_redis(tmp_path) as server:
        client = aioredis.Redis.from_url(server.url, socket_timeout=5)
        stop, ready = asyncio.Event(), asyncio.Event()
        options = RecordOptions(raw=True, chats=("smbiz",))
        recording = asyncio.create_task(record(server.url, keys, options, out, stop, ready=ready))
        try:
            await asyncio.wait_for(ready.wait(), 10)
            publisher = Publisher(client, keys, ["smbiz"], 1000)
            await publisher.publish([make_post("x:before")])
            await eventually(lambda: b'"x:before"' in out.getvalue())
            await server.stop()
            await asyncio.sleep(1.0)  # the outage itself: nothing to await but time
            assert not recording.done()
            await server.start()
            await client.connection_pool.disconnect()  # the test's own connection died with the server
            await publisher.publish([make_post("x:after")])
            await eventually(lambda: b'"x:after"' in out.getvalue(), 15)
        finally:
            stop.set()
            done = await asyncio.wait_for(recording, 10)
            await client.aclose()
    assert done.posts == 2
