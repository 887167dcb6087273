"""The fan-out after a Redis that came back with less than it had sent (a failover to a replica that missed the
last writes, or a Redis back without its data): screens are told ``reset``, never left with a silent gap."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from mixer.keys import Keys
from tests.helpers import make_post
from tests.redis_server import restartable_redis
from tests.servers import add_to_feed, receive_posts, running_app, settings_for


async def test_a_feed_that_went_back_in_an_outage_resets_every_screen_then_delivers_what_comes_next(
    tmp_path: Path, keys: Keys
) -> None:
    async with restartable_redis(tmp_path) as server:
        redis = aioredis.Redis.from_url(server.url)
        try:
            async with running_app(settings_for(keys.prefix), server.url) as srv, aiohttp.ClientSession() as http:
                async with http.ws_connect(srv.ws_url) as ws:
                    assert (await ws.receive_json(timeout=10))["type"] == "hello"
                    await add_to_feed(redis, keys, make_post("x:1"), make_post("x:2"))
                    assert [p["key"] for p in await receive_posts(ws, 2)] == ["x:1", "x:2"]
                    await server.stop()
                    (tmp_path / "dump.rdb").unlink()  # the Redis comes back without what it had
                    await server.start()
                    frame = await ws.receive_json(timeout=15)
                    while frame["type"] != "reset":  # (a stats frame may come first)
                        frame = await ws.receive_json(timeout=15)
                    assert frame["cursor"] == "0-0"
                    await redis.aclose()
                    redis = aioredis.Redis.from_url(server.url)
                    await add_to_feed(redis, keys, make_post("x:3"))
                    assert [p["key"] for p in await receive_posts(ws, 1)] == ["x:3"]
        finally:
            await redis.aclose()
