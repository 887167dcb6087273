"""The live side of the fan-out app: ``/ws`` and ``/events``, and the tasks that feed their hubs.

``follow_feed`` reads a feed stream and publishes each batch to its ``Hub`` (which writes
it to the clients, ``Hub.run``); ``send_pings`` and ``send_stats`` deal out heartbeats and
``stats`` frames. A new subscriber is admitted (connection limits), greeted with ``hello``,
given the gap after its ``since`` from history (``mixer.fanout.catchup``: the whole gap or
``reset``, never part of it, paced by what the client reads) and only then added to the hub,
with no await in between, so it misses and repeats nothing. Every byte a client gets goes
through its hub's ``ClientRing`` rules (backlog, lag, cut-off). While Redis is unreachable a
new client waits ``REDIS_PATIENCE`` seconds at most, then a websocket is closed with 1013 and
``/events`` answers 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter
from functools import partial
from typing import Any

import msgpack
import redis.asyncio as aioredis
from aiohttp import WSCloseCode, WSMsgType, web
from redis.exceptions import RedisError

from mixer.backoff import Backoff
from mixer.fanout import catchup
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
from mixer.fanout.catchup import Unavailable, catch_up, patiently
from mixer.fanout.clients import HEARTBEAT_PARTS, Client
from mixer.fanout.frames import chunk, encode_message, sse_chunk, wire
from mixer.fanout.hangup import watch_hangup
from mixer.fanout.hub import Hub
from mixer.fanout.messages import BATCH_POSTS
from mixer.fanout.params import parse_id
from mixer.fanout.parked import MAX_MESSAGE, Parked, is_ping, may_park, park, release
from mixer.feed import decode_entries
from mixer.models import normalize_tag
from mixer.settings import Settings
from mixer.streams import dedicated_client, id_key, last_id, raise_if_cancelling, read_new, text

log = logging.getLogger(__name__)


READ_GAP = 0.005  # seconds between feed reads while the hub is writing: a few ms of posts per batch, not one each
SSE_KEEPALIVE = 15.0  # seconds between SSE comments: they keep proxies and idle timers from closing a quiet stream
TRY_AGAIN_LATER = "redis unreachable, try again later"  # the reason of a 1013 close
RETRY_AFTER = 5  # seconds a client refused for a Redis outage is asked to wait (Retry-After, SSE retry)


async def follow_feed(redis_url: str, stream: str, hub: Hub, following: asyncio.Event) -> None:
    """Publish every feed entry after the hub's cursor to the hub, in order; resumes from it after a Redis outage."""
    backoff = Backoff(base=0.1, cap=5.0, jitter=0.0)
    redis = dedicated_client(redis_url, 1000, stream)
    recovering = False
    failing_since: float | None = None  # an outage is one WARNING when it starts and one INFO when it ends
    try:
        while True:
            try:
                if not following.is_set():
                    hub.cursor = await last_id(redis, stream)
                    following.set()
                elif recovering:
                    await rewind_if_lost(redis, stream, hub)
                    recovering = False
                got = await read_new(redis, {stream: hub.cursor}, 1000, BATCH_POSTS)
                if failing_since is not None:
                    away = time.monotonic() - failing_since
                    log.info("feed: %s: redis answers again after %.1f s; following from %s", stream, away, hub.cursor)
                    failing_since = None
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
                recovering = True
                delay = backoff.next()
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("feed: %s: redis error (%s); retrying from %s (backoff up to %.0f s)", stream, exc,
                                hub.cursor, backoff.cap)  # fmt: skip
                else:
                    log.debug("feed: %s: redis error (%s); retrying in %.1f s", stream, exc, delay)
                await asyncio.sleep(delay)
    finally:
        await redis.aclose()


async def rewind_if_lost(redis: aioredis.Redis, stream: str, hub: Hub) -> None:
    """After an outage: when the feed's newest entry is older than what the hub already sent (a failover to a
    replica that had not received the last writes, or a Redis back without its data), every client is told
    ``reset`` with the feed's cursor and the hub carries on from there, so screens reload instead of holding
    posts the feed no longer has or silently missing what is written under the lost ids."""
    newest = await last_id(redis, stream)
    if id_key(newest) < id_key(hub.cursor):
        log.warning(
            "feed: %s went back from %s to %s (writes lost in a failover); clients told to reset",
            stream,
            hub.cursor,
            newest,
        )
        hub.counters["rewinds"] += 1
        hub.send_all({"type": "reset", "cursor": newest})
        hub.cursor = newest


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
    """The ``profile=`` asked for (default ``full``, also for an empty one); 400 for one the server does not have."""
    profile = request.query.get("profile") or "full"
    names = request.app[SETTINGS].profile_names
    if profile not in names:
        raise web.HTTPBadRequest(text=f"profile is one of {', '.join(names)}")
    return profile


