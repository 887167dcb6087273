"""Properties of the parked websocket's frame reader (``mixer.fanout.parked``), under hypothesis: any valid stream of
client frames, cut anywhere, gets exactly its answers in order and leaves the socket open; a valid prefix then one bad
frame gets the prefix's answers, then a close frame with the RFC 6455 code, then the end of the socket. A real
``Parked`` on a real socket pair with a real hub; the streams are also checked against aiohttp's own reader."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import struct
import zlib
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import msgpack
from aiohttp import WSMsgType, web
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
from aiohttp.base_protocol import BaseProtocol
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixer.fanout.appkeys import CONNECTIONS, SOCKETS
from mixer.fanout.clients import Client
from mixer.fanout.hub import Hub
from mixer.fanout.parked import MAX_MESSAGE, SENDABLE, Parked
from tests.helpers import client_frame

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
PEER = "10.0.0.1"  # the address the socket is counted under
TEXT_PINGS = [b'{"type":"ping"}', b'{"type": "ping", "n": 1}', b' {"type":"ping","x":[1,2]} ']
SETTINGS = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def asks_pong(body: bytes) -> bool:
    """The test's own reading of which text messages are ``{"type":"ping"}``."""
    try:
        value = json.loads(body)
    except ValueError:
        return False
    return isinstance(value, dict) and value.get("type") == "ping"


@dataclass
class Stream:
    """Client bytes and what they must bring: the server's answers (opcode, payload) and the messages in them."""

    deflate: bool
    fmt: str
    data: bytearray = field(default_factory=bytearray)
    answers: list[tuple[int, bytes]] = field(default_factory=list)
    messages: list[tuple[int, bytes]] = field(default_factory=list)  # as aiohttp's reader should yield them
    code: int = 0  # the close code the bad frame must bring (0: the stream is valid)
    closes_at: int = -1  # where the client's close frame begins (-1: it sends none); what follows is never read
    deflater: Any = field(default_factory=lambda: zlib.compressobj(wbits=-zlib.MAX_WBITS))

    def pong(self) -> tuple[int, bytes]:
        return (BINARY, msgpack.packb({"type": "pong"})) if self.fmt == "msgpack" else (TEXT, b'{"type":"pong"}')

    def compress(self, body: bytes, final: bool = False) -> bytes:
        """``body`` as a permessage-deflate sender puts it in its frames: the shared context, the tail stripped;
        or (``final``) its own stream ended by a final block (RFC 7692 7.2.3.4), the next message starting anew."""
        if final:
            self.deflater = zlib.compressobj(wbits=-zlib.MAX_WBITS)
            return bytes(zlib.compress(body, wbits=-zlib.MAX_WBITS) + b"\x00")
        out: bytes = self.deflater.compress(body) + self.deflater.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(b"\x00\x00\xff\xff")
        return out[:-4]


masks = st.binary(min_size=4, max_size=4)


def control(draw: st.DrawFn, stream: Stream) -> None:
    """A ping (answered with its payload) or a pong (answered with nothing)."""
    opcode = draw(st.sampled_from([PING, PONG]))
    payload = draw(st.binary(max_size=125))
    stream.data += client_frame(0x80 | opcode, payload, draw(masks))
    stream.messages.append((opcode, payload))
    if opcode == PING:
        stream.answers.append((PONG, payload))


def message(draw: st.DrawFn, stream: Stream, opcode: int, body: bytes, pieces: int | None = None) -> None:
    """A data message in one or more frames (control frames between them), compressed or not when deflate is on."""
    compressed = stream.deflate and draw(st.booleans())
    sent = stream.compress(body, final=draw(st.integers(0, 3)) == 0) if compressed else body
    if pieces is None:
        pieces = draw(st.integers(1, 4))
    cuts = sorted(draw(st.lists(st.integers(0, len(sent)), min_size=pieces - 1, max_size=pieces - 1)))
    bounds = [0, *cuts, len(sent)]
    for n in range(pieces):
        first = (opcode if n == 0 else CONT) | (0x40 if compressed and n == 0 else 0) | (0x80 if n == pieces - 1 else 0)
        stream.data += client_frame(first, sent[bounds[n] : bounds[n + 1]], draw(masks))
        if n < pieces - 1 and draw(st.integers(0, 3)) == 0:
            control(draw, stream)


