"""Clients that read slowly, never read, or leave, and clients that come while Redis is away: every path that writes
to a client (the hello, the ``since`` catch-up, live frames, keep-alives; /ws and /events) holds at most about
``backlog_bytes`` for it, cuts it off after ``cutoff_seconds``, tells a websocket why (4008), and never logs a client
leaving as an error. Real app, real sockets, real Redis (behind a proxy that can be shut for the outage)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import WSMsgType

from mixer.codec import FIELD, pack_post
from mixer.fanout import catchup, live
from mixer.fanout.appkeys import HUB, HUBS, STREAMING
from mixer.fanout.clients import CLOSE_SLOW, CLOSE_SLOW_REASON, Client
from mixer.fanout.hub import Hub
from mixer.keys import Keys
from tests.helpers import eventually, make_post
from tests.servers import Running, add_to_feed, next_event, on_uvloop, running_app, settings_for

BACKLOG = 256 * 1024
BIG = "x" * 3000  # a large post: ~3 KB on the wire


async def _fill_feed(redis: aioredis.Redis, keys: Keys, count: int) -> None:
    """``count`` large posts in the feed, in pipelined batches (a few thousand in well under a second)."""
    for start in range(0, count, 500):
        async with redis.pipeline(transaction=False) as pipe:
            for n in range(start, min(count, start + 500)):
                pipe.xadd(keys.feed, {FIELD: pack_post(make_post(f"h{n}", text=BIG))})
            await pipe.execute()


async def _never_reading(port: int, request: bytes) -> socket.socket:
    """A client that sends ``request`` and then never reads a byte (a small receive buffer, so the server's
    side fills up soon)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, request)
    return sock


def _port(srv: Running) -> int:
    return int(srv.url.rsplit(":", 1)[1])


def _buffered(srv: Running) -> int:
    """Bytes the server holds unsent for its clients: every connection's transport write buffer."""
    server = srv.runner.server
    assert server is not None
    return sum(h.transport.get_write_buffer_size() for h in server.connections if h.transport is not None)


async def _most_buffered_until_cut_off(srv: Running, hub: Hub) -> int:
    """Watch the server's buffered bytes until the hub has cut a client off; the most seen."""
    most = 0

    def cut_off() -> bool:
        nonlocal most
        most = max(most, _buffered(srv))
        return hub.counters["cut_off"] >= 1

    await eventually(cut_off, timeout=20)
    return most


