"""The fan-out web app: ``create_app(settings, redis_url)`` and its routes.

Resources are cleanup contexts (a failed start unwinds only what started): a pooled
Redis client for history reads, and the feed follower, a task on a dedicated
connection that reads the merged feed and hands each batch to the ``Hub``. Routes:
``/ws`` (the websocket contract), ``/api/feed``, ``/api/chats``, ``/api/stats``,
``POST /api/posts`` (the webhook),
``/healthz``, ``/readyz``, and the web pages from ``web/``.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack
import redis.asyncio as aioredis
from aiohttp import WSCloseCode, WSMsgType, web
from redis.exceptions import RedisError

from . import metrics
from .codec import EDIT_FIELD, FIELD, PIN_FIELD, RETRACT_FIELD, chunk, dumps, encode_message, unpack_item, wire
from .collector import keep_collector
from .hashtags import ChatMatcher
from .hub import HEARTBEAT_PARTS, Client, Hub
from .ingest import Publisher
from .keys import Keys
from .messages import BATCH_POSTS, FeedItem, select
from .modapi import ModApi
from .models import Event, Ignored, normalize_tag
from .moderation import Rules
from .pages import cors_headers, page_routes, security_headers
from .recorded import parse_record
from .settings import ChatSettings, Settings
from .streams import (
    Entry,
    dedicated_client,
    gap_lost,
    id_key,
    last_id,
    raise_if_cancelling,
    read_new,
    read_range,
    read_tail,
    text,
)

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
_ID = re.compile(r"^\d{1,20}(-\d{1,20})?$")

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


_KINDS = {EDIT_FIELD: "u", RETRACT_FIELD: "r", PIN_FIELD: "n"}


def decode_entries(entries: list[Entry]) -> list[FeedItem]:
    """Feed entries as (kind, payload) in feed order; an undecodable entry is logged and left out."""
    items: list[FeedItem] = []
    for entry_id, raw, kind in entries:
        try:
            if kind == FIELD:
                items.append(("p", unpack_item(entry_id, raw)))
            elif kind in _KINDS:
                items.append((_KINDS[kind], msgpack.unpackb(raw, raw=False)))
        except Exception as exc:
            log.warning("feed: skipping undecodable entry %s: %s", entry_id, exc)
    return items


async def history(redis: aioredis.Redis, keys: Keys, entries: list[Entry]) -> list[dict[str, Any]]:
    """The posts among feed entries as they stand now: edits and counts applied, retracted ones left out."""
    posts = [item for kind, item in decode_entries(entries) if kind == "p"]
    if not posts:
        return []
    stored: list[Any] = await redis.hmget(keys.index, [p["key"] for p in posts])
    out = []
    for post, raw in zip(posts, stored, strict=True):
        now = msgpack.unpackb(raw, raw=False) if raw is not None else post
        if now.get("retracted") or now.get("hidden"):
            continue
        if now.get("id", post["id"]) != post.get("ref", post["id"]):
            continue  # this card was hidden and shown again under a newer id
        out.append({**now, "id": post["id"]})
    return out


READ_GAP = 0.005  # seconds between feed reads while the hub is writing: a few ms of posts per batch, not one each


async def follow_feed(redis_url: str, stream: str, hub: Hub, following: asyncio.Event) -> None:
    """Publish every feed entry after the hub's cursor to the hub, in order; resumes from it after a Redis outage."""
    backoff = 0.1
    redis = dedicated_client(redis_url, 1000)
    try:
        while True:
            try:
                if not following.is_set():
                    hub.cursor = await last_id(redis, stream)
                    following.set()
                got = await read_new(redis, {stream: hub.cursor}, 1000, BATCH_POSTS)
                entries = got.get(stream, [])
                if entries:
                    hub.publish(decode_entries(entries), entries[-1][0])  # Hub.run writes it
                hub.sweep()
                raise_if_cancelling()
                backoff = 0.1
                if len(entries) < BATCH_POSTS and hub.pending:  # (a full read: more are waiting, read on)
                    await asyncio.sleep(READ_GAP)
            except (RedisError, OSError) as exc:
                raise_if_cancelling()
                log.warning("feed: redis error (%s); retrying in %.1fs from %s", exc, backoff, hub.cursor)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
    finally:
        await redis.aclose()


