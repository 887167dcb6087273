"""The fan-out web app: ``create_app(settings, redis_url)`` and its routes.

Resources are cleanup contexts (a failed start unwinds only what started): a pooled
Redis client for history reads, and per profile a feed follower (a task on a dedicated
connection that reads the feed and publishes each batch to the profile's ``Hub``) and the
hub's writer. Routes: ``/ws`` and ``/events`` (the live contract, ``mixer.fanout.live``),
``/api/feed`` (``mixer.fanout.feedapi``), ``/api/chats``, ``/api/stats``, ``/metrics``, ``POST /api/posts`` (HTTP
only: the records go to the ``mixer.webhook.Webhook`` the composition root passes in), ``/healthz``, ``/readyz``, the
moderation API (``mixer.fanout.modapi``) and the pages (``mixer.fanout.pages``). Every ``/api/*`` route answers 503
while Redis is away (``mixer.fanout.outage``); wrong bearer tokens are throttled by address (``mixer.fanout.throttle``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp import WSCloseCode, web
from aiohttp.http_exceptions import HttpProcessingError

from mixer import connect
from mixer.codec import dumps
from mixer.fanout import metrics
from mixer.fanout.appkeys import (
    CONNECTIONS,
    FOLLOWERS,
    FOLLOWING,
    HUB,
    HUBS,
    KEYS,
    MODAPI,
    REDIS,
    SETTINGS,
    SOCKETS,
    STREAMING,
    STREAMS,
    THROTTLE,
    WEBHOOK,
)
from mixer.fanout.collector import keep_collector
from mixer.fanout.feedapi import feed_handler
from mixer.fanout.hub import Hub
from mixer.fanout.live import (
    event_info,
    events_handler,
    follow_feed,
    send_pings,
    send_stats,
    ws_handler,
)
from mixer.fanout.modapi import ModApi
from mixer.fanout.outage import RedisHealth, redis_guard, redis_refusal
from mixer.fanout.pages import cors_headers, page_routes, security_headers, web_dir
from mixer.fanout.throttle import AuthThrottle, check_bearer
from mixer.keys import Keys
from mixer.rules import config_rules
from mixer.schedule import chat_entry
from mixer.settings import Settings
from mixer.streams import text
from mixer.webhook import Webhook

log = logging.getLogger(__name__)

# The largest body POST /api/posts reads (aiohttp's client_max_size, for every route): a hundred posts at their
# largest (mixer.models.LIMITS) fit; a 50 MB post never reaches the parser, let alone the feed.
WEBHOOK_MAX_BYTES = 1 << 20
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus text exposition format 0.0.4


async def webhook_handler(request: web.Request) -> web.Response:
    """``POST /api/posts``: a Post, any platform payload, or a JSON array of them, behind a bearer token.

    Good records are published even when others in the same body are bad; the answer lists
    each bad one with its index and reason (400 only when nothing could be used).
    """
    settings = request.app[SETTINGS]
    if not settings.webhook_token:
        raise web.HTTPNotFound(text="the webhook is off: set [webhook] token (MIXER_WEBHOOK_TOKEN)")
    check_bearer(request, settings.webhook_token, request.app[THROTTLE])
    webhook = request.app[WEBHOOK]
    if webhook is None:
        raise web.HTTPServiceUnavailable(text="this server runs no webhook ingest")
    too_large = f"POST /api/posts takes at most {WEBHOOK_MAX_BYTES:,} bytes a request: send fewer records at a time"
    if request.content_length is not None and request.content_length > WEBHOOK_MAX_BYTES:
        raise web.HTTPRequestEntityTooLarge(  # refused before reading: the sender learns why at once
            WEBHOOK_MAX_BYTES, request.content_length, text=f"{too_large} (this one is {request.content_length:,})"
        )
    origin = request.remote or "?"
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:  # a chunked body, cut off by client_max_size as it grew
        raise web.HTTPRequestEntityTooLarge(WEBHOOK_MAX_BYTES, WEBHOOK_MAX_BYTES + 1, text=too_large) from None
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        webhook.counters["malformed"] += 1
        log.warning("webhook from %s: body skipped: not JSON this server reads: %s (%r)", origin, reason, raw[:80])
        raise web.HTTPBadRequest(text=f"not JSON: {reason}") from None
    if body == []:
        raise web.HTTPBadRequest(text="no records: send a record or a JSON array of them")
    got = await webhook.receive(body if isinstance(body, list) else [body], origin)
    status = 400 if got.errors and not got.events else 202
    answer = {"published": got.published, "events": got.events, "errors": list(got.errors)}
    return web.Response(status=status, body=dumps(answer), content_type="application/json")


async def chats_handler(request: web.Request) -> web.Response:
    """``GET /api/chats``: the event and its directory of chats, each with its live state and next slot."""
    settings = request.app[SETTINGS]
    now = datetime.now(UTC)
    body = {
        "event": event_info(settings),
        "chats": [chat_entry(c, now) for c in settings.chats],
    }
    return web.Response(body=dumps(body), content_type="application/json")


async def stats_handler(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    webhook = request.app[WEBHOOK]
    stored = await request.app[REDIS].hgetall(request.app[KEYS].ingest_stats)
    ingest = {text(name): json.loads(value) for name, value in stored.items()}
    body = {
        "pid": os.getpid(),
        "clients": len(hub),
        "cursor": hub.cursor,
        "hub": dict(hub.counters),
        "webhook": dict(webhook.counters) if webhook else {},
        "ingest": ingest,
        "moderation": {"waiting": request.app[MODAPI].waiting},
        "auth": dict(request.app[THROTTLE].counters),
    }
    return web.Response(body=dumps(body), content_type="application/json")


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text format."""
    app = request.app
    webhook = app[WEBHOOK]
    hubs: dict[str, Hub] = app[HUBS]
    body = await metrics.render(hubs, app[REDIS], app[KEYS], webhook.counters if webhook else {})
    # the exposition format's own media type (content_type= takes no parameters); X-Format stays for old scrapers
    return web.Response(text=body, headers={"Content-Type": METRICS_TYPE, "X-Format": "prometheus-0.0.4"})


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Ready when Redis answers and can write to disk, and the feed followers run; else 503 and a one-line reason."""
    if not all(event.is_set() for event in request.app[FOLLOWERS].values()):
        return web.Response(status=503, text="feed follower starting\n")
    refusal = await redis_refusal(request.app[REDIS])
    if refusal is not None:
        return web.Response(status=503, text=f"{refusal}\n")
    return web.Response(text="ready\n")


class UnparsableRequests(logging.Filter):
    """aiohttp logs a request it cannot parse (a request line over 8 KiB, a malformed header) as an ERROR with a
    traceback, though any client can send one and it is answered 400: such a record becomes one INFO line saying
    from where and why."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            why = str(exc.message).splitlines()[0][:120] if exc.message else type(exc).__name__
            record.msg, record.args = "%s: %s (answered %s)", (record.getMessage(), why, exc.code)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True


