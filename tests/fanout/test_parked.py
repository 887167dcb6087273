"""Parked websockets (``mixer.fanout.parked``): once upgraded, a /ws client's socket is read by our own small protocol
and aiohttp lets go of the connection. What the handler's receive loop did still happens (pongs, ``pong`` messages,
the heartbeat's proof of life, the close handshake, the shutdown's 1001, the connection count), and frames a client
must not send close the socket with the RFC 6455 code. Real app, real sockets, real Redis; raw sockets where a frame
has to be exactly wrong."""

from __future__ import annotations

import asyncio
import gc
import socket
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import msgpack
import pytest
import redis.asyncio as aioredis
from aiohttp import WSMsgType, web
from aiohttp.web_protocol import RequestHandler

from mixer.fanout import clients, live, parked
from mixer.fanout.appkeys import CONNECTIONS, HUB, SOCKETS
from mixer.fanout.catchup import Unavailable
from mixer.fanout.clients import CLOSE_SLOW, CLOSE_SLOW_REASON
from mixer.fanout.parked import Parked
from mixer.keys import Keys
from mixer.runner import build_app
from tests.helpers import client_frame, eventually, make_post
from tests.servers import Running, add_to_feed, receive_posts, running_app, settings_for

UPGRADE = (
    "GET /ws{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
)
DEFLATE = "Sec-WebSocket-Extensions: permessage-deflate\r\n"
MASK = b"\x11\x22\x33\x44"


def _port(srv: Running) -> int:
    return int(srv.url.rsplit(":", 1)[1])


def frame(first: int, payload: bytes, masked: bool = True) -> bytes:
    """A client frame: ``first`` is the first byte (FIN, RSV, opcode); masked with ``MASK`` unless told not to."""
    return client_frame(first, payload, MASK, 0x80 if masked else 0)


class Raw:
    """A websocket client on a plain socket: sends the bytes it is given, reads the server's frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def next(self) -> tuple[int, bytes]:
        """The next server frame: (its first byte, its payload)."""
        first, second = await asyncio.wait_for(self.reader.readexactly(2), 5)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first, await self.reader.readexactly(size)

    async def next_of(self, opcode: int, skip_text: bool = True) -> bytes:
        """The payload of the next frame with ``opcode``, skipping server pings and (unless told) data frames."""
        while True:
            first, payload = await self.next()
            if first & 0x0F == opcode:
                return payload
            assert first & 0x0F in (0x1, 0x2, 0x9) and (skip_text or first & 0x0F == 0x9), (first, payload)

    async def close_code(self) -> int:
        """The code of the server's close frame (read past anything before it); then the socket must end."""
        payload = await self.next_of(0x8)
        assert await asyncio.wait_for(self.reader.read(), 5) == b"", "the socket stayed open after the close"
        return int(struct.unpack("!H", payload[:2])[0])


@asynccontextmanager
async def raw_client(srv: Running, query: str = "", extra: str = "", rcvbuf: int = 0) -> AsyncIterator[Raw]:
    sock = socket.socket()
    if rcvbuf:  # (a small one: the server's side of a client that does not read fills up soon)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", _port(srv)))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(UPGRADE.format(query=query, extra=extra).encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b" 101 " in head.split(b"\r\n")[0], head
    raw = Raw(reader, writer)
    _, hello = await raw.next()
    assert b"hello" in hello, hello  # (json or msgpack)
    try:
        yield raw
    finally:
        writer.close()


async def _parked_count(srv: Running, count: int) -> None:
    """Wait until ``count`` sockets are parked (the handlers have returned: aiohttp holds none of them)."""
    await eventually(lambda: sum(isinstance(s, Parked) for s in srv.app[SOCKETS]) == count)
    await eventually(lambda: not srv.runner.server.connections)  # type: ignore[union-attr]