async def send_pings(app: web.Application, every: float) -> None:
    """Every ``every`` seconds, one shared ping frame to every websocket client of every hub, dealt out in
    ``HEARTBEAT_PARTS`` steps so the answers come in evenly; a client that did not answer its previous ping is
    dropped (``Hub.heartbeat``), so half-open connections do not linger."""
    for tick in itertools.count():
        await asyncio.sleep(every / HEARTBEAT_PARTS)
        for hub in app[HUBS].values():
            hub.heartbeat(tick % HEARTBEAT_PARTS, HEARTBEAT_PARTS)


async def send_stats(app: web.Application, every: float = 5.0) -> None:
    """Every ``every`` seconds, a ``stats`` frame to every client: per chat, posts per minute, total, and
    for a shaped profile how many posts it left out ("+N more from #chat")."""
    settings, redis, keys = app[SETTINGS], app[REDIS], app[KEYS]
    rates = app[HUB].rates
    while True:
        await asyncio.sleep(every)
        try:
            now = time.monotonic()
            per_minute = rates.per_minute(now)
            for name, hub in app[HUBS].items():
                if not len(hub):
                    continue
                more: dict[Any, Any] = {}
                if name != "full":
                    more = await redis.hgetall(keys.shaped_drops(name))
                dropped = {text(k): int(v) for k, v in more.items()}
                chats = {
                    c.tag: {
                        "per_minute": per_minute[c.tag],
                        "total": rates.totals[c.tag],
                        "more": dropped.get(c.tag, 0),
                    }
                    for c in settings.chats
                }
                hub.send_all({"type": "stats", "profile": name, "chats": chats})
        except (RedisError, OSError) as exc:
            raise_if_cancelling()
            log.warning("stats: redis error (%s); next try in %.0fs", exc, every)


def parse_profile(request: web.Request) -> str:
    """The ``profile=`` asked for (default ``full``); 400 for one the server does not have."""
    profile = request.query.get("profile", "full")
    names = request.app[SETTINGS].profile_names
    if profile not in names:
        raise web.HTTPBadRequest(text=f"profile is one of {', '.join(names)}")
    return profile


def parse_chats(raw: str | None) -> frozenset[str] | None:
    tags = frozenset(normalize_tag(t) for t in (raw or "").split(",") if t.strip())
    return tags or None


def parse_since(raw: str | None) -> str | None:
    if not raw:
        return None
    if not _ID.match(raw):
        raise web.HTTPBadRequest(text="since must be a feed id such as 1700000000000-0")
    return raw


async def greeting(app: web.Application, profile: str) -> dict[str, Any]:
    """The hello a new /ws or /events client of ``profile`` gets, once its hub follows the feed."""
    await app[FOLLOWERS][profile].wait()
    raw_pin = await app[REDIS].get(app[KEYS].pinned)
    pinned = msgpack.unpackb(raw_pin, raw=False) if raw_pin is not None else None
    return hello(app[SETTINGS], app[HUBS][profile].cursor, profile, pinned)


def event_info(settings: Settings) -> dict[str, str]:
    """The event as screens show it: name, hashtag, and ``link`` (the QR code's join link) only when one is set."""
    event = {"name": settings.event_name, "hashtag": settings.event_hashtag}
    return event | {"link": settings.event_link} if settings.event_link else event


def hello(settings: Settings, cursor: str, profile: str = "full", pinned: Any = None) -> dict[str, Any]:
    return {
        "type": "hello",
        "pinned": pinned,
        "profile": profile,
        "profiles": list(settings.profile_names),
        "event": event_info(settings),
        "chats": [{"tag": c.tag, "title": c.title, "colour": c.colour} for c in settings.chats],
        "cursor": cursor,
    }


async def _send(ws: web.WebSocketResponse, obj: dict[str, Any], fmt: str) -> None:
    if fmt == "msgpack":
        await ws.send_bytes(encode_message(obj, fmt))
    else:
        await ws.send_str(encode_message(obj, fmt).decode())


def admit(request: web.Request) -> str:
    """Check a new /ws or /events client: its browser Origin against ``[server] origins`` (403), and the
    connection limits in total (503) and per address (429); returns the address it is counted under."""
    settings = request.app[SETTINGS]
    origin = request.headers.get("Origin")
    if origin and settings.origins and origin.rstrip("/") not in settings.origins:
        own = f"{request.scheme}://{request.host}"
        if origin.rstrip("/") != own:
            raise web.HTTPForbidden(text=f"origin {origin} is not allowed here")
    counts: Counter[str] = request.app[CONNECTIONS]
    address = request.remote or "?"
    if counts.total() >= settings.max_connections:
        raise web.HTTPServiceUnavailable(
            text="too many connections here; try another server", headers={"Retry-After": "5"}
        )
    if counts[address] >= settings.max_per_ip:
        raise web.HTTPTooManyRequests(text="too many connections from your address", headers={"Retry-After": "5"})
    counts[address] += 1
    return address