def valid(draw: st.DrawFn, stream: Stream, most: int = 10) -> None:
    """Valid client messages: pings, pongs, text (some of them ``{"type":"ping"}``), binary."""
    for _ in range(draw(st.integers(0, most))):
        kind = draw(st.sampled_from(["control", "text", "text ping", "binary", "binary"]))
        if kind == "control":
            control(draw, stream)
            continue
        if kind == "text":
            body = draw(st.text(max_size=200)).encode()
        elif kind == "text ping":
            body = draw(st.sampled_from(TEXT_PINGS))
        else:
            size = draw(st.one_of(st.integers(0, 300), st.sampled_from([125, 126, 65535, MAX_MESSAGE])))
            body = draw(st.binary(min_size=min(size, 300), max_size=min(size, 300))) * (size // 300 + 1)
            body = body[:size]
        opcode = BINARY if kind == "binary" else TEXT
        message(draw, stream, opcode, body)
        stream.messages.append((opcode, body))
        if opcode == TEXT and asks_pong(body):
            stream.answers.append(stream.pong())


@st.composite
def valid_streams(draw: st.DrawFn) -> Stream:
    stream = Stream(draw(st.booleans()), draw(st.sampled_from(["json", "msgpack"])))
    valid(draw, stream)
    return stream


codes = st.one_of(st.sampled_from(sorted(SENDABLE)), st.integers(3000, 4999))
reasons = st.text(max_size=40).map(str.encode).filter(lambda r: len(r) <= 123)


@st.composite
def closing_streams(draw: st.DrawFn) -> Stream:
    """A valid stream, then the client's close frame (no body, or a code and a reason), then anything."""
    stream = draw(valid_streams())
    body = b"" if draw(st.integers(0, 4)) == 0 else struct.pack("!H", draw(codes)) + draw(reasons)
    stream.closes_at = len(stream.data)
    stream.data += client_frame(0x88, body, draw(masks))
    stream.answers.append((CLOSE, body[:2]))  # (the code echoed, RFC 6455 5.5.1)
    stream.data += draw(st.binary(max_size=40))
    return stream


def bad_frame(draw: st.DrawFn, stream: Stream) -> None:
    """One frame a client must not send (sometimes with the valid frames it needs before it); sets ``code``."""
    mask = draw(masks)
    kind = draw(
        st.sampled_from(
            [
                "unmasked",
                "reserved bit",
                "reserved opcode",
                "long control",
                "fragmented control",
                "continuation first",
                "new message mid-message",
                "not utf-8",
                "too big",
                "too big in fragments",
                "close body of 1 byte",
                "bad close code",
                "close reason not utf-8",
            ]
            + (["rsv1 on control", "rsv1 on continuation", "deflate bomb"] if stream.deflate else [])
        )
    )
    stream.code = 1002
    data = stream.data
    if kind == "unmasked":
        first = draw(st.sampled_from([0x81, 0x82, 0x89, 0x8A, 0x88]))
        data += client_frame(first, draw(st.binary(max_size=20)), mask, mask_bit=0)
    elif kind == "reserved bit":
        bits = draw(st.sampled_from([0x10, 0x20, 0x30] + ([] if stream.deflate else [0x40])))
        data += client_frame(bits | draw(st.sampled_from([0x81, 0x82, 0x89])), b"x", mask)
    elif kind == "reserved opcode":
        data += client_frame(0x80 | draw(st.sampled_from([3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])), b"", mask)
    elif kind == "long control":
        opcode = draw(st.sampled_from([PING, PONG, CLOSE]))
        data += client_frame(0x80 | opcode, struct.pack("!H", 1000) + b"x" * draw(st.integers(124, 300)), mask)
    elif kind == "fragmented control":
        data += client_frame(draw(st.sampled_from([PING, PONG, CLOSE])), b"", mask)
    elif kind == "rsv1 on control":
        data += client_frame(0xC0 | draw(st.sampled_from([PING, PONG])), b"", mask)
    elif kind == "continuation first":
        data += client_frame(draw(st.sampled_from([0x00, 0x80])), b"x", mask)
    elif kind == "new message mid-message":
        data += client_frame(draw(st.sampled_from([TEXT, BINARY])), b"a", mask)
        if draw(st.booleans()):
            control(draw, stream)
        data += client_frame(draw(st.sampled_from([0x81, 0x82, 0x01])), b"b", mask)
    elif kind == "rsv1 on continuation":
        data += client_frame(0x40 | BINARY, stream.compress(b"a"), mask)
        data += client_frame(0xC0, b"", mask)
    elif kind == "not utf-8":
        text = draw(st.text(max_size=50)).encode()
        cut = draw(st.integers(0, len(text)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]))
        message(draw, stream, TEXT, text[:cut] + bad + text[cut:])
        stream.code = 1007
    elif kind == "too big":
        data += client_frame(
            draw(st.sampled_from([0x82, 0x81])), b"x" * draw(st.integers(MAX_MESSAGE + 1, MAX_MESSAGE + 9)), mask
        )
        stream.code = 1009
    elif kind == "too big in fragments":
        head = draw(st.integers(1, MAX_MESSAGE))
        data += client_frame(BINARY, b"x" * head, mask) + client_frame(0x80, b"y" * (MAX_MESSAGE + 1 - head), mask)
        stream.code = 1009
    elif kind == "deflate bomb":
        data += client_frame(0xC0 | BINARY, stream.compress(b" " * (MAX_MESSAGE + draw(st.integers(1, 1000)))), mask)
        stream.code = 1009
    elif kind == "close body of 1 byte":
        data += client_frame(0x88, draw(st.binary(min_size=1, max_size=1)), mask)
    elif kind == "bad close code":
        code = draw(st.sampled_from([0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]))
        data += client_frame(0x88, struct.pack("!H", code), mask)
    else:
        data += client_frame(0x88, struct.pack("!H", 1000) + b"bye\xff", mask)
        stream.code = 1007


