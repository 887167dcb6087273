"""Moderation end to end: /api/mod/... -> actions stream -> merge stage -> every screen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from mixer.fanout.modapi import moderator_name
from mixer.ingest.publish import Publisher
from mixer.keys import Keys
from mixer.merge.stage import MergeStage
from mixer.models import Author
from mixer.rules import Rules
from mixer.streams import dedicated_client
from tests.helpers import make_post
from tests.servers import running_app, settings_for

TOKEN = {"Authorization": "Bearer m0d", "X-Moderator": "Dana"}


@asynccontextmanager
async def night(redis_url: str, keys: Keys, rules: Rules | None = None) -> AsyncIterator[tuple[str, Publisher]]:
    """The app (moderation on) and a running merge stage; yields the app URL and a publisher."""
    settings = settings_for(keys.prefix, moderation_token="m0d")
    conn = dedicated_client(redis_url, 1000)
    merge = MergeStage(conn, keys, settings.chat_tags, window=0.05, rules=rules)
    async with running_app(settings, redis_url) as srv:
        task = asyncio.create_task(merge.run())
        client = aioredis.Redis.from_url(redis_url)
        try:
            yield srv.url, Publisher(client, keys, settings.chat_tags, 1000)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await conn.aclose()
            await client.aclose()


async def next_frame(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    while (frame := await ws.receive_json(timeout=10))["type"] != kind:
        pass
    return frame


async def test_a_hide_reaches_an_open_screen_within_a_second_and_leaves_history(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    async with night(redis_url, keys) as (url, pub), aiohttp.ClientSession() as http:
        async with http.ws_connect(url.replace("http", "ws") + "/ws") as ws:
            await next_frame(ws, "hello")
            await pub.publish([make_post("x:bad", text="something regrettable")])
            [post] = (await next_frame(ws, "posts"))["items"]
            started = time.monotonic()
            async with http.post(f"{url}/api/mod/hide", json={"id": post["id"]}, headers=TOKEN) as resp:
                assert resp.status == 202
            retract = await next_frame(ws, "retract")
            took = time.monotonic() - started
            assert retract["ids"] == [post["id"]]
            assert took < 1.0, f"the hide took {took:.2f} s to reach the screen"
        async with http.get(f"{url}/api/feed?limit=10") as resp:
            assert (await resp.json())["items"] == []
        async with http.get(f"{url}/api/mod/audit", headers=TOKEN) as resp:
            [entry] = (await resp.json())["items"]
            assert (entry["who"], entry["action"], entry["key"]) == ("Dana", "hide", "x:bad")


async def test_moderation_needs_the_token(redis: aioredis.Redis, keys: Keys, redis_url: str) -> None:
    async with night(redis_url, keys) as (url, _), aiohttp.ClientSession() as http:
        async with http.post(f"{url}/api/mod/hide", json={"key": "x:1"}) as resp:
            assert resp.status == 401
            assert await resp.text() == "a bearer token is required (Authorization: Bearer <token>)"
        async with http.get(f"{url}/api/mod/rules", headers={"Authorization": "Bearer nope"}) as resp:
            assert resp.status == 401  # a token was sent: the answer says it is the wrong one, not that none came
            assert await resp.text() == "this bearer token is not the one configured (Authorization: Bearer <token>)"


async def test_blocked_words_and_accounts_never_reach_the_feed(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    rules = Rules(words=("spoiler",), accounts=("x:spammer",))
    bob = Author("bob", "Bob")
    async with night(redis_url, keys, rules) as (url, pub), aiohttp.ClientSession() as http:
        async with http.ws_connect(url.replace("http", "ws") + "/ws") as ws:
            await next_frame(ws, "hello")
            await pub.publish([make_post("x:1", text="big SPOILER ahead"), make_post("x:3", text="fine")])
            items = (await next_frame(ws, "posts"))["items"]
            assert [i["key"] for i in items] == ["x:3"]
            async with http.post(f"{url}/api/mod/block", json={"account": "alice"}, headers=TOKEN) as resp:
                assert resp.status == 200
                assert "alice" in (await resp.json())["accounts"]
            await pub.publish([make_post("x:4", text="alice again")])  # make_post's author is alice
            await pub.publish([make_post("x:5", text="from bob").replace(author=bob)])
            shown: list[str] = []
            while "x:5" not in shown:
                shown += [i["key"] for i in (await next_frame(ws, "posts"))["items"]]
            assert "x:4" not in shown


async def test_in_approval_mode_posts_wait_until_a_moderator_approves(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    async with night(redis_url, keys) as (url, pub), aiohttp.ClientSession() as http:
        async with http.post(f"{url}/api/mod/approval", json={"on": True}, headers=TOKEN) as resp:
            assert (await resp.json())["approval"] is True
        async with http.ws_connect(url.replace("http", "ws") + "/ws") as ws:
            await next_frame(ws, "hello")
            await pub.publish([make_post("x:wait", text="waiting for a yes")])
            queue: list[dict[str, Any]] = []
            while not queue:  # the merge stage files it in the queue within its window
                async with http.get(f"{url}/api/mod/queue", headers=TOKEN) as resp:
                    queue = (await resp.json())["items"]
                await redis.xread({keys.feed: "$"}, block=50)  # a short wait on Redis between polls
            assert [p["key"] for p in queue] == ["x:wait"]
            async with http.post(f"{url}/api/mod/approve", json={"key": "x:wait"}, headers=TOKEN) as resp:
                assert resp.status == 202
            [post] = (await next_frame(ws, "posts"))["items"]
            assert post["key"] == "x:wait"
        async with http.get(f"{url}/api/mod/queue", headers=TOKEN) as resp:
            assert (await resp.json())["items"] == []


async def test_a_pinned_post_reaches_open_screens_and_every_new_hello(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    async with night(redis_url, keys) as (url, pub), aiohttp.ClientSession() as http:
        async with http.ws_connect(url.replace("http", "ws") + "/ws") as ws:
            await next_frame(ws, "hello")
            await pub.publish([make_post("x:pin", text="Welcome to #chatmixer night")])
            await next_frame(ws, "posts")
            async with http.post(f"{url}/api/mod/pin", json={"key": "x:pin"}, headers=TOKEN) as resp:
                assert resp.status == 202
            assert (await next_frame(ws, "pin"))["post"]["key"] == "x:pin"
        async with http.ws_connect(url.replace("http", "ws") + "/ws") as ws:
            assert (await next_frame(ws, "hello"))["pinned"]["key"] == "x:pin"
            async with http.post(f"{url}/api/mod/unpin", json={}, headers=TOKEN) as resp:
                assert resp.status == 202
            assert (await next_frame(ws, "pin"))["post"] is None


async def test_bad_rules_are_refused_with_the_reason(redis: aioredis.Redis, keys: Keys, redis_url: str) -> None:
    async with night(redis_url, keys) as (url, _), aiohttp.ClientSession() as http:
        async with http.put(f"{url}/api/mod/rules", json={"wordz": ["x"]}, headers=TOKEN) as resp:
            assert resp.status == 400
            assert "wordz" in await resp.text()
        async with http.put(f"{url}/api/mod/rules", json={"words": ["oops"]}, headers=TOKEN) as resp:
            assert resp.status == 200
        async with http.get(f"{url}/api/mod/rules", headers=TOKEN) as resp:
            assert (await resp.json())["words"] == ["oops"]


async def test_a_rules_put_with_if_match_never_undoes_an_edit_made_since_the_rules_were_read(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    async with night(redis_url, keys) as (url, _), aiohttp.ClientSession() as http:
        async with http.get(f"{url}/api/mod/rules", headers=TOKEN) as resp:  # moderator A opens the form
            read, etag = await resp.json(), resp.headers["ETag"]
        async with http.post(f"{url}/api/mod/block", json={"account": "x:troll"}, headers=TOKEN) as resp:
            assert resp.status == 200  # moderator B blocks someone meanwhile
        stale = {**read, "words": ["spoiler"]}  # A saves the form as read, plus a word
        async with http.put(f"{url}/api/mod/rules", json=stale, headers={**TOKEN, "If-Match": etag}) as resp:
            assert resp.status == 412
            assert "changed since you read them" in await resp.text()
        async with http.get(f"{url}/api/mod/rules", headers=TOKEN) as resp:
            now, etag = await resp.json(), resp.headers["ETag"]
            assert (now["accounts"], now["words"]) == (["x:troll"], []), "the refused PUT changed nothing"
        mine = {**now, "words": ["spoiler"]}
        async with http.put(f"{url}/api/mod/rules", json=mine, headers={**TOKEN, "If-Match": etag}) as resp:
            assert resp.status == 200
            assert resp.headers["ETag"] != etag
            saved_etag = resp.headers["ETag"]
        async with http.get(f"{url}/api/mod/rules", headers=TOKEN) as resp:
            assert (await resp.json())["accounts"] == ["x:troll"]
            assert resp.headers["ETag"] == saved_etag
        for match in ("*", f'"other", {saved_etag}'):  # any rules; one of a list
            async with http.put(f"{url}/api/mod/rules", json=mine, headers={**TOKEN, "If-Match": match}) as resp:
                assert resp.status == 200
        async with http.put(f"{url}/api/mod/rules", json={}, headers=TOKEN) as resp:
            assert resp.status == 200  # without If-Match: replaced whole, as before
        async with http.get(f"{url}/api/mod/audit", headers=TOKEN) as resp:
            details = [e.get("detail") for e in (await resp.json())["items"]]
            assert details == ["rules replaced"] * 4 + ["block x:troll"], "a refused PUT is not audited"


def test_the_moderators_name_is_percent_decoded_utf8_without_control_characters() -> None:
    assert moderator_name("Dana") == "Dana"  # plain ASCII as is
    assert moderator_name("Zo%C3%AB%20K.") == "Zoë K."  # encodeURIComponent("Zoë K.")
    assert moderator_name("Zoe\u0308") == "Zoë"  # composed
    assert moderator_name("a%0Ab%E2%80%AEc%00") == "abc"  # no newline, bidi override or NUL in the audit log
    assert moderator_name("%FF") == "\ufffd"  # not UTF-8: marked, not dropped silently
    assert moderator_name("") == moderator_name("%00") == "moderator"
    assert moderator_name("x" * 100) == "x" * 80


async def test_a_decision_is_audited_under_the_name_sent_percent_encoded(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    headers = {**TOKEN, "X-Moderator": "Zo%C3%AB"}
    async with night(redis_url, keys) as (url, _), aiohttp.ClientSession() as http:
        async with http.post(f"{url}/api/mod/hide", json={"key": "x:1"}, headers=headers) as resp:
            assert resp.status == 202
        async with http.get(f"{url}/api/mod/audit", headers=TOKEN) as resp:
            [entry] = (await resp.json())["items"]
            assert entry["who"] == "Zoë"


async def test_a_console_waiting_for_changes_hears_of_a_decision_and_of_a_held_post_at_once(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    async with night(redis_url, keys) as (url, pub), aiohttp.ClientSession() as http:

        async def changes(after: str | None = None) -> str:
            query = "" if after is None else f"?after={after}"
            async with http.get(f"{url}/api/mod/changes{query}", headers=TOKEN) as resp:
                assert resp.status == 200
                return str((await resp.json())["id"])

        start = await changes()  # where they are now, at once
        waiting = asyncio.create_task(changes(start))  # answered when something changes (up to 5 s)
        async with http.post(f"{url}/api/mod/approval", json={"on": True}, headers=TOKEN) as resp:
            assert resp.status == 200
        switched = await waiting
        assert switched != start  # the audit log changed
        waiting = asyncio.create_task(changes(switched))
        await pub.publish([make_post("x:held", text="may I?")])  # held by the merge stage
        held = await waiting
        assert held != switched
        async with http.get(f"{url}/api/mod/queue", headers=TOKEN) as resp:
            assert [p["key"] for p in (await resp.json())["items"]] == ["x:held"]
        async with http.get(f"{url}/api/mod/changes?after=", headers=TOKEN) as resp:
            assert (await resp.json())["id"] == held  # no "after": the newest at once
        async with http.get(f"{url}/api/mod/changes?after=nonsense", headers=TOKEN) as resp:
            assert resp.status == 400 and "after must be a feed id" in await resp.text()


async def test_a_console_waiting_for_changes_is_answered_when_the_server_shuts_down(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    async with aiohttp.ClientSession() as http:
        async with night(redis_url, keys) as (url, _):
            async with http.get(f"{url}/api/mod/changes", headers=TOKEN) as resp:
                start = (await resp.json())["id"]
            waiting = asyncio.create_task(http.get(f"{url}/api/mod/changes?after={start}", headers=TOKEN))

            async def stats() -> dict[str, Any]:
                async with http.get(f"{url}/api/stats") as resp:
                    return dict(await resp.json())

            async with asyncio.timeout(5):
                while (await stats())["moderation"]["waiting"] < 1:  # noqa: ASYNC110  # no event to await
                    await asyncio.sleep(0.02)
        # the app shut down (handlers get 2 s, the wait is 5 s): the console had its answer, not a dropped connection
        resp = await waiting
        assert resp.status == 200 and (await resp.json())["id"] == start


async def test_a_block_in_a_chat_named_in_another_case_adds_to_that_chats_rules(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    async with night(redis_url, keys) as (url, _), aiohttp.ClientSession() as http:
        smbiz = {"words": ["mlm", "buy now"], "accounts": ["x:pitchbot"]}
        async with http.put(f"{url}/api/mod/rules", json={"chats": {"smbiz": smbiz}}, headers=TOKEN) as resp:
            assert resp.status == 200
        body = {"account": "x:newtroll", "chat": "#SMBiz"}
        async with http.post(f"{url}/api/mod/block", json=body, headers=TOKEN) as resp:
            assert resp.status == 200
            assert (await resp.json())["chats"] == {"smbiz": {**smbiz, "accounts": ["x:pitchbot", "x:newtroll"]}}
        twice = {"chats": {"smbiz": {"words": ["mlm"]}, "#SMBIZ": {"accounts": ["x:a"]}}}
        async with http.put(f"{url}/api/mod/rules", json=twice, headers=TOKEN) as resp:
            assert resp.status == 400
            assert "'smbiz' is in 'chats' twice" in await resp.text()


async def test_moderators_acting_at_once_each_keep_their_change(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    async with night(redis_url, keys) as (url, _), aiohttp.ClientSession() as http:

        async def post(path: str, body: dict[str, Any]) -> int:
            async with http.post(f"{url}/api/mod/{path}", json=body, headers=TOKEN) as resp:
                return resp.status

        blocks = [post("block", {"account": f"x:troll{n}"}) for n in range(10)]
        assert await asyncio.gather(*blocks, post("approval", {"on": True})) == [200] * 11
        async with http.get(f"{url}/api/mod/rules", headers=TOKEN) as resp:
            rules = await resp.json()
        assert sorted(rules["accounts"]) == sorted(f"x:troll{n}" for n in range(10))
        assert rules["approval"] is True


async def test_a_decision_on_a_post_not_waiting_is_a_404_and_is_not_audited(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    async with night(redis_url, keys) as (url, _), aiohttp.ClientSession() as http:
        for action in ("approve", "reject"):
            async with http.post(f"{url}/api/mod/{action}", json={"key": "x:never"}, headers=TOKEN) as resp:
                assert resp.status == 404
                assert "x:never is not waiting for approval" in await resp.text()
        async with http.get(f"{url}/api/mod/audit", headers=TOKEN) as resp:
            assert (await resp.json())["items"] == []


async def test_a_body_key_a_route_does_not_take_is_refused_by_name(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    async with night(redis_url, keys) as (url, _), aiohttp.ClientSession() as http:
        for path, body in (("approval", {"on": True, "x": 1}), ("block", {"acount": "x:bob"}), ("hide", {"kye": "k"})):
            async with http.post(f"{url}/api/mod/{path}", json=body, headers=TOKEN) as resp:
                assert resp.status == 400, path
                assert "unknown key(s)" in await resp.text()
        async with http.get(f"{url}/api/mod/rules", headers=TOKEN) as resp:
            assert (await resp.json())["approval"] is False


async def test_the_bearer_scheme_is_read_in_any_case(redis: aioredis.Redis, keys: Keys, redis_url: str) -> None:
    async with night(redis_url, keys) as (url, _), aiohttp.ClientSession() as http:
        for scheme, status in (("bearer", 200), ("BEARER", 200), ("Basic", 401), ("Bearer", 200)):
            async with http.get(f"{url}/api/mod/rules", headers={"Authorization": f"{scheme} m0d"}) as resp:
                assert resp.status == status, scheme
        async with http.get(f"{url}/api/mod/rules", headers={"Authorization": "Bearer m0dd"}) as resp:
            assert resp.status == 401
