"""Reading the merged feed back: entries decoded, and posts as they stand now.

A feed stream holds posts and, after them, edits, retractions and pins of those posts
(``mixer.codec`` names the entry kinds). ``decode_entries`` turns entries into
``(kind, payload)`` items in feed order; ``history`` (``as_shown`` for items already decoded)
gives the posts among them as a reader should see them today: the latest edit applied (from
the post index), retracted and hidden ones left out. Used by the fan-out server (catch-up,
``/api/feed``) and by the tools that read the night back (transcript); nothing here writes.
"""

from __future__ import annotations

import logging
from typing import Any

import msgpack
import redis.asyncio as aioredis

from mixer.codec import EDIT_FIELD, FIELD, PIN_FIELD, RETRACT_FIELD, unpack_item
from mixer.keys import Keys
from mixer.streams import Entry

log = logging.getLogger(__name__)

FeedItem = tuple[str, dict[str, Any]]  # ("p", post) | ("u", updated post) | ("r", {"ids": [...]}) | ("n", {"post"})

_KINDS = {EDIT_FIELD: "u", RETRACT_FIELD: "r", PIN_FIELD: "n"}


def joins(chats: frozenset[str] | None, update: dict[str, Any]) -> bool:
    """Whether an update brings its post into a chats filter: only chats it added (``joined``) pass the filter. A
    reader of that filter never had the post, so it takes the update as the post (late, under its older id): the
    fan-out's filtered clients, `mixer record --chats`."""
    joined = update.get("joined")
    if chats is None or not joined or chats.isdisjoint(joined):
        return False
    return chats.isdisjoint(c for c in update["chats"] if c not in joined)


def decode_entries(entries: list[Entry]) -> list[FeedItem]:
    """Feed entries as (kind, payload) in feed order; an undecodable entry is logged and left out."""
    items: list[FeedItem] = []
    for entry_id, raw, kind in entries:
        try:
            if kind == FIELD:
                items.append(("p", unpack_item(entry_id, raw)))
            elif kind in _KINDS:
                items.append((_KINDS[kind], msgpack.unpackb(raw, raw=False)))
        except Exception as exc:
            log.warning("feed: skipping undecodable entry %s: %s", entry_id, exc)
    return items


async def history(redis: aioredis.Redis, keys: Keys, entries: list[Entry]) -> list[dict[str, Any]]:
    """The posts among feed entries as they stand now: edits and counts applied, retracted ones left out."""
    return await as_shown(redis, keys, decode_entries(entries))


async def as_shown(
    redis: aioredis.Redis, keys: Keys, items: list[FeedItem], *, removed: bool = False
) -> list[dict[str, Any]]:
    """``history`` of entries already decoded (one reader that also needs the other items decodes once). With
    ``removed``, retracted and hidden posts stay, marked ``removed: "retracted"`` (as the entry has it: the index
    keeps only a stub) or ``"hidden"``."""
    posts = [item for kind, item in items if kind == "p"]
    if not posts:
        return []
    stored: list[Any] = await redis.hmget(keys.index, [p["key"] for p in posts])
    out = []
    for post, raw in zip(posts, stored, strict=True):
        now = msgpack.unpackb(raw, raw=False) if raw is not None else post
        ref = post.get("ref", post["id"])
        if "ref" in post:  # a shaped profile's entry: the card keeps its full-feed id, as when it was sent live
            now = {**now, "ref": ref}
        if not now.get("stub") and now.get("id", ref) != ref:
            continue  # this card was hidden and shown again under a newer id: that card counts, this one not
        if now.get("retracted"):
            if removed:
                out.append({**post, "removed": "retracted"})
        elif now.get("hidden"):
            if removed:
                out.append({**now, "id": post["id"], "removed": "hidden"})
        else:
            out.append({**now, "id": post["id"]})
    return out
