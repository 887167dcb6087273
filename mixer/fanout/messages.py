"""What a client is sent for feed entries, and those messages as the bytes of its frames.

``frames_for`` applies a client's chats filter to feed entries and groups them into
messages in feed order: runs of ``posts`` and ``update``, ``retract`` (merged while
consecutive) and ``pin``; an update that brings its post into the filter (it added a chat the
filter names, ``mixer.feed.joins``) is a post for that filter. ``encode_batches`` turns published
batches into frames for one (filter, format): at most ``BATCH_POSTS`` posts each, split at batch boundaries, each post
encoded once per format (``frames.wire_memo``), a big frame also put in an in-memory
file for ``sendfile`` (``mixer.fanout.zerocopy``). An entry that cannot be encoded is skipped and
logged, its neighbours kept. Nothing here touches a socket.
"""

from __future__ import annotations

import logging
import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mixer.fanout.frames import wire, wire_memo
from mixer.fanout.zerocopy import SharedFrame
from mixer.feed import FeedItem, joins

log = logging.getLogger(__name__)

# Posts per frame at most (~60 KB at 400 bytes a post, about one 64 KB TCP segment on loopback). At 10,000
# clients x 1,000 posts/s a frame of 130-150 posts cost the server 0.08 us per delivery and one of 250-370 posts
# 0.10 (sendfile, one core): uncapped, a late turn made the next frame bigger and dearer (docs/benchmarks.md).
BATCH_POSTS = 150
ChatFilter = frozenset[str] | None


def wants(chats: ChatFilter, item: dict[str, Any]) -> bool:
    """Whether an item passes a client's chats filter (no filter: everything)."""
    return chats is None or not chats.isdisjoint(item["chats"])


def select(chats: ChatFilter, items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item for item in items if wants(chats, item)]


def frames_for(chats: ChatFilter, entries: list[FeedItem]) -> list[dict[str, Any]]:
    """The messages a client with ``chats`` gets for a feed batch: runs of posts and updates, and retractions."""
    messages: list[dict[str, Any]] = []
    for kind, item in entries:
        if kind == "n":
            messages.append({"type": "pin", "post": item.get("post")})
            continue
        if kind == "r":
            if messages and messages[-1]["type"] == "retract":
                messages[-1]["ids"] += item["ids"]
            else:
                messages.append({"type": "retract", "ids": list(item["ids"])})
            continue
        if not wants(chats, item):
            continue
        kind_name = "posts" if kind == "p" or joins(chats, item) else "update"
        if messages and messages[-1]["type"] == kind_name:
            messages[-1]["items"].append(item)
        else:
            messages.append({"type": kind_name, "items": [item]})
    return messages


def close_frame(code: int, reason: str) -> bytes:
    payload = struct.pack("!H", code) + reason.encode()[:120]
    return bytes([0x88, len(payload)]) + payload


@dataclass(eq=False, slots=True)
class Piece:
    """One frame of a client's turn, and what it carries."""

    frame: bytes
    posts: int
    shared: SharedFrame | None  # the frame in an in-memory file, for sendfile (big frames)


def encode_batches(
    batches: Iterable[list[FeedItem]], chats: ChatFilter, fmt: str, memo: dict[int, bytes], counters: Counter[str]
) -> list[Piece]:
    """The frames for a client of (chats, fmt) of these batches, in runs of at most ``BATCH_POSTS`` posts (a bigger
    batch alone); ``memo`` keeps each item's encoding (see ``wire_memo``); counts ``frames_encoded`` and
    ``entries_unencodable``."""
    out: list[Piece] = []
    run: list[FeedItem] = []
    for batch in batches:
        if run and len(run) + len(batch) > BATCH_POSTS:
            out += _piece(chats, fmt, run, memo, counters)
            run = []
        run += batch
    return out + _piece(chats, fmt, run, memo, counters)


def _piece(
    chats: ChatFilter, fmt: str, run: list[FeedItem], memo: dict[int, bytes], counters: Counter[str]
) -> list[Piece]:
    messages = frames_for(chats, run)
    if not messages:
        return []
    try:
        frame = wire_memo(messages, fmt, memo)
    except (TypeError, ValueError, OverflowError) as err:  # (not from our own feed writers) skip just those
        good = [entry for entry in run if _encodes(entry, fmt)]
        counters["entries_unencodable"] += len(run) - len(good)
        log.warning("hub: %d feed entries cannot be encoded as %s (%s); skipped", len(run) - len(good), fmt, err)
        return _piece(chats, fmt, good, memo, counters) if len(good) < len(run) else []
    counters["frames_encoded"] += len(messages)
    posts = sum(len(m.get("items", ())) for m in messages)
    return [Piece(frame, posts, SharedFrame.of(frame))]


def _encodes(entry: FeedItem, fmt: str) -> bool:
    try:
        wire(frames_for(None, [entry]), fmt)
    except (TypeError, ValueError, OverflowError):
        return False
    return True
