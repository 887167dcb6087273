"""``GET /api/feed``: a page of the feed's posts as shown, read within a fixed budget per request.

Anyone may call it, so its work is bounded whatever the feed's length and the filter: at most ``FEED_READS_MAX``
stream reads (each one XRANGE/XREVRANGE and at most one HMGET of the post index: at most twice that many Redis
commands) of ``FEED_SCAN_MAX`` entries in all; none when ``chats`` names no configured chat. A narrow ``chats``
filter on a long night may exhaust that budget before finding ``limit`` posts: the answer then holds what was
found, says ``"partial": true``, and its ``cursor`` (going forward with ``since``) or ``before`` (going back
without it) continues where the read stopped. With ``since``, one XINFO STREAM more tells whether part of the gap
after it was trimmed from the history (or the feed went back past it): ``"reset": true``, as ``/ws`` says ``reset``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from redis.exceptions import ResponseError

from mixer.codec import dumps
from mixer.fanout.appkeys import HUBS, KEYS, REDIS, SETTINGS, STREAMS
from mixer.fanout.live import parse_chats, parse_profile
from mixer.fanout.messages import select
from mixer.fanout.params import MAX_ID, parse_count, parse_id
from mixer.feed import history
from mixer.streams import gap_lost, read_range, read_tail

FEED_SCAN_MAX = 4_000  # entries one request reads at most
FEED_READS_MAX = 5  # stream reads one request makes at most (then at most one HMGET each)
FEED_FIRST_READ = 100  # entries of the first read at least; each further read doubles (within the budget)
LIMIT_MAX = 1000


async def feed_handler(request: web.Request) -> web.Response:
    """``GET /api/feed?since=|before=&limit=&chats=&profile=``: up to ``limit`` posts as shown (edits applied,
    retracted and hidden ones left out, ``chats`` applied), in feed order: with ``since`` the first after it, else
    the newest (before ``before`` when given). Bounded work: see the module docstring."""
    query = request.query
    since = parse_id(query["since"], "since") if query.get("since") else None
    before = parse_id(query["before"], "before") if query.get("before") else None
    if since is not None and before is not None:
        raise web.HTTPBadRequest(text="give since (read on from an id) or before (read back from it), not both")
    chats = parse_chats(query.get("chats"))
    limit = parse_count(query.get("limit"), "limit", 50, 1, LIMIT_MAX)
    profile = parse_profile(request)
    app = request.app
    redis, keys, stream = app[REDIS], app[KEYS], app[STREAMS][profile]
    pages: list[list[dict[str, Any]]] = []
    found = scanned = reads = 0
    ended = since == MAX_ID or before == "0-0"  # nothing can follow the largest id, nor precede the smallest
    configured = {chat.tag for chat in app[SETTINGS].chats}
    if chats is not None and configured and chats.isdisjoint(configured):
        ended = True  # posts carry configured chats only: none can match, so nothing is read
    size = max(FEED_FIRST_READ, limit + limit // 4)  # most entries are posts: one read usually does
    upper, after = before or "+", since or ""
    top = None  # without since: the newest entry read
    while not ended and found < limit and reads < FEED_READS_MAX and scanned < FEED_SCAN_MAX:
        count = min(size, FEED_SCAN_MAX - scanned)
        if since is None:
            entries = await read_tail(redis, stream, count, upper)
        else:
            entries = await read_range(redis, stream, after, count=count)
        reads += 1
        scanned += len(entries)
        size *= 2
        ended = len(entries) < count  # the stream's end (or, reading back, its start)
        if not entries:
            break
        posts = select(chats, await history(redis, keys, entries))
        found += len(posts)
        if since is None:
            top, upper = top or entries[-1][0], entries[0][0]
            pages.insert(0, posts)
        else:
            after = entries[-1][0]
            pages.append(posts)
    items = [post for page in pages for post in page]
    answer: dict[str, Any] = {"partial": not ended and found < limit, "reset": False}
    if since is not None:
        try:
            answer["reset"] = await gap_lost(redis, stream, since)
        except ResponseError:  # no such stream yet: nothing was ever trimmed from it
            pass
    if since is None:
        answer["before"] = items[-limit]["id"] if found >= limit else None if ended else upper
        items, cursor = items[-limit:], top or before or app[HUBS][profile].cursor
    elif found >= limit:
        items = items[:limit]
        cursor = items[-1]["id"]
    else:
        cursor = after or since  # the last entry read (``since`` when none): the next request goes on from there
    return web.Response(body=dumps({"items": items, "cursor": cursor, **answer}), content_type="application/json")