async def test_a_joined_websocket_is_parked_and_aiohttp_holds_nothing_of_it(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(srv.ws_url) as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "hello"
            await _parked_count(srv, 1)
            [client] = srv.app[HUB].clients()
            assert isinstance(client.transport.get_protocol(), Parked)
            assert client.fd >= 0  # the ring still sends big frames by sendfile
            assert not [t for t in asyncio.all_tasks() if "ws_handler" in repr(t.get_coro())]
            gc.collect()
            kept = [o for o in gc.get_objects() if isinstance(o, (RequestHandler, web.WebSocketResponse))]
            assert kept == []
            ids = await add_to_feed(redis, keys, make_post("after-parking"))  # the hub still writes to it
            assert [i["id"] for i in await receive_posts(ws, 1)] == ids
            await ws.send_str('{"type":"ping"}')
            while (got := await ws.receive_json(timeout=5))["type"] != "pong":
                assert got["type"] == "stats"
        await eventually(lambda: not srv.app[CONNECTIONS] and not srv.app[SOCKETS] and not len(srv.app[HUB]))


@pytest.mark.parametrize("parking", [True, False], ids=["parked", "aiohttp"])
async def test_a_client_close_is_answered_and_its_connection_no_longer_counts(
    keys: Keys, redis_url: str, monkeypatch: pytest.MonkeyPatch, parking: bool
) -> None:
    monkeypatch.setattr(parked, "PARKING", parking)
    async with running_app(settings_for(keys.prefix, max_per_ip=1), redis_url) as srv, aiohttp.ClientSession() as http:
        for _ in range(3):  # one at a time from this address: each close makes room for the next
            async with raw_client(srv) as raw:
                await eventually(lambda: len(srv.app[HUB]) == 1)
                assert isinstance(next(iter(srv.app[SOCKETS])), Parked) is parking
                raw.writer.write(frame(0x89, b"hi"))  # a ping, then a text ping: both answered
                assert await raw.next_of(0xA) == b"hi"
                raw.writer.write(frame(0x81, b'{"type":"ping"}'))
                assert await raw.next_of(0x1, skip_text=False) in (b'{"type":"pong"}', b'{"type": "pong"}')
                raw.writer.write(frame(0x88, struct.pack("!H", 4321) + b"bye"))
                assert await raw.close_code() in (4321, 1000)  # parked: echoed; aiohttp's path answers 1000
            await eventually(lambda: not srv.app[CONNECTIONS] and not len(srv.app[HUB]) and not srv.app[SOCKETS])
        async with http.ws_connect(srv.ws_url) as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "hello"


async def test_a_frame_sent_with_the_upgrade_request_keeps_the_socket_on_aiohttps_path(
    keys: Keys, redis_url: str
) -> None:
    """Bytes after the request, before the 101 (RFC 6455 forbids them, but they may come): aiohttp's reader has them,
    so the socket is not parked, and is served all the same."""
    async with running_app(settings_for(keys.prefix), redis_url) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(srv))
        try:
            writer.write(UPGRADE.format(query="", extra="").encode() + frame(0x89, b"early"))
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            raw = Raw(reader, writer)
            assert await raw.next_of(0xA) == b"early"
            [socket_] = srv.app[SOCKETS]
            assert isinstance(socket_, web.WebSocketResponse)
            raw.writer.write(frame(0x88, struct.pack("!H", 1000)))
            assert await raw.close_code() == 1000
        finally:
            writer.close()
        await eventually(lambda: not srv.app[CONNECTIONS] and not srv.app[SOCKETS] and not len(srv.app[HUB]))


async def test_a_text_ping_is_answered_in_the_clients_format(keys: Keys, redis_url: str) -> None:
    async with running_app(settings_for(keys.prefix), redis_url) as srv:
        async with raw_client(srv, "?format=msgpack") as raw:
            await _parked_count(srv, 1)
            raw.writer.write(frame(0x81, b"[" * 60000))  # JSON nested too deeply to read: not a ping, no harm
            raw.writer.write(frame(0x81, b'{"type":"ping"}'))
            assert msgpack.unpackb(await raw.next_of(0x2)) == {"type": "pong"}


async def test_fragments_with_a_ping_between_them_make_one_message(keys: Keys, redis_url: str) -> None:
    async with running_app(settings_for(keys.prefix), redis_url) as srv:
        async with raw_client(srv) as raw:
            await _parked_count(srv, 1)
            # the message in three frames, one byte at a time on the wire, a ping in the middle (RFC 6455 5.4)
            data = frame(0x01, b'{"type"') + frame(0x89, b"mid") + frame(0x00, b':"pi') + frame(0x80, b'ng"}')
            for n in range(len(data)):
                raw.writer.write(data[n : n + 1])
                await raw.writer.drain()
            assert await raw.next_of(0xA) == b"mid"
            assert b"pong" in await raw.next_of(0x1, skip_text=False)
            # many empty fragments are one message too (held in one buffer, not a list that grows)
            raw.writer.write(frame(0x01, b'{"type":"ping"}') + frame(0x00, b"") * 20000 + frame(0x80, b""))
            assert b"pong" in await raw.next_of(0x1, skip_text=False)


