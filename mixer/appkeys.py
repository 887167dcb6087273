"""The keys of what the fan-out app keeps (``app[HUB]``, ``app[SETTINGS]``...), apart so every module of the app
can name them without importing the app."""

from __future__ import annotations

import asyncio
from collections import Counter

import redis.asyncio as aioredis
from aiohttp import web

from .hub import Hub
from .ingest import Publisher
from .keys import Keys
from .modapi import ModApi
from .settings import Settings

SETTINGS = web.AppKey("settings", Settings)
KEYS = web.AppKey("keys", Keys)
REDIS = web.AppKey("redis", aioredis.Redis)
HUB = web.AppKey("hub", Hub)
FOLLOWING = web.AppKey("following", asyncio.Event)  # the full feed's follower is running
HUBS: web.AppKey[dict[str, Hub]] = web.AppKey("hubs")  # profile -> its hub ("full" is HUB)
STREAMS: web.AppKey[dict[str, str]] = web.AppKey("streams")  # profile -> the stream its hub follows
FOLLOWERS: web.AppKey[dict[str, asyncio.Event]] = web.AppKey("followers")  # profile -> set once followed
SOCKETS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("sockets")
CONNECTIONS: web.AppKey[Counter[str]] = web.AppKey("connections")  # open /ws + /events clients per address
STREAMING: web.AppKey[set[asyncio.Transport]] = web.AppKey("streaming")  # open /events responses
PUBLISHER = web.AppKey("publisher", Publisher)
WEBHOOK_COUNTERS: web.AppKey[Counter[str]] = web.AppKey("webhook_counters")
MODAPI = web.AppKey("modapi", ModApi)
