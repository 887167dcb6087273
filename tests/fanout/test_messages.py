"""A post that joins a chat after it was first sent: a new card for a client filtered on that chat, an update for
every client that had the card; live, in a ``since`` catch-up, on /ws and /events. Feed entries are written here
as the merge stage writes them (the post entry, then an update entry naming the chats it added in ``joined``, and
the index holding the post as it stands); tests/test_pipeline.py has the merge stage write them itself."""

from __future__ import annotations

from typing import Any

import aiohttp
import msgpack
import redis.asyncio as aioredis

from mixer.codec import EDIT_FIELD, pack
from mixer.keys import Keys
from mixer.models import Post
from tests.helpers import make_post
from tests.servers import add_to_feed, next_event, running_app, settings_for


async def shown(redis: aioredis.Redis, keys: Keys, post: Post, post_id: str, chats: list[str]) -> dict[str, Any]:
    """The index's copy of ``post`` under ``post_id`` with ``chats``, as the merge stage keeps it; returned."""
    stored = {**post.to_dict(), "id": post_id, "chats": chats}
    await redis.hset(keys.index, post.key, pack(stored))
    return stored


async def join(redis: aioredis.Redis, keys: Keys, stored: dict[str, Any], joined: list[str]) -> dict[str, Any]:
    """An update entry adding ``joined`` to the post ``stored``, and the index to match; the post as updated."""
    now = {**stored, "chats": [*stored["chats"], *(c for c in joined if c not in stored["chats"])]}
    await redis.hset(keys.index, now["key"], pack(now))
    await redis.xadd(keys.feed, {EDIT_FIELD: msgpack.packb({**now, "joined": joined})})
    return now


async def frames_until(ws: aiohttp.ClientWebSocketResponse, key: str, kind: str = "posts") -> list[tuple[str, str]]:
    """(frame type, post key) of each item of the posts and update frames received, until a ``kind`` item of
    ``key`` came (a live batch may be one frame or several: items are compared, not frames)."""
    got: list[tuple[str, str]] = []
    while (kind, key) not in got:
        frame = await ws.receive_json(timeout=10)
        if frame["type"] in ("posts", "update"):
            got += [(frame["type"], item["key"]) for item in frame["items"]]
    return got


