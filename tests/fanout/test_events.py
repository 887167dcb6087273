"""GET /events: Server-Sent Events with Last-Event-ID resume."""

from __future__ import annotations

import aiohttp
import redis.asyncio as aioredis

from mixer.keys import Keys
from tests.helpers import make_post
from tests.servers import add_to_feed, next_event, running_app, settings_for


async def test_events_send_hello_then_one_event_per_post(redis: aioredis.Redis, keys: Keys, redis_url: str) -> None:
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.get(srv.url + "/events?chats=edchat") as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            _, name, hello = await next_event(resp)
            assert name == "hello" and hello["profile"] == "full"
            ids = await add_to_feed(redis, keys, make_post("a", ("smbiz",)), make_post("b", ("edchat",)))
            event_id, name, post = await next_event(resp)
            assert (event_id, name, post["key"]) == (ids[1], "post", "b")


async def test_last_event_id_resumes_exactly_the_missed_posts(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    ids = await add_to_feed(redis, keys, *(make_post(f"k{i}") for i in range(4)))
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.get(srv.url + "/events", headers={"Last-Event-ID": ids[1]}) as resp:
            await next_event(resp)  # hello
            got = [(await next_event(resp))[0] for _ in range(2)]
            assert got == ids[2:]
            live = await add_to_feed(redis, keys, make_post("k4"))
            assert (await next_event(resp))[0] == live[0]
        async with http.get(srv.url + "/events?profile=nope") as resp:
            assert resp.status == 400
