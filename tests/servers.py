"""The real fan-out app (as `mixer serve` builds it) on a free loopback port, for tests: starting it, feeding its
feed and reading its clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import redis.asyncio as aioredis
import uvloop
from aiohttp import web

from mixer.codec import FIELD, pack_post
from mixer.fanout.appkeys import FOLLOWERS
from mixer.keys import Keys
from mixer.merge.stage import MergeStage
from mixer.runner import build_app
from mixer.settings import ChatSettings, Settings
from mixer.streams import dedicated_client

CHATS = (
    ChatSettings("smbiz", "Small Biz Chat", "#4fc3f7"),
    ChatSettings("edchat", "Education Chat", "#ffb74d"),
    ChatSettings("journchat", "Journalism Chat", "#81c784"),
)


def settings_for(prefix: str, **changes: object) -> Settings:
    base = {"chats": CHATS, "key_prefix": prefix, "event_name": "Test night", "event_hashtag": "chatmixer"}
    base.update(changes)
    return Settings(**base)  # type: ignore[arg-type]


@dataclass
class Running:
    app: web.Application
    runner: web.AppRunner
    url: str  # http://127.0.0.1:PORT

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"


@asynccontextmanager
async def running_app(
    settings: Settings, redis_url: str, port: int = 0, build: Callable[[Settings, str], web.Application] = build_app
) -> AsyncIterator[Running]:
    """The app ``build`` makes (as `mixer serve` does, by default) listening on 127.0.0.1, ready (every feed
    follower running, as ``/readyz`` requires) when entered; cleaned up on exit."""
    app = build(settings, redis_url)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
    await site.start()
    server = site._server
    assert server is not None
    bound = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{bound}"
    try:
        # every profile's follower, as /readyz asks: each reads its stream's newest id when it starts, and one still
        # starting would add that read to what a test counts (test_feedapi counts Redis commands)
        await asyncio.wait_for(asyncio.gather(*(started.wait() for started in app[FOLLOWERS].values())), 10)
        yield Running(app, runner, url)
    finally:
        await runner.cleanup()


@asynccontextmanager
async def running_deployment(settings: Settings, redis_url: str) -> AsyncIterator[Running]:
    """The fan-out app (``running_app``) and a merge stage (50 ms reorder window) on loopback, as a small
    deployment: what is published to the chat streams reaches the app's clients."""
    conn = dedicated_client(redis_url, 1000)  # the merge stage blocks in XREAD on it
    merge = MergeStage(conn, Keys(settings.key_prefix), settings.chat_tags, window=0.05)
    async with running_app(settings, redis_url) as srv:
        merging = asyncio.create_task(merge.run())
        try:
            yield srv
        finally:
            merging.cancel()
            await asyncio.gather(merging, return_exceptions=True)
            await conn.aclose()


@contextlib.contextmanager
def on_uvloop(settings: Any, redis_url: str) -> Iterator[Running]:
    """The app served from another thread on uvloop (as `mixer serve` runs it: its transports raise on a write
    after close, where asyncio's only log)."""
    started: list[tuple[Running, asyncio.AbstractEventLoop, asyncio.Event]] = []
    ready = threading.Event()

    async def serve() -> None:
        stop = asyncio.Event()
        async with running_app(settings, redis_url) as srv:
            started.append((srv, asyncio.get_running_loop(), stop))
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=uvloop.run, args=(serve(),))
    thread.start()
    try:
        assert ready.wait(15), "the app did not start"
        yield started[0][0]
    finally:
        if started:
            _, loop, stop = started[0]
            loop.call_soon_threadsafe(stop.set)
        thread.join(15)


async def add_to_feed(redis: aioredis.Redis, keys: Keys, *posts: Any) -> list[str]:
    ids = []
    for post in posts:
        entry_id = await redis.xadd(keys.feed, {FIELD: pack_post(post)})
        ids.append(entry_id.decode())
    return ids


async def receive_posts(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while len(items) < count:
        frame = await ws.receive_json(timeout=10)
        if frame["type"] == "posts":
            items += frame["items"]
    return items


async def next_event(resp: aiohttp.ClientResponse) -> tuple[str | None, str, Any]:
    """(id, event name, data) of the next event, comments skipped."""
    event_id, name, data = None, "message", ""
    while True:
        line = (await resp.content.readline()).decode().rstrip("\n")
        if line.startswith(":"):
            continue
        if not line:
            if data:
                return event_id, name, json.loads(data)
            continue
        field, _, value = line.partition(": ")
        if field == "id":
            event_id = value
        elif field == "event":
            name = value
        elif field == "data":
            data += value


@asynccontextmanager
async def serving(app: web.Application, shutdown_timeout: float = 1.0) -> AsyncIterator[str]:
    """A bare aiohttp app (a fake platform, a test server) on a free 127.0.0.1 port; yields ``http://127.0.0.1:PORT``
    and cleans it up on exit."""
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
