"""A joined websocket client's socket, held by a small protocol of ours instead of aiohttp's per-request objects.

An idle websocket kept under aiohttp costs ~15 KB of server memory (its request handler, parser, two tasks,
six coroutine frames, the request, the response with its reader, queue and writer: docs/benchmarks.md, "Idle
websockets"). ``park`` hands the socket to a ``Parked`` protocol right after the upgrade, so the ``/ws``
handler can return and every aiohttp object of that connection is freed; what stays is this protocol, the
``Client`` and the transport. ``Parked`` reads the client's frames (RFC 6455, permessage-deflate included)
and does what the handler's ``ws.receive()`` loop did: any frame marks the client answered, a ping gets its
pong, a ``{"type":"ping"}`` text gets ``{"type":"pong"}``, a close frame is answered and the socket closed, a
protocol error closes it with its code (1002, 1007, 1009). Writing posts stays the hub's (``ClientRing``).

Not here: what the client is sent (``mixer.fanout.live``, ``mixer.fanout.hub``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import zlib
from collections import Counter
from typing import Any

from aiohttp import web

from mixer.fanout.appkeys import CONNECTIONS, SOCKETS
from mixer.fanout.clients import CLOSE_GRACE, Client
from mixer.fanout.frames import wire
from mixer.fanout.hub import Hub
from mixer.fanout.messages import close_frame

log = logging.getLogger(__name__)

PARKING = True  # False: every socket stays on aiohttp's path (its ``ws.receive()`` loop); tests flip it
MAX_MESSAGE = 1 << 16  # a client message (after inflating) larger than this is closed with 1009, as aiohttp's was
PROTOCOL_ERROR, INVALID_TEXT, TOO_BIG = 1002, 1007, 1009
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
OPCODES = frozenset({CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG})  # the rest are reserved (RFC 6455 5.2)
# Close codes a peer may send (RFC 6455 7.4.1, 7.4.2): 1004-1006 and 1015 are never sent on the wire.
SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
DEFLATE_TAIL = b"\x00\x00\xff\xff"  # the empty stored block a permessage-deflate sender strips (RFC 7692 7.2.1)
# Deflate streams one message may hold (each but the last ended by a final block): a sender ending its messages
# with one (RFC 7692 7.2.3.4) needs 2; the cap keeps a message of many tiny streams from costing a new inflater and
# a copy of the rest per stream. Over it: closed with 1009, as aiohttp closes a message of too many members.
MAX_STREAMS = 16


class ProtocolError(Exception):
    """A frame the client must not send; ``code`` is the close code that says why."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


