"""GET /events: Server-Sent Events with Last-Event-ID resume."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from mixer.fanout.appkeys import CONNECTIONS
from mixer.fanout.live import SSE_KEEPALIVE
from mixer.keys import Keys
from mixer.runner import build_app
from tests.helpers import eventually, make_post
from tests.servers import add_to_feed, next_event, on_uvloop, running_app, settings_for


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
        async with http.get(srv.url + "/events", headers={"Last-Event-ID": "garbage"}) as resp:
            assert resp.status == 400 and (await resp.text()).startswith("Last-Event-ID must be a feed id")


async def test_the_hello_and_a_reset_carry_the_id_eventsource_should_come_back_from(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    # without an id on the hello, EventSource coming back before its first post sent no Last-Event-ID and missed
    # every post published while it was away; after a reset it came back from the old id and was reset again
    first = await add_to_feed(redis, keys, make_post("h0"))
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.get(srv.url + "/events") as resp:
            hello_id, name, hello = await next_event(resp)
            assert (hello_id, name) == (first[0], "hello") and hello["cursor"] == first[0]
        missed = await add_to_feed(redis, keys, make_post("h1"), make_post("h2"))  # while it was away
        async with http.get(srv.url + "/events", headers={"Last-Event-ID": hello_id}) as resp:
            resumed_hello_id, _, _ = await next_event(resp)
            assert resumed_hello_id is None  # resuming: the hello must not move EventSource past the gap
            assert [(await next_event(resp))[0] for _ in missed] == missed
        async with http.get(srv.url + "/events", headers={"Last-Event-ID": "99999999999999-0"}) as resp:
            await next_event(resp)  # hello
            reset_id, name, reset = await next_event(resp)
            assert (name, reset_id) == ("reset", missed[-1]) and reset["cursor"] == missed[-1]


async def test_on_shutdown_a_stream_ends_as_a_chunked_body_should(keys: Keys, redis_url: str) -> None:
    runner = web.AppRunner(build_app(settings_for(keys.prefix), redis_url), shutdown_timeout=2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    stopping: asyncio.Task[None] | None = None
    try:
        async with aiohttp.ClientSession() as http, http.get(url + "/events") as resp:
            assert (await next_event(resp))[1] == "hello"
            stopping = asyncio.create_task(runner.cleanup())
            rest = await asyncio.wait_for(resp.content.read(), 5)  # ClientPayloadError when the body just breaks
            assert resp.content.at_eof() and b"event: post" not in rest
    finally:
        await (stopping if stopping is not None else runner.cleanup())


async def test_shutdown_does_not_wait_for_an_open_streams_next_keepalive(keys: Keys, redis_url: str) -> None:
    # a stream's handler waits SSE_KEEPALIVE (15 s) between comments; shutdown must end that wait, not sit it out
    # (aiohttp waits for every handler up to shutdown_timeout: `mixer serve` took 5 s to stop with one SSE client)
    runner = web.AppRunner(build_app(settings_for(keys.prefix), redis_url), shutdown_timeout=60)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    stopping: asyncio.Task[None] | None = None
    try:
        async with aiohttp.ClientSession() as http, http.get(url + "/events") as resp:
            assert (await next_event(resp))[1] == "hello"
            stopping = asyncio.create_task(runner.cleanup())
            await asyncio.wait_for(resp.content.read(), 5)
            await asyncio.wait_for(asyncio.shield(stopping), SSE_KEEPALIVE / 3)
    finally:
        await (stopping if stopping is not None else runner.cleanup())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_a_client_that_hangs_up_frees_its_place_at_once(keys: Keys, redis_url: str, loop: str) -> None:
    # a page reloading drops its stream and opens another: with max_per_ip reached, the new one was refused (429)
    # until the old handler's next keep-alive write found the connection gone, up to SSE_KEEPALIVE (15 s) later
    settings = settings_for(keys.prefix, max_per_ip=1)
    async with contextlib.AsyncExitStack() as stack:
        if loop == "uvloop":  # as `mixer serve` runs it
            srv = stack.enter_context(on_uvloop(settings, redis_url))
        else:
            srv = await stack.enter_async_context(running_app(settings, redis_url))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        for _ in range(3):
            async with http.get(srv.url + "/events") as resp:
                assert resp.status == 200 and (await next_event(resp))[1] == "hello"
                resp.close()  # the connection, not only this response: what a closed tab does
            await eventually(lambda: not srv.app[CONNECTIONS], timeout=SSE_KEEPALIVE / 5)
        async with http.get(srv.url + "/events") as resp:
            assert resp.status == 200


async def test_format_json_is_served_and_any_other_format_refused_saying_why(keys: Keys, redis_url: str) -> None:
    # the query /ws takes works here too, but an SSE stream is text: a client asking msgpack (or a typo) is told so
    # instead of getting JSON it would fail to decode
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        for query in ("format=json", "format=", "chats=edchat&format=json"):
            async with http.get(f"{srv.url}/events?{query}") as resp:
                assert resp.status == 200 and (await next_event(resp))[1] == "hello"
        for fmt in ("msgpack", "xml", "JSON"):
            async with http.get(f"{srv.url}/events?format={fmt}") as resp:
                assert resp.status == 400
                assert await resp.text() == (
                    "format on /events is json (Server-Sent Events are text); msgpack is for /ws"
                )
        assert not srv.app[CONNECTIONS]  # refused before it was counted
