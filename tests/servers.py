"""Starting the real fan-out app (as `mixer serve` builds it) on a free loopback port, for tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from mixer.fanout.appkeys import FOLLOWING
from mixer.runner import build_app
from mixer.settings import ChatSettings, Settings

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
async def running_app(settings: Settings, redis_url: str, port: int = 0) -> AsyncIterator[Running]:
    """The app listening on 127.0.0.1, ready (following the feed) when entered; cleaned up on exit."""
    app = build_app(settings, redis_url)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
    await site.start()
    server = site._server
    assert server is not None
    bound = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{bound}"
    try:
        await asyncio.wait_for(app[FOLLOWING].wait(), 10)
        yield Running(app, runner, url)
    finally:
        await runner.cleanup()