def release(request: web.Request, address: str) -> None:
    counts: Counter[str] = request.app[CONNECTIONS]
    counts[address] -= 1
    if counts[address] <= 0:
        del counts[address]


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    """``GET /ws``: hello, the gap after ``since`` from history, then live posts frames."""
    app = request.app
    profile = parse_profile(request)
    hub = app[HUBS][profile]
    chats = parse_chats(request.query.get("chats"))
    since = parse_since(request.query.get("since"))
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "msgpack"):
        raise web.HTTPBadRequest(text="format is json or msgpack")
    address = admit(request)  # one coroutine frame per client, not two: an idle connection costs less memory
    try:
        # permessage-deflate only for a client that asks; the shared frames stay uncompressed (valid either way)
        asks = "permessage-deflate" in request.headers.get("Sec-WebSocket-Extensions", "")
        # heartbeats come from the hub (send_pings): no ping timer and task per connection; pongs are ours to see
        ws = web.WebSocketResponse(autoping=False, compress=asks, max_msg_size=1 << 16)
        await ws.prepare(request)
        transport = request.transport
        if transport is None:
            return ws
        app[SOCKETS].add(ws)
        client = Client(transport, chats, fmt)
        try:
            await _send(ws, await greeting(app, profile), fmt)
            if since is not None:

                async def send(message: dict[str, Any]) -> None:
                    await _send(ws, message, fmt)

                await catch_up(send, app[REDIS], app[KEYS], app[STREAMS][profile], hub, client, since)
            hub.add(client)  # no await since catch_up saw hub.cursor: no gap, no repeat
            while True:  # not ``async for``: its __anext__ coroutine would be one more object per idle client
                msg = await ws.receive()
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    break
                client.answered = True
                if msg.type == WSMsgType.PING:
                    await ws.pong(msg.data)
                elif msg.type == WSMsgType.TEXT and _is_ping(msg.data):
                    await _send(ws, {"type": "pong"}, fmt)
        finally:
            hub.remove(client)
            app[SOCKETS].discard(ws)
        return ws
    finally:
        release(request, address)


def _is_ping(data: str) -> bool:
    try:
        return bool(json.loads(data).get("type") == "ping")
    except (ValueError, AttributeError):
        return False


async def catch_up(
    send: Callable[[dict[str, Any]], Awaitable[None]],
    redis: aioredis.Redis,
    keys: Keys,
    stream: str,
    hub: Hub,
    client: Client,
    since: str,
) -> None:
    """Send every feed post after ``since`` up to the hub's cursor, which may move meanwhile; or, when part of
    that gap was trimmed from the history, a ``reset`` (reload from /api/feed) instead of a silent partial gap."""
    try:
        lost = await gap_lost(redis, stream, since)
    except RedisError:  # no such stream yet: nothing was ever trimmed from it
        lost = False
    if lost:
        await send({"type": "reset", "cursor": hub.cursor})
        return
    after = since
    while id_key(after) < id_key(hub.cursor):
        entries = await read_range(redis, stream, after, hub.cursor, count=500)
        if not entries:
            break
        chosen = select(client.chats, await history(redis, keys, entries))
        if chosen:
            await send({"type": "posts", "items": chosen})
        after = entries[-1][0]


async def events_handler(request: web.Request) -> web.StreamResponse:
    """``GET /events``: Server-Sent Events, one post per event, ``id`` = its feed id; ``Last-Event-ID`` (or
    ``since``) resumes the gap from history. Same filters and profiles as ``/ws``; a comment every 15 s."""
    app = request.app
    profile = parse_profile(request)
    hub = app[HUBS][profile]
    chats = parse_chats(request.query.get("chats"))
    since = parse_since(request.headers.get("Last-Event-ID") or request.query.get("since"))
    address = admit(request)
    try:
        return await _serve_events(request, profile, hub, chats, since)
    finally:
        release(request, address)


