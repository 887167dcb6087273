"""The live side of the fan-out app: ``/ws`` and ``/events``, and the tasks that feed their hubs.

``follow_feed`` reads a feed stream and publishes each batch to its ``Hub`` (which writes
it to the clients, ``Hub.run``); ``send_pings`` and ``send_stats`` deal out heartbeats and
``stats`` frames. A new subscriber is admitted (connection limits), greeted with ``hello``,
given the gap after its ``since`` from history (``catch_up``: the whole gap or ``reset``,
never part of it) and only then added to the hub, with no await in between, so it misses
and repeats nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import redis.asyncio as aioredis
from aiohttp import WSMsgType, web
from redis.exceptions import RedisError

from mixer.backoff import Backoff
from mixer.fanout.appkeys import (
    CONNECTIONS,
    FOLLOWERS,
    HUB,
    HUBS,
    KEYS,
    REDIS,
    SETTINGS,
    SOCKETS,
    STREAMING,
    STREAMS,
)
from mixer.fanout.clients import HEARTBEAT_PARTS, Client
from mixer.fanout.frames import chunk, encode_message, wire
from mixer.fanout.hub import Hub
from mixer.fanout.messages import BATCH_POSTS, frames_for, select
from mixer.feed import as_shown, decode_entries
from mixer.keys import Keys
from mixer.models import normalize_tag
from mixer.settings import Settings
from mixer.streams import (
    dedicated_client,
    gap_lost,
    id_key,
    last_id,
    raise_if_cancelling,
    read_new,
    read_range,
    text,
)

log = logging.getLogger(__name__)

_ID = re.compile(r"^\d{1,20}(-\d{1,20})?$")  # a feed id, as `since` gives it


READ_GAP = 0.005  # seconds between feed reads while the hub is writing: a few ms of posts per batch, not one each


async def follow_feed(redis_url: str, stream: str, hub: Hub, following: asyncio.Event) -> None:
    """Publish every feed entry after the hub's cursor to the hub, in order; resumes from it after a Redis outage."""
    backoff = Backoff(base=0.1, cap=5.0, jitter=0.0)
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
                backoff.reset()
                if len(entries) < BATCH_POSTS and hub.pending:  # (a full read: more are waiting, read on)
                    await asyncio.sleep(READ_GAP)
            except (RedisError, OSError) as exc:
                raise_if_cancelling()
                delay = backoff.next()
                log.warning("feed: redis error (%s); retrying in %.1fs from %s", exc, delay, hub.cursor)
                await asyncio.sleep(delay)
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
    """The hello a new /ws or /events client of ``profile`` gets, once its hub follows the feed: the pinned post
    as the profile's stream last said it (under that stream's ids), the feed's until the shaping stage passed a pin."""
    await app[FOLLOWERS][profile].wait()
    keys = app[KEYS]
    # (both keys in the {feed} slot: one MGET on Redis Cluster too)
    wanted = [keys.pinned] if profile == "full" else [keys.shaped_pinned(profile), keys.pinned]
    stored: list[Any] = await app[REDIS].mget(wanted)
    raw_pin = next((raw for raw in stored if raw is not None), None)
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
    """Send every feed post after ``since`` up to the hub's cursor, which may move meanwhile, and after them what
    else the gap holds (pins, retractions, updates of posts from before it); or, when part of that gap was trimmed
    from the history, a ``reset`` (reload from /api/feed) instead of a silent partial gap."""
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
        items = decode_entries(entries)
        chosen = select(client.chats, await as_shown(redis, keys, items))
        if chosen:
            await send({"type": "posts", "items": chosen})
        # (a post inside the gap came as it stands now: only posts from before it need their updates)
        controls = [(k, i) for k, i in items if k != "p" and (k != "u" or _before(i, since))]
        for message in frames_for(client.chats, controls):
            await send(message)
        after = entries[-1][0]


def _before(item: dict[str, Any], since: str) -> bool:
    return isinstance(item.get("id"), str) and _ID.match(item["id"]) is not None and id_key(item["id"]) <= id_key(since)


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