async def test_compressed_messages_are_inflated_with_the_context_carried_over(keys: Keys, redis_url: str) -> None:
    async with running_app(settings_for(keys.prefix), redis_url) as srv:
        async with raw_client(srv, extra=DEFLATE) as raw:
            await _parked_count(srv, 1)
            deflater = zlib.compressobj(wbits=-zlib.MAX_WBITS)
            for _ in range(3):  # the 2nd and 3rd refer back to the first (context takeover)
                body = deflater.compress(b'{"type":"ping"}') + deflater.flush(zlib.Z_SYNC_FLUSH)
                raw.writer.write(frame(0xC1, body[:-4]))  # FIN, RSV1, text; the 00 00 ff ff tail stripped
                assert b"pong" in await raw.next_of(0x1, skip_text=False)
            bomb = zlib.compressobj(wbits=-zlib.MAX_WBITS)
            body = bomb.compress(b" " * (1 << 20)) + bomb.flush(zlib.Z_SYNC_FLUSH)  # 1 MiB from ~1 KB
            raw.writer.write(frame(0xC2, body[:-4]))
            assert await raw.close_code() == 1009


async def _pong(raw: Raw) -> None:
    """Read up to a ``pong`` message, past the ``stats`` messages that may come first."""
    while b'"stats"' in (got := await raw.next_of(0x1, skip_text=False)):
        pass
    assert b"pong" in got, got


async def test_messages_ending_their_deflate_stream_with_a_final_block_are_all_inflated(
    keys: Keys, redis_url: str
) -> None:
    """RFC 7692 7.2.3.4: a sender may end each message with a BFINAL block; the next message is a new deflate
    stream. (Parked's inflater once stopped at the first stream's end: later messages inflated to nothing.)"""
    async with running_app(settings_for(keys.prefix), redis_url) as srv:
        async with raw_client(srv, extra=DEFLATE) as raw:
            await _parked_count(srv, 1)
            for _ in range(3):
                deflater = zlib.compressobj(wbits=-zlib.MAX_WBITS)
                body = deflater.compress(b'{"type":"ping"}') + deflater.flush(zlib.Z_FINISH) + b"\x00"
                raw.writer.write(frame(0xC1, body))
                await _pong(raw)
            deflater = zlib.compressobj(wbits=-zlib.MAX_WBITS)  # and then a sync-flushed one
            body = deflater.compress(b'{"type":"ping"}') + deflater.flush(zlib.Z_SYNC_FLUSH)
            raw.writer.write(frame(0xC1, body[:-4]))
            await _pong(raw)
            many = b"".join(zlib.compress(b"x", wbits=-zlib.MAX_WBITS) for _ in range(parked.MAX_STREAMS + 1))
            raw.writer.write(frame(0xC2, many))  # a message of many tiny streams costs an inflater each: refused
            assert await raw.close_code() == 1009


async def test_an_aiohttp_client_with_deflate_is_parked_and_answered(keys: Keys, redis_url: str) -> None:
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(srv.ws_url, compress=15, autoping=False) as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "hello"
            await _parked_count(srv, 1)
            for text in ('{"type":"ping"}', '{"type":"ping","n":"' + "x" * 500 + '"}'):
                await ws.send_str(text)
                while (got := await ws.receive_json(timeout=5))["type"] != "pong":
                    assert got["type"] == "stats"
            await ws.ping(b"p")
            assert (await ws.receive(timeout=5)).type == WSMsgType.PONG


@pytest.mark.parametrize("parking", [True, False], ids=["parked", "aiohttp"])
async def test_a_catch_up_that_loses_redis_is_closed_with_1013_and_no_longer_counts(
    keys: Keys, redis_url: str, monkeypatch: pytest.MonkeyPatch, parking: bool
) -> None:
    async def unavailable(*args: object) -> bool:
        raise Unavailable("redis went away")

    monkeypatch.setattr(parked, "PARKING", parking)
    monkeypatch.setattr(live, "catch_up", unavailable)
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(srv.ws_url + "?since=0-0") as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "hello"
            msg = await ws.receive(timeout=5)
            assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 1013, live.TRY_AGAIN_LATER)
        await eventually(lambda: not srv.app[CONNECTIONS] and not srv.app[SOCKETS] and not len(srv.app[HUB]))
        assert srv.app[HUB].counters["redis_unavailable"] == 1


async def test_a_cut_off_clients_answer_to_4008_closes_the_socket_at_once(
    redis: aioredis.Redis, keys: Keys, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clients, "CLOSE_GRACE", 60.0)  # so only its answer can close the socket within the test
    settings = settings_for(keys.prefix, backlog_bytes=64 * 1024, cutoff_seconds=0.3)
    async with running_app(settings, redis_url) as srv:
        hub = srv.app[HUB]
        async with raw_client(srv, rcvbuf=4096) as raw:
            await _parked_count(srv, 1)
            for n in range(1000):  # it does not read: the live feed fills its backlog until the hub cuts it off
                if hub.counters["cut_off"]:
                    break
                await add_to_feed(redis, keys, *(make_post(f"p{n}-{i}", text="x" * 3000) for i in range(20)))
            assert hub.counters["cut_off"] == 1
            payload = await raw.next_of(0x8)  # it reads on, to the close frame behind its backlog
            assert payload == struct.pack("!H", CLOSE_SLOW) + CLOSE_SLOW_REASON.encode()
            raw.writer.write(frame(0x88, payload[:2]))  # and answers it
            assert await asyncio.wait_for(raw.reader.read(), 5) == b""
        await eventually(lambda: not srv.app[CONNECTIONS] and not srv.app[SOCKETS])