def parse_chats(raw: str | None) -> frozenset[str] | None:
    tags = frozenset(normalize_tag(t) for t in (raw or "").split(",") if t.strip())
    return tags or None


def parse_since(raw: str | None, name: str = "since") -> str | None:
    """The feed id to resume after (None when absent or empty); 400 naming ``name`` when it is not one."""
    if not raw:
        return None
    return parse_id(raw, name)


async def pinned_post(app: web.Application, profile: str) -> Any:
    """The pinned post a new /ws or /events client of ``profile`` is greeted with, once its hub follows the feed:
    as the profile's stream last said it (under that stream's ids), the feed's until the shaping stage passed a pin.
    Waits ``REDIS_PATIENCE`` seconds at most for the follower and for Redis, then raises ``Unavailable``."""
    try:
        await asyncio.wait_for(app[FOLLOWERS][profile].wait(), catchup.REDIS_PATIENCE)
    except TimeoutError:
        raise Unavailable("the feed follower has not started") from None
    keys = app[KEYS]
    # (both keys in the event's slot: one MGET on Redis Cluster too)
    wanted = [keys.pinned] if profile == "full" else [keys.shaped_pinned(profile), keys.pinned]
    stored: list[Any] = await patiently(partial(app[REDIS].mget, wanted))
    raw_pin = next((raw for raw in stored if raw is not None), None)
    return msgpack.unpackb(raw_pin, raw=False) if raw_pin is not None else None


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


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    """``GET /ws``: hello, the gap after ``since`` from history, then live posts frames; closed with 1013 (try
    again later) when Redis stays unreachable for ``REDIS_PATIENCE`` seconds before the client has joined.

    Right after the upgrade the socket is parked (``mixer.fanout.parked``): a small protocol of ours reads the
    client's frames from then on, and returning frees every aiohttp object of the connection; when it cannot be
    parked, this handler reads them itself for the socket's whole life (``_read_until_closed``)."""
    app = request.app
    profile = parse_profile(request)
    hub = app[HUBS][profile]
    chats = parse_chats(request.query.get("chats"))
    since = parse_since(request.query.get("since"))
    fmt = request.query.get("format") or "json"
    if fmt not in ("json", "msgpack"):
        raise web.HTTPBadRequest(text="format is json or msgpack")
    address = admit(request)  # one coroutine frame per client, not two: an idle connection costs less memory
    held: Parked | None = None  # once parked, the socket's end (Parked.connection_lost) releases what it holds
    try:
        if request.headers.get("Upgrade", "").lower().strip() != "websocket":  # as prepare checks, in plainer words
            raise web.HTTPBadRequest(text="/ws is a websocket: connect with a websocket client; /events is HTTP")
        # permessage-deflate only for a client that asks; the shared frames stay uncompressed (valid either way)
        asks = "permessage-deflate" in request.headers.get("Sec-WebSocket-Extensions", "")
        # heartbeats come from the hub (send_pings): no ping timer and task per connection; pongs are ours to see
        ws = web.WebSocketResponse(autoping=False, compress=asks, max_msg_size=MAX_MESSAGE)
        try:
            pinned = await pinned_post(app, profile)
        except Unavailable as exc:  # upgraded all the same: a browser sees a close code, never an HTTP status
            await ws.prepare(request)
            await _try_again_later(ws, hub, str(exc))
            return ws
        parkable = may_park(request)
        await ws.prepare(request)
        transport = request.transport
        if transport is None:
            return ws
        client = Client(transport, chats, fmt)
        held = park(request, ws, client, hub, address) if parkable else None
        if held is None:
            app[SOCKETS].add(ws)
        try:
            if not await hub.deliver(client, wire([hello(app[SETTINGS], hub.cursor, profile, pinned)], fmt)):
                return ws
            joined = True
            if since is not None:
                try:
                    joined = await catch_up(hub, client, app[REDIS], app[KEYS], app[STREAMS][profile], since)
                except Unavailable as exc:
                    await _try_again_later(held or ws, hub, str(exc))
                    return ws
            if joined and not transport.is_closing():
                hub.add(client)  # no await since catch_up saw hub.cursor: no gap, no repeat
            # (not joined: gone, or cut off with 4008: the client's answer to the close frame is still read)
            if held is None:
                await _read_until_closed(ws, client, fmt)
        except BaseException:
            if held is not None:
                client.closed = True
                transport.abort()  # (aiohttp no longer would: the socket is ours)
            raise
        finally:
            if held is None:
                hub.remove(client)
                app[SOCKETS].discard(ws)
        return ws
    finally:
        if held is None:
            release(request.app, address)