@st.composite
def invalid_streams(draw: st.DrawFn) -> Stream:
    stream = Stream(draw(st.booleans()), draw(st.sampled_from(["json", "msgpack"])))
    valid(draw, stream, most=4)
    bad_frame(draw, stream)
    if draw(st.booleans()):  # what comes after the bad frame is dropped: no answer to this ping
        stream.data += client_frame(0x89, b"after", draw(masks))
    return stream


def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at random places (one byte at a time now and then)."""
    if len(data) < 200 and draw(st.integers(0, 9)) == 0:
        return [data[n : n + 1] for n in range(len(data))]
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=12))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if a < b]


class Watched(Parked):
    """A ``Parked`` that lets the test wait until it has been handed a given number of bytes, and for the end."""

    __slots__ = ("gone", "received", "waiting")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.received = 0
        self.waiting: tuple[int, asyncio.Future[None]] | None = None
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        try:
            super().data_received(data)
        finally:  # (an exception out of it is the transport's to report: the test sees it in ``Pair.errors``)
            self.received += len(data)
            if self.waiting is not None and self.received >= self.waiting[0]:
                self.waiting[1].set_result(None)
                self.waiting = None

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self.gone.set_result(None)

    async def handed(self, count: int) -> None:
        if self.received < count:
            self.waiting = (count, asyncio.get_running_loop().create_future())
            await asyncio.wait_for(self.waiting[1], 5)


@dataclass
class Pair:
    parked: Watched
    client: Client
    hub: Hub
    app: web.Application
    peer: socket.socket
    errors: list[dict[str, Any]]  # what reached the loop's exception handler
    logged: list[logging.LogRecord]  # records at ERROR or above

    async def send(self, chunks: list[bytes]) -> None:
        """Each chunk in its own ``data_received`` call: the next is sent once the protocol has had this one."""
        loop, sent = asyncio.get_running_loop(), 0
        for chunk in chunks:
            if self.client.transport.is_closing():  # (after the client's close frame)
                break
            await loop.sock_sendall(self.peer, chunk)
            sent += len(chunk)
            await self.parked.handed(sent)

    def replies(self) -> tuple[list[tuple[int, bytes]], bool]:
        """What the server has written so far, as frames (first byte, payload), and whether it ended its side.
        Everything it wrote is in the peer's buffer already (a socket pair; its transport holds nothing)."""
        assert self.client.transport.get_write_buffer_size() == 0
        data, ended = b"", False
        while True:
            try:
                got = self.peer.recv(1 << 20)
            except BlockingIOError:
                break
            if not got:
                ended = True
                break
            data += got
        frames, pos = [], 0
        while pos < len(data):
            first, size, pos = data[pos], data[pos + 1], pos + 2
            assert not size & 0x80, "a server frame is never masked"
            if size == 126:
                (size,), pos = struct.unpack_from("!H", data, pos), pos + 2
            elif size == 127:
                (size,), pos = struct.unpack_from("!Q", data, pos), pos + 8
            frames.append((first, data[pos : pos + size]))
            pos += size
        assert pos == len(data), "a partial frame"
        return frames, ended