class Parked(asyncio.Protocol):
    """The protocol of a parked websocket's transport: reads the client's frames and answers them (module docstring).

    Memory bound: it holds at most one incomplete frame (at most ``MAX_MESSAGE`` bytes of payload plus one read)
    and one message being reassembled; a pong or ``pong`` message is written only while the transport holds at
    most the hub's ``backlog_bytes``, so a client flooding pings without reading grows nothing without bound."""

    __slots__ = (
        "_buf",
        "_gone",
        "_inflater",
        "_opcode",
        "_parts",
        "address",
        "app",
        "client",
        "deflate",
        "failed",
        "hub",
        "lost",
    )

    def __init__(self, client: Client, hub: Hub, app: web.Application, address: str, deflate: bool) -> None:
        self.client = client
        self.hub = hub
        self.app = app
        self.address = address  # what ``admit`` counted it under: released when the socket goes
        self.deflate = deflate  # permessage-deflate was negotiated: messages may come compressed (RSV1)
        self.lost = False
        self.failed = False  # it broke the protocol: what it sends now is dropped
        self._buf: bytearray | None = None  # an incomplete frame's bytes, if any
        self._parts: bytearray | None = None  # the payload so far of a fragmented message
        self._opcode = 0  # that message's opcode, with 0x40 added when it is compressed
        self._inflater: Any = None  # made at the first compressed message: the client's context carries over
        self._gone: asyncio.Future[None] | None = None  # made when someone waits for the socket to go (``close``)

    # -- asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        """Handle every complete frame in what has come so far; keep the incomplete rest."""
        if self.failed:
            return
        if self._buf:
            self._buf += data
            view: bytes | bytearray = self._buf
        else:
            view = data
        try:
            used = self._frames(view)
        except ProtocolError as exc:
            log.info("ws: closing a client that broke the protocol (%d: %s)", exc.code, exc)
            self.hub.counters["ws_protocol_errors"] += 1
            self._buf = self._parts = None
            self._fail(exc.code, str(exc))
            return
        if used == len(view) or self.client.transport.is_closing():
            self._buf = None
        elif view is self._buf:
            del self._buf[:used]  # (bytearray drops a prefix without copying the rest)
        else:
            self._buf = bytearray(data[used:])

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself

    def connection_lost(self, exc: BaseException | None) -> None:
        """The socket went: out of the hub and of the shutdown set, and its connection no longer counted."""
        self.lost = True
        self.client.closed = True
        self.hub.remove(self.client)
        self.app[SOCKETS].discard(self)
        release(self.app, self.address)
        self._buf = self._parts = self._inflater = None
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)

    # -- closing from our side

    def send_close(self, code: int, reason: str) -> None:
        """Send a close frame (behind what is queued) and stop writing to the client; its answering close frame
        closes the socket, and it is dropped ``CLOSE_GRACE`` seconds later if it has not answered."""
        client, transport = self.client, self.client.transport
        if client.closed or transport.is_closing():
            return
        transport.write(close_frame(code, reason))
        client.closed = True
        self.hub.remove(client)
        asyncio.get_running_loop().call_later(CLOSE_GRACE, transport.abort)  # (a no-op once closed)

    async def close(self, *, code: int, message: bytes = b"") -> bool:
        """Close with ``code`` and wait for the client's answer, ``CLOSE_GRACE`` seconds at most (then drop it);
        the same call as ``WebSocketResponse.close`` for the shutdown."""
        self.send_close(code, message.decode(errors="replace"))
        if self.lost:
            return True
        if self._gone is None:
            self._gone = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._gone), CLOSE_GRACE)
        except TimeoutError:
            self.client.transport.abort()
        return True

    def _fail(self, code: int, why: str) -> None:
        """Fail the connection (RFC 6455 7.1.7): a close frame saying why, then our end of the socket; what the
        client still sends is read and dropped (closing with unread bytes would reset the connection, losing the
        close frame) until it closes its end, ``CLOSE_GRACE`` seconds at most."""
        transport = self.client.transport
        self.failed = True
        if transport.is_closing():
            return
        # (a close of ours already sent, a 4008 or 1001, stands: its sender scheduled the abort too)
        self.send_close(code, why)
        transport.write_eof()  # (after what is queued)

    # -- frames

    def _frames(self, data: bytes | bytearray) -> int:
        """Handle the complete frames at the start of ``data``; the number of bytes they took."""
        pos, end = 0, len(data)
        transport = self.client.transport
        while end - pos >= 2 and not transport.is_closing():
            first, second = data[pos], data[pos + 1]
            if first & 0x30 or (first & 0x40 and not self.deflate):
                raise ProtocolError(PROTOCOL_ERROR, "reserved bits set")
            if not second & 0x80:
                raise ProtocolError(PROTOCOL_ERROR, "client frames must be masked")
            opcode, size, head = first & 0x0F, second & 0x7F, 6
            if opcode not in OPCODES:  # (before its size: a reserved opcode is 1002 whatever length it claims)
                raise ProtocolError(PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
            if size == 126:
                if end - pos < 8:
                    break
                (size,) = struct.unpack_from("!H", data, pos + 2)
                head = 8
            elif size == 127:
                if end - pos < 14:
                    break
                (size,) = struct.unpack_from("!Q", data, pos + 2)
                head = 14
            if opcode >= CLOSE:
                if size > 125 or not first & 0x80 or first & 0x40:
                    raise ProtocolError(PROTOCOL_ERROR, "a control frame is at most 125 bytes, whole, uncompressed")
            elif size + len(self._parts or b"") > MAX_MESSAGE:
                raise ProtocolError(TOO_BIG, f"a message is at most {MAX_MESSAGE} bytes")
            if end - pos < head + size:
                break
            mask = bytes(data[pos + head - 4 : pos + head])
            payload = _unmask(bytes(data[pos + head : pos + head + size]), mask)
            pos += head + size
            self.client.answered = True  # any frame: the heartbeat's proof of life
            self._frame(first, opcode, payload)
        return pos

    def _frame(self, first: int, opcode: int, payload: bytes) -> None:
        if opcode == PING:
            self._answer(b"\x8a" + bytes([len(payload)]) + payload)
        elif opcode == PONG:
            pass
        elif opcode == CLOSE:
            self._closed_by_client(payload)
        elif opcode in (TEXT, BINARY):
            if self._parts is not None:
                raise ProtocolError(PROTOCOL_ERROR, "a new message before the last one's final frame")
            self._opcode = opcode | (first & 0x40)
            self._parts = bytearray(payload)
        else:  # CONTINUATION (``_frames`` let no other opcode through)
            if self._parts is None:
                raise ProtocolError(PROTOCOL_ERROR, "a continuation frame with no message begun")
            if first & 0x40:
                raise ProtocolError(PROTOCOL_ERROR, "RSV1 on a continuation frame")
            self._parts += payload  # (one buffer: however many fragments, at most MAX_MESSAGE bytes)
        if opcode < CLOSE and first & 0x80 and self._parts is not None:
            parts, self._parts = self._parts, None
            self._message(self._opcode, bytes(parts))

    def _message(self, opcode: int, payload: bytes) -> None:
        if opcode & 0x40:
            payload = self._inflate(payload)
        if opcode & 0x0F != TEXT:
            return  # a binary message: only a sign of life
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            raise ProtocolError(INVALID_TEXT, "a text message that is not UTF-8") from None
        if is_ping(text):
            self._answer(wire([{"type": "pong"}], self.client.fmt))

    def _inflate(self, payload: bytes) -> bytes:
        """A compressed message's payload, inflated. A sender may end a message's deflate stream with a final
        block (BFINAL, RFC 7692 7.2.3.4): what follows it, in this message or the next, is a new stream, with
        an empty window (as aiohttp reads it); an inflater past its stream's end would return nothing more."""
        data: bytes = payload + DEFLATE_TAIL
        out: bytes = b""
        for _ in range(MAX_STREAMS):
            if self._inflater is None:
                self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            try:
                out += self._inflater.decompress(data, MAX_MESSAGE + 1 - len(out))
            except zlib.error:
                raise ProtocolError(PROTOCOL_ERROR, "a compressed message that does not inflate") from None
            if len(out) > MAX_MESSAGE or self._inflater.unconsumed_tail:
                raise ProtocolError(TOO_BIG, f"a message is at most {MAX_MESSAGE} bytes")
            if not self._inflater.eof:
                return out
            data, self._inflater = self._inflater.unused_data, None
        raise ProtocolError(TOO_BIG, f"a compressed message of more than {MAX_STREAMS} deflate streams")

    def _closed_by_client(self, payload: bytes) -> None:
        """A close frame: answered with its code (unless we sent ours first), then the socket is closed."""
        if len(payload) == 1:
            raise ProtocolError(PROTOCOL_ERROR, "a close frame with a one-byte body")
        if payload:
            (code,) = struct.unpack_from("!H", payload)
            if code not in SENDABLE and not 3000 <= code <= 4999:
                raise ProtocolError(PROTOCOL_ERROR, f"close code {code}")
            try:
                payload[2:].decode()
            except UnicodeDecodeError:
                raise ProtocolError(INVALID_TEXT, "a close reason that is not UTF-8") from None
        transport = self.client.transport
        if not self.client.closed:  # (closed: we sent ours, this is the answer)
            transport.write(close_frame(code, "") if payload else b"\x88\x00")  # its code echoed, or none
        self.client.closed = True
        self.hub.remove(self.client)
        transport.close()

    def _answer(self, frame: bytes) -> None:
        """Write a pong unless a close was sent or the transport already holds ``backlog_bytes`` (a flood)."""
        client, transport = self.client, self.client.transport
        if client.closed or transport.is_closing() or transport.get_write_buffer_size() > self.hub.backlog_bytes:
            return
        transport.write(frame)


def release(app: web.Application, address: str) -> None:
    """A /ws or /events connection counted under ``address`` (``admit``) is gone: no longer counted."""
    counts: Counter[str] = app[CONNECTIONS]
    counts[address] -= 1
    if counts[address] <= 0:
        del counts[address]


def _unmask(payload: bytes, mask: bytes) -> bytes:
    size = len(payload)
    if not size:
        return payload
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


def is_ping(data: str) -> bool:
    """Whether a client's text message is ``{\"type\":\"ping\"}`` (asking for a ``pong`` message)."""
    try:
        return bool(json.loads(data).get("type") == "ping")
    except (ValueError, AttributeError, RecursionError):  # (not JSON, not an object, nested too deeply)
        return False


def may_park(request: web.Request) -> bool:
    """Before the upgrade: whether this connection can be parked once upgraded (``park``). Checks that
    aiohttp's request handler is the one ``park`` knows (its ``transport``, ``_message_tail``,
    ``_payload_parser`` and ``connection_lost``), that nothing came after the request yet (``_message_tail``
    empty: bytes there would go to aiohttp's websocket reader at the upgrade, and its state cannot be read or
    handed over), that the server does not cancel handlers on disconnection, and that the socket is plain TCP."""
    protocol = request.protocol
    manager = getattr(protocol, "_manager", None)
    transport = request.transport
    return (
        PARKING
        and transport is not None
        and transport.get_extra_info("sslcontext") is None
        and callable(getattr(transport, "set_protocol", None))
        and all(hasattr(protocol, name) for name in ("transport", "_payload_parser", "connection_lost"))
        and getattr(protocol, "_message_tail", None) == b""
        and getattr(manager, "handler_cancellation", True) is False
    )


def park(request: web.Request, ws: web.WebSocketResponse, client: Client, hub: Hub, address: str) -> Parked | None:
    """Right after ``ws.prepare`` (and ``may_park`` before it): move the socket to a ``Parked`` protocol and
    detach it from aiohttp, so that returning from the handler frees every aiohttp object of this connection
    and sends nothing; None (nothing changed: the handler reads on with ``ws.receive()``) when a precondition
    does not hold.

    What it relies on, in aiohttp 3.14 (``web_protocol.py``, ``web_ws.py``):

    - the client cannot have sent a frame before getting the 101, and aiohttp does not yield to the loop between
      writing the 101 and giving the socket's bytes to its websocket reader (``_post_start``, ``set_parser``),
      nor ``ws.prepare`` after that: so, with ``_message_tail`` empty before the upgrade (``may_park``) and
      the reader's queue empty after it, aiohttp has read nothing of the websocket and ``Parked`` starts at the
      first byte of the first frame, with a fresh inflater (permessage-deflate's context starts empty);
    - ``RequestHandler.connection_lost`` with its ``transport`` already None takes it off the server's
      connection list (once its task ends), cancels its keep-alive timer and feeds EOF to its reader, and
      closes nothing; ``handler_cancellation`` off (checked): it does not cancel the running handler;
    - a ``WebSocketResponse`` marked closed with its EOF sent writes no close frame when the handler returns
      (``write_eof`` and ``close`` return at once), and with the handler's ``transport`` None it closes nothing.
    """
    protocol: Any = request.protocol
    transport = request.transport
    queue: Any = getattr(ws, "_reader", None)
    if (
        transport is None
        or protocol.transport is not transport
        or queue is None
        or getattr(queue, "_size", 1) != 0
        or getattr(queue, "_buffer", None)
        or not hasattr(ws, "_closed")
        or not hasattr(ws, "_eof_sent")
    ):
        return None
    parked = Parked(client, hub, request.app, address, bool(ws.compress))
    transport.set_protocol(parked)
    protocol.transport = None  # before anything of aiohttp's could close it (force_close, the end of start())
    protocol.connection_lost(None)
    ws._closed = True  # (private: aiohttp's close() and write_eof() then send nothing)
    ws._eof_sent = True
    if not transport.is_reading():  # (aiohttp pauses reading while its queue is full)
        transport.resume_reading()
    request.app[SOCKETS].add(parked)
    return parked