async def _read_until_closed(ws: web.WebSocketResponse, client: Client, fmt: str) -> None:
    """The unparked path: read the client's frames until it closes; any frame marks it answered (the heartbeat),
    a ping gets a pong, a ``{"type":"ping"}`` text a ``pong`` message."""
    while True:  # not ``async for``: its __anext__ coroutine would be one more object per idle client
        msg = await ws.receive()
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            break
        client.answered = True
        if msg.type == WSMsgType.PING:
            await ws.pong(msg.data)
        elif msg.type == WSMsgType.TEXT and is_ping(msg.data):
            await _send(ws, {"type": "pong"}, fmt)


async def _try_again_later(ws: web.WebSocketResponse | Parked, hub: Hub, why: str) -> None:
    hub.counters["redis_unavailable"] += 1
    log.info("ws: redis unreachable for a new client (%s); closing it with 1013", why)
    if isinstance(ws, Parked):  # (its answer closes the socket: nothing to wait for here)
        ws.send_close(WSCloseCode.TRY_AGAIN_LATER, TRY_AGAIN_LATER)
    else:
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=TRY_AGAIN_LATER.encode())


async def events_handler(request: web.Request) -> web.StreamResponse:
    """``GET /events``: Server-Sent Events, one post per event, ``id`` = its feed id; ``Last-Event-ID`` (or
    ``since``) resumes the gap from history. Same filters and profiles as ``/ws``, ``format`` json only (400
    otherwise); a comment every 15 s. 503 with ``Retry-After`` when Redis stays unreachable for ``REDIS_PATIENCE``
    seconds before the stream starts."""
    app = request.app
    profile = parse_profile(request)
    hub = app[HUBS][profile]
    chats = parse_chats(request.query.get("chats"))
    if last_event_id := request.headers.get("Last-Event-ID"):
        since = parse_since(last_event_id, "Last-Event-ID")
    else:
        since = parse_since(request.query.get("since"))
    if (request.query.get("format") or "json") != "json":  # the query /ws takes, but SSE carries text: no msgpack
        raise web.HTTPBadRequest(text="format on /events is json (Server-Sent Events are text); msgpack is for /ws")
    address = admit(request)
    try:
        try:
            pinned = await pinned_post(app, profile)
        except Unavailable as exc:
            hub.counters["redis_unavailable"] += 1
            log.info("events: redis unreachable for a new client (%s); answering 503", exc)
            raise web.HTTPServiceUnavailable(
                text="redis is unreachable; try again later", headers={"Retry-After": str(RETRY_AFTER)}
            ) from None
        return await _serve_events(request, profile, hub, chats, since, pinned)
    finally:
        release(request.app, address)


async def _serve_events(
    request: web.Request, profile: str, hub: Hub, chats: frozenset[str] | None, since: str | None, pinned: Any
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
    ended = app[STREAMING][transport] = asyncio.Event()  # set on shutdown, and when the client hangs up
    unwatch = watch_hangup(transport, ended)  # so a gone client's slot (max_per_ip) is free at once
    try:
        # Without since, the hello's cursor is where this stream starts: its id, so that EventSource coming back
        # before any post resumes from there and misses none published meanwhile.
        greeting = hello(app[SETTINGS], hub.cursor, profile, pinned)
        if not await hub.deliver(client, sse_chunk(greeting, hub.cursor if since is None else None)):
            return response
        if since is not None:
            try:
                caught_up = await catch_up(hub, client, app[REDIS], app[KEYS], app[STREAMS][profile], since)
            except Unavailable as exc:  # the stream ends: EventSource comes back with Last-Event-ID
                hub.counters["redis_unavailable"] += 1
                log.info("events: redis unreachable during a catch-up (%s); ending the stream", exc)
                hub.write_to(client, chunk(f"retry: {RETRY_AFTER * 1000}\n\n".encode()))
                return response
            if not caught_up:  # gone, or cut off
                return response
        hub.add(client)  # no await since catch_up saw hub.cursor: no gap, no repeat
        while not (client.closed or transport.is_closing()):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), SSE_KEEPALIVE)
            if ended.is_set():
                break
            if transport.get_write_buffer_size() <= hub.backlog_bytes:  # (a full one: the backlog rule decides)
                hub.write_to(client, chunk(b":\n\n"))
    finally:
        unwatch()
        hub.remove(client)
        app[STREAMING].pop(transport, None)
        if transport.is_closing() and not client.closed:  # it went away: the usual end of a stream, not an error
            hub.counters["sse_left"] += 1
            log.debug("events: a client at %s left", request.remote)
    return response
