"""A new subscriber's ``since`` gap, from the feed history, paced by what the client reads.

``catch_up`` sends a client every feed post after its ``since`` up to the hub's cursor (which
moves meanwhile), each page followed by what else it holds (pins, retractions, updates of posts
from before the gap; an update that brings a post into the client's filter is that post, as
live); or, when part of the gap was trimmed from the history, one ``reset``: never a silent
partial gap. It reads ``PAGE`` entries at a time and writes each frame with
``ClientRing.deliver``, so a client that reads slowly or not at all holds at most about
``backlog_bytes`` plus a frame on the server, and one whose backlog stays over the limit for
``cutoff_seconds`` is cut off (4008), exactly as live. Redis calls wait out a short outage
(``patiently``); a longer one ends the catch-up with ``Unavailable``.

Not here: the hello and joining the hub afterwards (``mixer.fanout.live``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from mixer.backoff import Backoff
from mixer.fanout.clients import Client
from mixer.fanout.frames import wire
from mixer.fanout.hub import Hub
from mixer.fanout.messages import ChatFilter, frames_for, wants
from mixer.fanout.params import stream_id
from mixer.feed import FeedItem, as_shown, decode_entries, joins
from mixer.keys import Keys
from mixer.streams import gap_lost, id_key, raise_if_cancelling, read_range

T = TypeVar("T")

# Entries read per step: a step's posts are one frame, so this bounds what a waiting client holds beyond its
# backlog (100 posts: ~70 KB on a typical night, at most a few MB at the largest posts mixer.models allows).
PAGE = 100
REDIS_PATIENCE = 5.0  # seconds a new client waits for an unreachable Redis before it is told to come back later


class Unavailable(Exception):
    """Redis stayed unreachable for ``REDIS_PATIENCE`` seconds: the client should retry later."""


async def patiently(call: Callable[[], Awaitable[T]], patience: float | None = None) -> T:
    """``call()``, tried again on a connection error (capped backoff) for up to ``patience`` seconds in all
    (default ``REDIS_PATIENCE``); raises ``Unavailable`` when Redis did not answer by then. Other Redis errors (a
    wrong type...) pass through."""
    backoff = Backoff(base=0.1, cap=1.0, jitter=0.0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (REDIS_PATIENCE if patience is None else patience)
    while True:
        try:
            async with asyncio.timeout(max(0.0, deadline - loop.time())):
                return await call()
        except ResponseError:
            raise
        except (RedisError, OSError, TimeoutError) as exc:
            raise_if_cancelling()
            delay = backoff.next()
            if loop.time() + delay >= deadline:
                raise Unavailable(str(exc) or type(exc).__name__) from exc
            await asyncio.sleep(delay)


async def catch_up(hub: Hub, client: Client, redis: aioredis.Redis, keys: Keys, stream: str, since: str) -> bool:
    """Send ``client`` the gap after ``since`` up to ``hub.cursor`` (module docstring); True when it ends with the
    client's backlog at most ``backlog_bytes`` and ``hub.cursor`` reached (join the hub with no await in between),
    False when the client went away or was cut off. Raises ``Unavailable`` when Redis stays away."""
    try:
        lost = await patiently(partial(gap_lost, redis, stream, since))
    except ResponseError:  # no such stream yet: nothing was ever trimmed from it
        lost = False
    if lost:
        return await hub.deliver(client, wire([{"type": "reset", "cursor": hub.cursor}], client.fmt))
    after = since
    while await hub.drained(client):  # (the last look at the cursor comes after the last wait)
        if id_key(after) >= id_key(hub.cursor):
            return True
        entries = await patiently(partial(read_range, redis, stream, after, hub.cursor, count=PAGE))
        if not entries:
            return True
        picked, late, controls = _sort(client.chats, decode_entries(entries), since)
        shown = await patiently(partial(as_shown, redis, keys, picked))
        chosen = [{**post, "joined": late[post["id"]]} if post["id"] in late else post for post in shown]
        messages = [{"type": "posts", "items": chosen}] if chosen else []
        messages += frames_for(client.chats, controls)
        for message in messages:
            if not await hub.deliver(client, wire([message], client.fmt)):
                return False
        after = entries[-1][0]
    return False


def _sort(
    chats: ChatFilter, items: list[FeedItem], since: str
) -> tuple[list[FeedItem], dict[str, list[str]], list[FeedItem]]:
    """A page's posts to show as they stand now (in feed order), which of them come late (their ``joined``), and
    the control entries to send as they are.

    A post inside the gap comes as it stands now, so only posts from before it need their updates. It is picked by
    the chats its own entry gave it, not by the index's: the index may already hold a chat whose update is past the
    hub's cursor, and that update brings the post live (``frames_for``), so it must not come here too. One that
    joined the filter by an update inside the gap comes there, late, marked as live (``joined``)."""
    picked: list[FeedItem] = []
    late: dict[str, list[str]] = {}
    controls: list[FeedItem] = []
    for kind, item in items:
        if kind == "p":
            if wants(chats, item):
                picked.append((kind, item))
        elif kind != "u" or _before(item, since):
            controls.append((kind, item))
        elif joins(chats, item):
            picked.append(("p", item))
            late[item["id"]] = item["joined"]
    return picked, late, controls


def _before(item: dict[str, Any], since: str) -> bool:
    return isinstance(item.get("id"), str) and stream_id(item["id"]) is not None and id_key(item["id"]) <= id_key(since)