SSE_REQUEST = b"GET /events?since=0-0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
WS_REQUEST = (
    b"GET /ws?since=0-0 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.mark.parametrize("request_bytes", [SSE_REQUEST, WS_REQUEST], ids=["events", "ws"])
async def test_a_never_reading_client_catching_up_holds_about_backlog_bytes_and_is_cut_off(
    redis: aioredis.Redis, keys: Keys, redis_url: str, request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    await _fill_feed(redis, keys, 3000)  # ~9 MB of history: far beyond the kernel's buffers and the backlog limit
    settings = settings_for(keys.prefix, backlog_bytes=BACKLOG, cutoff_seconds=0.5)
    async with running_app(settings, redis_url) as srv:
        hub = srv.app[HUB]
        sock = await _never_reading(_port(srv), request_bytes)
        try:
            most = await _most_buffered_until_cut_off(srv, hub)
            # one frame of catch-up (a page: 100 posts, ~330 KB here) may go over the limit, no more
            assert most <= BACKLOG + 400 * 1024, most
            assert len(hub) == 0  # it never joined the live hub
            await eventually(lambda: _buffered(srv) == 0, timeout=10)  # and what it held is let go
        finally:
            sock.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_slow_websocket_client_is_told_4008_with_the_reason_before_the_socket_goes(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    settings = settings_for(keys.prefix, backlog_bytes=64 * 1024, cutoff_seconds=0.3)
    async with running_app(settings, redis_url) as srv, aiohttp.ClientSession() as http:
        hub = srv.app[HUB]
        async with http.ws_connect(srv.ws_url) as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "hello"
            # it stops reading (busy): the live feed fills its backlog until the hub cuts it off
            for n in range(1000):
                if hub.counters["cut_off"]:
                    break
                await add_to_feed(redis, keys, *(make_post(f"p{n}-{i}", text=BIG) for i in range(20)))
            assert hub.counters["cut_off"] == 1
            # ... then it reads on, and learns why it was closed
            while (msg := await ws.receive(timeout=10)).type in (WSMsgType.TEXT, WSMsgType.BINARY):
                pass
            assert msg.type == WSMsgType.CLOSE, msg
            assert (msg.data, msg.extra) == (CLOSE_SLOW, CLOSE_SLOW_REASON)


async def test_a_slow_reader_still_taking_bytes_is_not_dropped_by_the_heartbeat_but_a_silent_one_is() -> None:
    """The ping of a slow reader waits behind its backlog: the backlog rule (lag, 4008) governs it, not the
    heartbeat, which drops a client that did not answer unless bytes are still queued for it and it took some."""
    hub = Hub()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # (inherited: a small window, bytes queue)
        port = listener.getsockname()[1]
        pairs = []
        for _ in range(2):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            peer, _ = listener.accept()
            peer.setblocking(False)
            pairs.append((writer, peer))
        try:
            (slow_writer, slow), (silent_writer, _) = pairs
            hub.add(Client(slow_writer.transport))  # type: ignore[arg-type]
            hub.add(Client(silent_writer.transport, chats=frozenset({"edchat"})))  # type: ignore[arg-type]
            hub.heartbeat()  # both pinged
            posts = [("p", {"key": f"k{n}", "id": f"{n + 1}-0", "chats": ["smbiz"], "text": BIG}) for n in range(100)]
            hub.broadcast(posts, "100-0")  # ~300 KB for the slow one, nothing for the silent one
            for _ in range(3):
                await eventually(lambda: _unread(slow) > 0)
                slow.recv(16 * 1024)  # it reads some, and never a pong: its ping is somewhere in there
                await eventually(lambda: _unread(slow) > 0)  # (more left this host for it)
                hub.heartbeat()
            assert hub.counters["heartbeat_waited"] == 3
            assert hub.counters["heartbeat_dropped"] == 1 and len(hub) == 1  # the silent one, at once
            hub.heartbeat()  # the slow one took nothing more since: now it goes too
            assert hub.counters["heartbeat_dropped"] == 2
        finally:
            for writer, peer in pairs:
                writer.close()
                peer.close()


def _unread(sock: socket.socket) -> int:
    try:
        return len(sock.recv(1 << 20, socket.MSG_PEEK))
    except BlockingIOError:
        return 0


def test_the_wall_hubs_per_chat_rates_stay_within_the_last_minute() -> None:
    now = [0.0]
    hub = Hub(clock=lambda: now[0])
    for n in range(5000):  # a post a second all night long: a minute's worth is kept, not the night
        now[0] = float(n)
        hub.publish([("p", {"key": f"k{n}", "chats": ["smbiz"]})], f"{n + 1}-0")
    assert len(hub.rates) <= 61
    assert hub.rates.totals["smbiz"] == 5000


async def test_sse_clients_leaving_are_counted_and_never_logged_as_errors(
    keys: Keys, redis_url: str, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(live, "SSE_KEEPALIVE", 0.05)  # the comment written after it left comes at once
    await _fill_feed(redis, keys, 1000)
    with on_uvloop(settings_for(keys.prefix), redis_url) as srv:
        async with aiohttp.ClientSession() as http:
            async with http.get(srv.url + "/events") as resp:  # a live client, leaving
                assert (await next_event(resp))[1] == "hello"
            async with http.get(srv.url + "/events?since=0-0") as resp:  # one leaving mid-catch-up
                assert (await next_event(resp))[1] == "hello"
                await next_event(resp)
        hub = srv.app[HUB]
        await eventually(lambda: hub.counters["sse_left"] == 2 and not srv.app[STREAMING], timeout=10)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [(r.name, r.getMessage()) for r in errors]


class _Gate:
    """A TCP proxy in front of Redis that can be shut (connections cut, new ones refused) and opened again."""

    def __init__(self, redis_url: str) -> None:
        parts = urlsplit(redis_url)
        if parts.scheme != "redis" or parts.hostname is None:
            pytest.skip("the outage test needs a Redis on TCP")
        self.upstream = (parts.hostname, parts.port or 6379)
        self.path = parts.path
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}{self.path}"

    async def open(self) -> None:
        self.server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]

    async def shut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        await self.server.wait_closed()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self.writers |= {writer, up_writer}

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(1 << 16):
                    dst.write(data)
            dst.transport.abort()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        self.writers -= {writer, up_writer}


@contextlib.asynccontextmanager
async def _gate(redis_url: str) -> AsyncIterator[_Gate]:
    gate = _Gate(redis_url)
    await gate.open()
    try:
        yield gate
    finally:
        if gate.server is not None and gate.server.is_serving():
            await gate.shut()


async def test_during_a_redis_outage_new_clients_are_told_to_retry_and_once_it_is_back_they_get_in(
    keys: Keys, redis_url: str, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catchup, "REDIS_PATIENCE", 0.5)
    async with _gate(redis_url) as gate, running_app(settings_for(keys.prefix), gate.url) as srv:
        hub = srv.app[HUBS]["full"]
        await gate.shut()
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(srv.ws_url) as ws:
                msg = await ws.receive(timeout=10)
                assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1013), msg  # "try again later"
            async with http.get(srv.url + "/events") as resp:
                assert resp.status == 503 and resp.headers["Retry-After"] == str(live.RETRY_AFTER)
            assert hub.counters["redis_unavailable"] == 2
            monkeypatch.setattr(catchup, "REDIS_PATIENCE", 20.0)
            connecting = asyncio.create_task(http.ws_connect(srv.ws_url))  # waits for Redis...
            await gate.open()  # ... which comes back
            async with await connecting as ws:
                assert (await ws.receive_json(timeout=20))["type"] == "hello"