_UNPARSABLE = UnparsableRequests()


def create_app(
    settings: Settings,
    redis_url: str,
    webhook: Callable[[aioredis.Redis], Webhook] | None = None,
    pages: Path | None = None,
) -> web.Application:
    """The fan-out server for ``settings`` on the Redis at ``redis_url``; nothing starts until it runs.
    ``webhook`` makes what ``POST /api/posts`` hands its records to, given the app's Redis client; ``pages`` is
    the folder the pages are served from (default: the installed ``mixer.web``)."""
    # No middleware: each one is two coroutine frames under every open websocket (docs/benchmarks.md "Idle
    # websockets"); the /api/* routes are wrapped one by one instead.
    app = web.Application(client_max_size=WEBHOOK_MAX_BYTES)
    logging.getLogger("aiohttp.server").addFilter(_UNPARSABLE)  # added once, however many apps
    guard = redis_guard(RedisHealth())
    app[SETTINGS] = settings
    app[KEYS] = Keys(settings.key_prefix)
    keys = Keys(settings.key_prefix)
    streams = {name: keys.feed if name == "full" else keys.shaped(name) for name in settings.profile_names}
    hubs = {name: Hub(settings.backlog_bytes, settings.cutoff_seconds) for name in streams}
    followers = {name: asyncio.Event() for name in streams}
    app[STREAMS], app[HUBS], app[FOLLOWERS] = streams, hubs, followers
    app[HUB], app[FOLLOWING] = hubs["full"], followers["full"]
    app[SOCKETS] = set()
    app[STREAMING] = {}
    connections: Counter[str] = Counter()
    app[CONNECTIONS] = connections
    app[THROTTLE] = throttle = AuthThrottle()  # wrong tokens on the webhook and the moderation API, together

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        # A blocking pool: a burst of new clients waits for a connection instead of failing
        # (the default pool raises MaxConnectionsError past 100 and closed ~2% of a 5,000-client ramp).
        pool = connect.pool(
            redis_url,
            keys.feed,
            aioredis.BlockingConnectionPool,
            max_connections=64,
            timeout=20,
            socket_timeout=10,
            health_check_interval=30,
        )
        app[REDIS] = aioredis.Redis(connection_pool=pool)
        app[WEBHOOK] = webhook(app[REDIS]) if webhook is not None else None
        yield
        await app[REDIS].aclose()
        await pool.aclose()

    async def follower_ctx(app: web.Application) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(
                follow_feed(redis_url, streams[name], hubs[name], followers[name]), name=f"follow-{name}"
            )
            for name in streams
        ]
        tasks += [asyncio.create_task(hub.run(), name=f"write-{name}") for name, hub in hubs.items()]
        tasks.append(asyncio.create_task(send_stats(app, settings.stats_seconds), name="stats"))
        tasks.append(asyncio.create_task(send_pings(app, settings.heartbeat_seconds), name="pings"))
        latest = lambda: max(hub.last_broadcast for hub in hubs.values())  # noqa: E731
        tasks.append(asyncio.create_task(keep_collector(latest), name="collector"))
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close_sockets(app: web.Application) -> None:
        sockets = app[SOCKETS]  # (each waits for its client's answer, a few seconds at most)
        for transport, ended in app[STREAMING].copy().items():
            if not transport.is_closing():  # (one whose client just left: uvloop raises on a write to it)
                transport.write(b"0\r\n\r\n")  # the chunked body's end: the stream ends, not breaks (written
                transport.close()  # whole: the hub writes whole chunks); EventSource reconnects with Last-Event-ID
            ended.set()  # its handler returns now, not at its next keep-alive, which shutdown would wait for
        closing = [ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown") for ws in sockets.copy()]
        await asyncio.gather(*closing, return_exceptions=True)

    app.cleanup_ctx.extend([redis_ctx, follower_ctx])
    app.on_shutdown.append(close_sockets)
    app.on_response_prepare.append(security_headers)
    app.on_response_prepare.append(cors_headers(settings.origins))
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/events", events_handler)
    app.router.add_get("/api/feed", guard(feed_handler))
    app.router.add_get("/api/chats", guard(chats_handler))
    app.router.add_post("/api/posts", guard(webhook_handler))
    modapi = app[MODAPI] = ModApi(settings, keys, lambda: app[REDIS], config_rules(settings), throttle)
    app.router.add_routes(web.RouteDef(r.method, r.path, guard(r.handler), r.kwargs) for r in modapi.routes())
    app.on_shutdown.append(modapi.shutdown)  # consoles waiting for changes are answered at once
    app.router.add_get("/api/stats", guard(stats_handler))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/readyz", readyz)
    app.router.add_routes(page_routes(settings, pages or web_dir()))
    return app
