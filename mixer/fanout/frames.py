"""Client frames: messages as the exact bytes a websocket (JSON text or msgpack binary) or SSE client reads.

``ws_frame`` builds a whole server-to-client websocket frame once, so the hub can write the
same bytes to every transport; ``wire_memo`` encodes each post once however many distinct
frames it goes into. Nothing here touches the network.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from mixer.codec import dumps


def encode_message(obj: dict[str, Any], fmt: str) -> bytes:
    """A client message body in ``json`` or ``msgpack``."""
    if fmt == "msgpack":
        return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]
    return dumps(obj)


def ws_frame(payload: bytes, binary: bool = False) -> bytes:
    """One unmasked, final, uncompressed websocket frame (RFC 6455 section 5.2)."""
    first = 0x82 if binary else 0x81
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", first, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, 126, size)
    else:
        header = struct.pack("!BBQ", first, 127, size)
    return header + payload


def sse_chunk(message: dict[str, Any], event_id: str | None = None) -> bytes:
    """A message as Server-Sent Events (one event per post), framed as one HTTP/1.1 chunk. A ``reset`` carries its
    cursor as the event's ``id:``, and so may any other message given an ``event_id``: ``EventSource`` then comes
    back with ``Last-Event-ID`` from there, not from an id before the reset (which would only be reset again)."""
    kind = message.get("type", "message")
    if kind in ("posts", "update"):
        body = b"".join(_item_bytes(kind, item, "sse") for item in message.get("items", ()))
    else:
        if kind == "reset" and isinstance(message.get("cursor"), str):
            event_id = message["cursor"]
        head = b"" if event_id is None else b"id: " + event_id.encode() + b"\n"
        body = head + b"event: " + str(kind).encode() + b"\ndata: " + dumps(message) + b"\n\n"
    return chunk(body)


def chunk(body: bytes) -> bytes:
    """``body`` as one chunk of an HTTP/1.1 chunked response."""
    return f"{len(body):x}\r\n".encode() + body + b"\r\n"


def wire(messages: list[dict[str, Any]], fmt: str) -> bytes:
    """Messages as the bytes a client of ``fmt`` reads: websocket frames (json, msgpack) or SSE chunks (sse)."""
    if fmt == "sse":
        return b"".join(sse_chunk(m) for m in messages)
    return b"".join(ws_frame(encode_message(m, fmt), binary=fmt == "msgpack") for m in messages)


def wire_memo(messages: list[dict[str, Any]], fmt: str, memo: dict[int, bytes]) -> bytes:
    """``wire(messages, fmt)`` byte for byte, each item of a ``posts`` or ``update`` message encoded once: its
    bytes are kept in ``memo`` under the item's ``id()``. One memo per format, and the caller keeps the items
    alive as long as their memo (an id is only unique among live objects)."""
    out: list[bytes] = []
    for message in messages:
        kind = message["type"]
        if kind not in ("posts", "update"):
            out.append(wire([message], fmt))
            continue
        items = message["items"]
        encoded = []
        # An SSE item's bytes name its event (post or update), and one update entry is a post to a client it brings
        # in and an update to the others: its two encodings are kept apart (~id: a negative key).
        flip = fmt == "sse" and kind == "update"
        for item in items:
            slot = ~id(item) if flip else id(item)
            got = memo.get(slot)
            if got is None:
                got = memo[slot] = _item_bytes(kind, item, fmt)
            encoded.append(got)
        if fmt == "sse":
            out.append(chunk(b"".join(encoded)))
        elif fmt == "msgpack":
            head = b"\x82\xa4type" + msgpack.packb(kind) + b"\xa5items" + _array_header(len(items))
            out.append(ws_frame(head + b"".join(encoded), binary=True))
        else:
            out.append(ws_frame(b'{"type":"' + kind.encode() + b'","items":[' + b",".join(encoded) + b"]}"))
    return b"".join(out)


def _item_bytes(kind: str, item: dict[str, Any], fmt: str) -> bytes:
    if fmt == "msgpack":
        return msgpack.packb(item, use_bin_type=True)  # type: ignore[no-any-return]
    if fmt != "sse":
        return dumps(item)
    if kind == "posts" and "joined" in item:  # a late post (older id): leaves EventSource's resume id where it is
        return b"event: post\ndata: " + dumps(item) + b"\n\n"
    if kind == "posts":
        return b"id: " + str(item["id"]).encode() + b"\nevent: post\ndata: " + dumps(item) + b"\n\n"
    return b"event: update\ndata: " + dumps(item) + b"\n\n"


def _array_header(size: int) -> bytes:
    """A msgpack array header (the items follow)."""
    if size < 16:
        return bytes([0x90 | size])
    if size < 1 << 16:
        return struct.pack("!BH", 0xDC, size)
    return struct.pack("!BI", 0xDD, size)