async def test_a_live_client_filtered_on_a_chat_a_post_joins_gets_it_as_a_new_card_once(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    post = make_post("webhook:twin1", ("smbiz",))
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        async with (
            http.ws_connect(srv.ws_url + "?chats=edchat") as joined,
            http.ws_connect(srv.ws_url + "?chats=smbiz") as had,
            http.ws_connect(srv.ws_url) as everything,
        ):
            for ws in (joined, had, everything):
                await ws.receive_json(timeout=5)  # hello
            [post_id] = await add_to_feed(redis, keys, post)
            stored = await shown(redis, keys, post, post_id, ["smbiz"])
            await join(redis, keys, stored, ["edchat"])
            await join(redis, keys, {**stored, "chats": ["smbiz", "edchat"]}, ["journchat"])  # no news to edchat
            await add_to_feed(redis, keys, make_post("after", ("smbiz", "edchat")))
            frame = await joined.receive_json(timeout=10)
            assert frame["type"] == "posts"
            [item] = frame["items"]
            assert (item["id"], item["chats"], item["joined"]) == (post_id, ["smbiz", "edchat"], ["edchat"])
            assert await frames_until(joined, "after") == [("update", "webhook:twin1"), ("posts", "after")]
            for ws in (had, everything):  # they had the card: two updates of it, never a second card
                assert await frames_until(ws, "after") == [
                    ("posts", "webhook:twin1"),
                    ("update", "webhook:twin1"),
                    ("update", "webhook:twin1"),
                    ("posts", "after"),
                ]
        async with http.get(srv.url + "/api/feed?chats=edchat") as resp:  # a reload shows what the live client saw
            assert [i["key"] for i in (await resp.json())["items"]] == ["webhook:twin1", "after"]


async def test_a_since_catch_up_sends_a_post_that_joined_in_the_gap_once_and_updates_to_who_had_it(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    before, inside, later = make_post("before", ("smbiz",)), make_post("inside", ("smbiz",)), make_post("edchat:1")
    [before_id, since] = await add_to_feed(redis, keys, before, make_post("mark", ("journchat",)))
    await join(redis, keys, await shown(redis, keys, before, before_id, ["smbiz"]), ["edchat"])  # from before the gap
    [inside_id] = await add_to_feed(redis, keys, inside)
    await join(redis, keys, await shown(redis, keys, inside, inside_id, ["smbiz"]), ["edchat"])  # inside it
    await add_to_feed(redis, keys, later.replace(chats=("edchat",)))
    gaps = {
        "chats=edchat": [
            ("posts", "inside"),  # the page's posts as they stand now, "inside" where it joined
            ("posts", "edchat:1"),
            ("posts", "before"),  # then what else the page holds: "before" joined edchat
        ],
        "chats=smbiz": [("posts", "inside"), ("update", "before")],  # it had "before" (in smbiz): an update
        "": [  # (the earlier clients' live posts are in its gap)
            ("posts", "inside"),
            ("posts", "edchat:1"),
            ("posts", "live-edchat"),
            ("posts", "live-smbiz"),
            ("update", "before"),
        ],
    }
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        for query, chat in (("chats=edchat", "edchat"), ("chats=smbiz", "smbiz"), ("", "journchat")):
            async with http.ws_connect(f"{srv.ws_url}?since={since}&{query}") as ws:
                await ws.receive_json(timeout=5)  # hello
                kind, key = gaps[query][-1]
                assert await frames_until(ws, key, kind) == gaps[query]
                # Live once the gap came: a post added during the catch-up may be read into its page, and come before
                # what the page holds besides posts (docs/api.md), so it would not be the last thing here.
                await add_to_feed(redis, keys, make_post(f"live-{chat}", (chat,)))  # (in the next one's gap)
                assert await frames_until(ws, f"live-{chat}") == [("posts", f"live-{chat}")]


async def test_a_post_whose_join_is_past_the_catch_up_comes_live_and_not_also_from_history(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    post = make_post("racing", ("smbiz",))
    [since, post_id] = await add_to_feed(redis, keys, make_post("mark"), post)
    stored = await shown(redis, keys, post, post_id, ["smbiz"])
    # The merge stage wrote the join (index and entry) after the hub's cursor: the index already has edchat.
    await redis.hset(keys.index, post.key, pack({**stored, "chats": ["smbiz", "edchat"]}))
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{srv.ws_url}?since={since}&chats=edchat") as ws:
            await ws.receive_json(timeout=5)  # hello
            await add_to_feed(redis, keys, make_post("caught-up", ("edchat",)))
            assert await frames_until(ws, "caught-up") == [("posts", "caught-up")]
            await join(redis, keys, stored, ["edchat"])
            await add_to_feed(redis, keys, make_post("after", ("edchat",)))
            assert await frames_until(ws, "after") == [("posts", "racing"), ("posts", "after")]


async def test_on_events_a_late_post_is_a_post_without_an_id_and_an_update_for_who_had_it(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    post = make_post("late", ("smbiz",))
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.get(srv.url + "/events?chats=edchat") as joined, http.get(srv.url + "/events") as had:
            for resp in (joined, had):
                await next_event(resp)  # hello
            [post_id] = await add_to_feed(redis, keys, post)
            assert (await next_event(had))[1:] == ("post", {**post.to_dict(), "id": post_id})
            await join(redis, keys, await shown(redis, keys, post, post_id, ["smbiz"]), ["edchat"])
            # (one hub lap encodes both: the update entry's bytes as a post and as an update are kept apart)
            event_id, name, item = await next_event(joined)
            assert (event_id, name, item["id"], item["joined"]) == (None, "post", post_id, ["edchat"])
            event_id, name, item = await next_event(had)
            assert (event_id, name, item["id"], item["chats"]) == (None, "update", post_id, ["smbiz", "edchat"])