BAD = {
    "unmasked": (frame(0x81, b"hi", masked=False), 1002),
    "too big": (frame(0x82, b"x" * ((1 << 16) + 1)), 1009),
    "too big in fragments": (frame(0x02, b"x" * 40000) + frame(0x80, b"x" * 40000), 1009),
    "not utf-8": (frame(0x81, b"\xff\xfe"), 1007),
    "reserved opcode": (frame(0x83, b""), 1002),
    "reserved opcode, over 64 KiB": (frame(0x83, b"x" * ((1 << 16) + 1)), 1002),  # the opcode, not the size
    "reserved bit": (frame(0xA1, b"hi"), 1002),
    "rsv1 without deflate": (frame(0xC1, b"hi"), 1002),
    "continuation first": (frame(0x80, b"hi"), 1002),
    "a new message mid-message": (frame(0x01, b"a") + frame(0x81, b"b"), 1002),
    "fragmented ping": (frame(0x09, b"p"), 1002),
    "long ping": (frame(0x89, b"p" * 126), 1002),
    "bad close code": (frame(0x88, struct.pack("!H", 1005)), 1002),
    "close reason not utf-8": (frame(0x88, struct.pack("!H", 1000) + b"\xff"), 1007),
}


@pytest.mark.parametrize("name", list(BAD))
async def test_a_frame_a_client_must_not_send_closes_it_with_the_rfc_code(
    keys: Keys, redis_url: str, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    data, code = BAD[name]
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        async with raw_client(srv) as raw:
            await _parked_count(srv, 1)
            raw.writer.write(data)
            assert await raw.close_code() == code
        await eventually(lambda: not srv.app[CONNECTIONS] and not len(srv.app[HUB]) and not srv.app[SOCKETS])
        async with http.ws_connect(srv.ws_url) as ws:  # and the server serves on
            assert (await ws.receive_json(timeout=5))["type"] == "hello"
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


async def test_a_client_flooding_pings_without_reading_holds_about_backlog_bytes(keys: Keys, redis_url: str) -> None:
    backlog = 64 * 1024
    async with running_app(settings_for(keys.prefix, backlog_bytes=backlog), redis_url) as srv:
        async with raw_client(srv, rcvbuf=4096) as raw:
            await _parked_count(srv, 1)
            [client] = srv.app[HUB].clients()
            ping = frame(0x89, b"p" * 125)
            for _ in range(400):  # 400 x 200 pings: ~10 MB of pongs asked for, far over the kernel's buffers
                raw.writer.write(ping * 200)
                await raw.writer.drain()
            raw.writer.write(frame(0x88, struct.pack("!H", 1000)))  # read after every ping: then all were handled
            await eventually(lambda: client.closed, timeout=20)
            held = client.transport.get_write_buffer_size()
            # pongs stopped at the limit (one over it at most), then the answer to the close
            assert backlog <= held <= backlog + 127 + 4, held


async def test_shutdown_closes_parked_sockets_with_1001_and_drops_a_silent_one(
    keys: Keys, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parked, "CLOSE_GRACE", 0.3)
    runner = web.AppRunner(build_app(settings_for(keys.prefix), redis_url), shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    srv = Running(runner.app, runner, f"http://127.0.0.1:{runner.addresses[0][1]}")
    stopped = False
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(srv.ws_url) as ws, raw_client(srv) as silent:
            assert (await ws.receive_json(timeout=5))["type"] == "hello"
            await _parked_count(srv, 2)
            began = asyncio.get_running_loop().time()
            stopping = asyncio.create_task(runner.cleanup())
            while (msg := await ws.receive(timeout=5)).type in (WSMsgType.TEXT, WSMsgType.PING):
                pass
            assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 1001, "server shutdown")
            first, payload = await silent.next()  # (the silent one never answers: dropped after the grace)
            assert first == 0x88 and payload == struct.pack("!H", 1001) + b"server shutdown"
            assert await asyncio.wait_for(silent.reader.read(), 5) == b""
            await stopping
            stopped = True
            assert asyncio.get_running_loop().time() - began < 3
    finally:
        if not stopped:
            await runner.cleanup()