class _Recorder(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@asynccontextmanager
async def parked_pair(deflate: bool, fmt: str) -> AsyncIterator[Pair]:
    """A ``Parked`` protocol on the server end of a socket pair, its client joined to a hub and counted in an app
    as ``park`` leaves them; the test's end is ``Pair.peer``. On leaving: the peer closes, and the socket must
    then go and its count, hub membership and shutdown entry with it."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    logged: list[logging.LogRecord] = []
    handler = _Recorder(logged)
    logging.getLogger().addHandler(handler)
    server_end, peer = socket.socketpair()
    peer.setblocking(False)
    hub = Hub(1 << 20, 10.0)
    app = web.Application()
    app[SOCKETS] = set()
    app[CONNECTIONS] = Counter({PEER: 1})
    client = Client(cast(asyncio.WriteTransport, None), fmt=fmt)
    parked = Watched(client, hub, app, PEER, deflate)
    try:
        transport, _ = await loop.connect_accepted_socket(lambda: parked, server_end)
        client.transport = cast(asyncio.WriteTransport, transport)
        hub.add(client)
        app[SOCKETS].add(parked)
        pair = Pair(parked, client, hub, app, peer, errors, logged)
        yield pair
        peer.close()
        await asyncio.wait_for(parked.gone, 5)
        assert not app[CONNECTIONS] and not app[SOCKETS] and not len(hub) and client.closed
        assert not errors, errors
        assert not logged, logged
    finally:
        logging.getLogger().removeHandler(handler)
        peer.close()
        if not parked.lost and client.transport is not None:
            client.transport.abort()
            await parked.gone


async def aiohttp_reads(stream: Stream, chunks: list[bytes]) -> list[tuple[int, bytes]]:
    """The messages aiohttp's own websocket reader finds in the same chunks (the oracle for ``Stream.messages``)."""
    loop = asyncio.get_running_loop()
    queue = WebSocketDataQueue(BaseProtocol(loop), 1 << 30, loop=loop)
    # (+ 1: aiohttp refuses a frame whose payload is exactly max_msg_size, though it takes an inflated message of
    # that size; parked takes both, as RFC-wise they are the same message)
    reader = WebSocketReader(queue, MAX_MESSAGE + 1, compress=stream.deflate, decode_text=False)
    fed, end = 0, stream.closes_at if stream.closes_at >= 0 else len(stream.data)
    for chunk in chunks:  # (up to the client's close frame, which aiohttp would return as a message)
        if part := chunk[: max(0, end - fed)]:
            reader.feed_data(part)
        fed += len(chunk)
    got = []
    for _ in stream.messages:
        msg = await asyncio.wait_for(queue.read(), 1)
        assert msg.type in (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.PING, WSMsgType.PONG), msg
        data = msg.data.encode() if isinstance(msg.data, str) else msg.data
        got.append((int(msg.type), bytes(data)))
    assert not queue._buffer, "aiohttp found more messages than were sent"
    return got


@SETTINGS
@given(data=st.data(), stream=valid_streams())
def test_a_valid_stream_cut_anywhere_gets_exactly_its_answers_in_order(data: st.DataObject, stream: Stream) -> None:
    asyncio.run(valid_stream(chunked(data.draw, bytes(stream.data)), stream))


async def valid_stream(chunks: list[bytes], stream: Stream) -> None:
    async with parked_pair(stream.deflate, stream.fmt) as pair:
        pair.client.answered = False
        await pair.send(chunks)
        assert not pair.errors, pair.errors  # nothing came out of data_received
        frames, ended = pair.replies()
        assert [(first & 0x0F, payload) for first, payload in frames] == stream.answers
        assert all(first & 0xF0 == 0x80 for first, _ in frames)  # final, uncompressed
        assert not ended and not pair.client.transport.is_closing() and not pair.parked.failed
        assert pair.client.answered is bool(stream.data)
        assert not pair.client.closed and len(pair.hub) == 1
        assert pair.hub.counters["ws_protocol_errors"] == 0
    assert await aiohttp_reads(stream, chunks) == stream.messages


@SETTINGS
@given(data=st.data(), stream=invalid_streams())
def test_a_bad_frame_after_a_valid_prefix_is_closed_with_the_rfc_code(data: st.DataObject, stream: Stream) -> None:
    asyncio.run(invalid_stream(chunked(data.draw, bytes(stream.data)), stream))


async def invalid_stream(chunks: list[bytes], stream: Stream) -> None:
    async with parked_pair(stream.deflate, stream.fmt) as pair:
        await pair.send(chunks)
        assert not pair.errors, pair.errors  # nothing came out of data_received
        frames, ended = pair.replies()
        *answers, (first, close) = frames
        assert [(f & 0x0F, payload) for f, payload in answers] == stream.answers
        assert first == 0x88 and struct.unpack_from("!H", close)[0] == stream.code, (first, close)
        assert ended, "the server did not end its side after the close frame"
        assert pair.parked.failed and pair.client.closed and not len(pair.hub)
        assert pair.hub.counters["ws_protocol_errors"] == 1


@SETTINGS
@given(data=st.data(), stream=closing_streams())
def test_a_valid_stream_then_the_clients_close_gets_its_answers_and_the_close_echoed(
    data: st.DataObject, stream: Stream
) -> None:
    asyncio.run(closing_stream(chunked(data.draw, bytes(stream.data)), stream))


async def closing_stream(chunks: list[bytes], stream: Stream) -> None:
    async with parked_pair(stream.deflate, stream.fmt) as pair:
        await pair.send(chunks)
        assert not pair.errors, pair.errors
        await asyncio.wait_for(pair.parked.gone, 5)  # the server closes the socket at once
        frames, ended = pair.replies()
        assert [(first & 0x0F, payload) for first, payload in frames] == stream.answers
        assert ended and pair.client.closed and not pair.parked.failed
        assert pair.hub.counters["ws_protocol_errors"] == 0
    assert await aiohttp_reads(stream, chunks) == stream.messages