async def _serve_events(
    request: web.Request, profile: str, hub: Hub, chats: frozenset[str] | None, since: str | None
) -> web.StreamResponse:
    app = request.app
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    transport = request.transport
    if transport is None:
        return response
    client = Client(transport, chats, "sse")
    app[STREAMING].add(transport)

    async def send(message: dict[str, Any]) -> None:
        transport.write(wire([message], "sse"))

    try:
        await send(await greeting(app, profile))
        if since is not None:
            await catch_up(send, app[REDIS], app[KEYS], app[STREAMS][profile], hub, client, since)
        hub.add(client)  # no await since catch_up saw hub.cursor: no gap, no repeat
        while not transport.is_closing():
            await asyncio.sleep(15)  # the heartbeat interval: an SSE comment keeps proxies and idle timers awake
            transport.write(chunk(b":\n\n"))
    finally:
        hub.remove(client)
        app[STREAMING].discard(transport)
    return response


async def feed_handler(request: web.Request) -> web.Response:
    """``GET /api/feed?since=&limit=&chats=``: history in feed order (the newest ``limit`` without since)."""
    app = request.app
    since = parse_since(request.query.get("since"))
    chats = parse_chats(request.query.get("chats"))
    try:
        limit = max(1, min(1000, int(request.query.get("limit", "50"))))
    except ValueError:
        raise web.HTTPBadRequest(text="limit must be a number") from None
    profile = parse_profile(request)
    redis, feed = app[REDIS], app[STREAMS][profile]
    if since is None:
        entries = await read_tail(redis, feed, limit if chats is None else 1000)
        items = select(chats, await history(redis, app[KEYS], entries))[-limit:]
    else:
        items, after = [], since
        while len(items) < limit:
            entries = await read_range(redis, feed, after, count=limit)
            if not entries:
                break
            items += select(chats, await history(redis, app[KEYS], entries))
            after = entries[-1][0]
        items = items[:limit]
    cursor = items[-1]["id"] if items else since or app[HUBS][profile].cursor
    return web.Response(body=dumps({"items": items, "cursor": cursor}), content_type="application/json")


async def webhook_handler(request: web.Request) -> web.Response:
    """``POST /api/posts``: a Post, any platform payload, or a JSON array of them, behind a bearer token.

    Good records are published even when others in the same body are bad; the answer lists
    each bad one with its index and reason (400 only when nothing could be used).
    """
    settings = request.app[SETTINGS]
    if not settings.webhook_token:
        raise web.HTTPNotFound(text="the webhook is off: set [webhook] token (MIXER_WEBHOOK_TOKEN)")
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {settings.webhook_token}".encode()):
        raise web.HTTPUnauthorized(text="a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    try:
        body = json.loads(await request.read())
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"not JSON: {exc}") from None
    records = body if isinstance(body, list) else [body]
    matcher = ChatMatcher(settings.chat_tags)
    now_ms = int(time.time() * 1000)
    events: list[Event] = []
    errors: list[dict[str, Any]] = []
    counters = request.app[WEBHOOK_COUNTERS]
    for index, record in enumerate(records):
        try:
            events += parse_record(record, matcher, now_ms)
        except Ignored as skip:
            counters[f"skipped:{skip.reason}"] += 1
        except ValueError as exc:
            counters["malformed"] += 1
            errors.append({"index": index, "reason": str(exc)})
            log.warning("webhook from %s: record %d skipped: %s", request.remote, index, exc)
    counters["received"] += len(records)
    published = await request.app[PUBLISHER].publish(events) if events else 0
    counters["published"] += published
    status = 400 if errors and not events else 202
    body_out = {"published": published, "events": len(events), "errors": errors}
    return web.Response(status=status, body=dumps(body_out), content_type="application/json")


