"""The keys of what the fan-out app keeps (``app[HUB]``, ``app[SETTINGS]``...), apart so every module of the app
can name them without importing the app."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Protocol

import redis.asyncio as aioredis
from aiohttp import web

from mixer.fanout.hub import Hub
from mixer.fanout.modapi import ModApi
from mixer.fanout.throttle import AuthThrottle
from mixer.keys import Keys
from mixer.settings import Settings
from mixer.webhook import Webhook


class Closable(Protocol):
    """An open websocket as the shutdown closes it: a ``WebSocketResponse``, or a ``Parked`` socket."""

    async def close(self, *, code: int, message: bytes = b"") -> bool: ...


SETTINGS = web.AppKey("settings", Settings)
KEYS = web.AppKey("keys", Keys)
REDIS = web.AppKey("redis", aioredis.Redis)
HUB = web.AppKey("hub", Hub)
FOLLOWING = web.AppKey("following", asyncio.Event)  # the full feed's follower is running
HUBS: web.AppKey[dict[str, Hub]] = web.AppKey("hubs")  # profile -> its hub ("full" is HUB)
STREAMS: web.AppKey[dict[str, str]] = web.AppKey("streams")  # profile -> the stream its hub follows
FOLLOWERS: web.AppKey[dict[str, asyncio.Event]] = web.AppKey("followers")  # profile -> set once followed
SOCKETS: web.AppKey[set[Closable]] = web.AppKey("sockets")  # open websockets, closed with 1001 on shutdown
CONNECTIONS: web.AppKey[Counter[str]] = web.AppKey("connections")  # open /ws + /events clients per address
# open /events responses, each with the event that ends its wait between keep-alive comments (set on shutdown)
STREAMING: web.AppKey[dict[asyncio.Transport, asyncio.Event]] = web.AppKey("streaming")
WEBHOOK: web.AppKey[Webhook | None] = web.AppKey("webhook")  # what POST /api/posts hands its records to; None: not here
MODAPI = web.AppKey("modapi", ModApi)
THROTTLE = web.AppKey("throttle", AuthThrottle)  # wrong bearer tokens per address (webhook and moderation API)
