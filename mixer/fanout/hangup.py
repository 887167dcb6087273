"""Noticing at once that an ``/events`` client hung up.

An SSE client sends nothing after its request, and aiohttp (handler cancellation off, as ``mixer.fanout.parked``
needs it) does not tell a running handler that its connection went: the ``/events`` handler would see it only at its
next write, a keep-alive comment up to ``SSE_KEEPALIVE`` seconds later, and meanwhile the gone client still counted
toward ``max_per_ip`` (a reloading page was refused with 429). ``watch_hangup`` puts a thin protocol of ours in
front of aiohttp's on the stream's transport: it passes every call on unchanged and, when the connection is lost,
sets the handler's ``ended`` event first, so the handler returns and releases its slot in the same loop turn.

Not here: the stream itself (``mixer.fanout.live``); parked websockets, whose own protocol sees their end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class HangupWatch(asyncio.Protocol):
    """Stands in front of aiohttp's protocol of one connection: everything is passed on to it as it comes; the
    connection's loss also sets ``ended``."""

    __slots__ = ("ended", "inner")

    def __init__(self, inner: asyncio.BaseProtocol, ended: asyncio.Event) -> None:
        self.inner: asyncio.Protocol = inner  # type: ignore[assignment]  # (aiohttp's RequestHandler is one)
        self.ended = ended

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended.set()
        self.inner.connection_lost(exc)


def watch_hangup(transport: asyncio.Transport, ended: asyncio.Event) -> Callable[[], None]:
    """Set ``ended`` as soon as ``transport``'s connection is lost; returns the call that stops watching (aiohttp's
    protocol alone again, for a connection that outlives the stream)."""
    inner = transport.get_protocol()
    watch = HangupWatch(inner, ended)
    transport.set_protocol(watch)

    def stop() -> None:
        if transport.get_protocol() is watch:
            transport.set_protocol(inner)

    return stop