def chat_entry(chat: ChatSettings, now: datetime) -> dict[str, Any]:
    """A chat as the directory shows it: with ``live``, ``next_start`` and ``next_end`` (UTC ISO) when scheduled."""
    entry: dict[str, Any] = {"tag": chat.tag, "title": chat.title, "colour": chat.colour}
    entry |= {"topic": chat.topic, "hosts": list(chat.hosts), "schedule": chat.schedule or None}
    if chat.schedule:
        from .schedule import Schedule, is_live, next_slot

        schedule = Schedule.parse(chat.schedule)
        start, end = next_slot(schedule, now)
        entry |= {"live": is_live(schedule, now), "next_start": _iso(start), "next_end": _iso(end)}
    else:
        entry |= {"live": None, "next_start": None, "next_end": None}
    return entry


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


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
    webhook: Counter[str] = request.app[WEBHOOK_COUNTERS]
    stored = await request.app[REDIS].hgetall(request.app[KEYS].ingest_stats)
    ingest = {text(name): json.loads(value) for name, value in stored.items()}
    body = {
        "pid": os.getpid(),
        "clients": len(hub),
        "cursor": hub.cursor,
        "hub": dict(hub.counters),
        "webhook": dict(webhook),
        "ingest": ingest,
    }
    return web.Response(body=dumps(body), content_type="application/json")


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text format."""
    app = request.app
    webhook: Counter[str] = app[WEBHOOK_COUNTERS]
    hubs: dict[str, Hub] = app[HUBS]
    body = await metrics.render(hubs, app[REDIS], app[KEYS], webhook)
    return web.Response(text=body, content_type="text/plain", charset="utf-8", headers={"X-Format": "prometheus-0.0.4"})


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Ready when Redis answers and the feed follower is running."""
    if not all(event.is_set() for event in request.app[FOLLOWERS].values()):
        return web.Response(status=503, text="feed follower starting\n")
    try:
        await asyncio.wait_for(request.app[REDIS].ping(), 2)
    except (RedisError, OSError, TimeoutError) as exc:
        return web.Response(status=503, text=f"redis: {exc}\n")
    return web.Response(text="ready\n")


def config_rules(settings: Settings) -> Rules:
    """The moderation rules the config sets (a moderator's edits, kept in Redis, take their place)."""
    return Rules(
        words=settings.moderation_words,
        accounts=settings.moderation_accounts,
        profanity=settings.moderation_profanity,
        approval=settings.moderation_approval,
    )


def create_app(settings: Settings, redis_url: str, web_dir: Path = WEB_DIR) -> web.Application:
    """The fan-out server for ``settings`` on the Redis at ``redis_url``; nothing starts until it runs."""
    app = web.Application()
    app[SETTINGS] = settings
    app[KEYS] = Keys(settings.key_prefix)
    keys = Keys(settings.key_prefix)
    streams = {name: keys.feed if name == "full" else keys.shaped(name) for name in settings.profile_names}
    hubs = {name: Hub(settings.backlog_bytes, settings.cutoff_seconds) for name in streams}
    followers = {name: asyncio.Event() for name in streams}
    app[STREAMS], app[HUBS], app[FOLLOWERS] = streams, hubs, followers
    app[HUB], app[FOLLOWING] = hubs["full"], followers["full"]
    app[SOCKETS] = set()
    app[STREAMING] = set()
    connections: Counter[str] = Counter()
    app[CONNECTIONS] = connections
    webhook_counters: Counter[str] = Counter()
    app[WEBHOOK_COUNTERS] = webhook_counters

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        # A blocking pool: a burst of new clients waits for a connection instead of failing
        # (the default pool raises MaxConnectionsError past 100 and closed ~2% of a 5,000-client ramp).
        pool = aioredis.BlockingConnectionPool.from_url(
            redis_url, max_connections=64, timeout=20, socket_timeout=10, health_check_interval=30
        )
        app[REDIS] = aioredis.Redis(connection_pool=pool)
        app[PUBLISHER] = Publisher(app[REDIS], app[KEYS], settings.chat_tags, settings.chat_maxlen)
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
        sockets: set[web.WebSocketResponse] = app[SOCKETS]
        streaming: set[asyncio.Transport] = app[STREAMING]
        for transport in streaming.copy():
            transport.close()  # an SSE client reconnects with Last-Event-ID
        closing = [ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown") for ws in sockets.copy()]
        await asyncio.gather(*closing, return_exceptions=True)

    app.cleanup_ctx.extend([redis_ctx, follower_ctx])
    app.on_shutdown.append(close_sockets)
    app.on_response_prepare.append(security_headers)
    app.on_response_prepare.append(cors_headers(settings.origins))
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/events", events_handler)
    app.router.add_get("/api/feed", feed_handler)
    app.router.add_get("/api/chats", chats_handler)
    app.router.add_post("/api/posts", webhook_handler)
    app.router.add_routes(ModApi(settings, keys, lambda: app[REDIS], config_rules(settings)).routes())
    app.router.add_get("/api/stats", stats_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/readyz", readyz)
    app.router.add_routes(page_routes(settings, web_dir))
    return app
