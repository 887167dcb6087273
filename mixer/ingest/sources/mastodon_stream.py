"""Mastodon's streaming wire: websocket messages and server-sent events in, ``(tag, event, payload)`` items out.

``parse_ws_message`` reads one websocket message and ``SseDecoder`` a ``text/event-stream``
body; ``read_websocket`` and ``read_event_stream`` run one connection each, putting every
item on the follower's queue and, last, the reason the connection ended (``StreamEnded``
or the network error). The events' payloads are parsed in ``mastodon``; which streams to
open, and what becomes of the items, is the follower's (``mastodon_follow``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import aiohttp

from mixer.ingest.hashtags import normalize_hashtag
from mixer.models import Ignored

_TAG_STREAMS = frozenset({"hashtag", "hashtag:local"})

Item = tuple[str | None, str, str] | BaseException  # (tag, event, payload), or why a reader stopped


class StreamEnded(Exception):
    """A streaming connection ended (closed by the server or lost)."""


def parse_ws_message(text: str) -> tuple[str | None, str, str]:
    """A websocket message ``{"stream": [...], "event", "payload"}`` as (its normalised tag or None, event, payload).

    Raises ValueError when it is not such a message, ``Ignored("stream_error")`` for the server's error replies.
    """
    try:
        message = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"websocket message is not JSON ({exc})") from None
    if not isinstance(message, dict):
        raise ValueError("websocket message is not a JSON object")
    event, payload, stream = message.get("event"), message.get("payload"), message.get("stream")
    if not isinstance(event, str):
        if "error" in message:
            raise Ignored("stream_error")
        raise ValueError("websocket message without an event")
    tag = None
    if isinstance(stream, list) and len(stream) > 1 and stream[0] in _TAG_STREAMS and isinstance(stream[1], str):
        tag = normalize_hashtag(stream[1])
    return tag, event, payload if isinstance(payload, str) else json.dumps(payload)


class SseDecoder:
    """Incremental ``text/event-stream`` decoder: bytes in, complete ``(event, data)`` pairs out, comments dropped.

    An event larger than ``max_event_bytes`` is dropped whole and counted in ``oversized``.
    """

    def __init__(self, max_event_bytes: int = 1 << 20) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []
        self._size = 0
        self._skipping = False
        self._max = max_event_bytes
        self.oversized = 0

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        """The events completed by ``chunk``, in stream order."""
        *lines, self._buffer = (self._buffer + chunk).split(b"\n")
        out: list[tuple[str, str]] = []
        for raw in lines:
            line = raw.removesuffix(b"\r").decode("utf-8", "replace")
            if not line:
                if (self._data or self._event) and not self._skipping:
                    out.append((self._event or "message", "\n".join(self._data)))
                self._event, self._data, self._size, self._skipping = "", [], 0, False
            elif not line.startswith(":") and not self._skipping:
                field, _, value = line.partition(":")
                if field == "event":
                    self._event = value.removeprefix(" ")
                elif field == "data":
                    self._data.append(value.removeprefix(" "))
                    self._size += len(raw)
                    if self._size > self._max:
                        self._skip()
        if not self._skipping and self._size + len(self._buffer) > self._max:
            self._skip()
        if self._skipping:
            self._buffer = b""  # the rest of a line of the event being dropped
        return out

    def _skip(self) -> None:
        """Drop the event in progress, and everything up to the blank line that ends it."""
        self.oversized += 1
        self._skipping = True
        self._event, self._data, self._size = "", [], 0


async def read_websocket(
    ws: aiohttp.ClientWebSocketResponse, queue: asyncio.Queue[Item], envelope: Callable[[str], Item | None]
) -> None:
    """Every text message as ``envelope`` makes it (None: nothing to queue), then why the socket ended."""
    reason: BaseException = StreamEnded("websocket closed")
    try:
        async for message in ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                item = envelope(message.data)
                if item is not None:
                    await queue.put(item)
            elif message.type is aiohttp.WSMsgType.ERROR:
                reason = StreamEnded(f"websocket error: {ws.exception()}")
                break
        else:
            reason = StreamEnded(f"websocket closed (code {ws.close_code})")
    except (aiohttp.ClientError, OSError) as exc:
        reason = exc
    await queue.put(reason)


async def read_event_stream(
    tag: str, resp: aiohttp.ClientResponse, queue: asyncio.Queue[Item], oversized: Callable[[str, int], None]
) -> None:
    """Every event of ``tag``'s stream in order, then why it ended; ``oversized`` hears of events dropped as too big."""
    decoder = SseDecoder()
    reason: BaseException = StreamEnded(f"event stream for #{tag} ended")
    try:
        async for chunk in resp.content.iter_any():
            for event, data in decoder.feed(chunk):
                await queue.put((tag, event, data))
            if decoder.oversized:
                oversized(tag, decoder.oversized)
                decoder.oversized = 0
    except (aiohttp.ClientError, OSError) as exc:
        reason = exc
    await queue.put(reason)
