"""POST /api/posts: the webhook that takes a Post or any platform payload."""

from __future__ import annotations

import io
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import msgpack
import redis.asyncio as aioredis

from mixer.codec import EDIT_FIELD, FIELD, RETRACT_FIELD, unpack_post
from mixer.keys import Keys
from mixer.models import LIMITS
from mixer.settings import ChatSettings
from mixer.streams import read_range
from tests.helpers import FIXTURES as FIXTURES_DIR
from tests.servers import running_app, settings_for

TOKEN = {"Authorization": "Bearer s3cret"}
POST = {
    "key": "webhook:1",
    "source": "webhook",
    "chats": ["SmBiz"],
    "author": {"handle": "ann", "name": "Ann", "avatar": None},
    "text": "Q1: what brought you here? #smbiz",
    "url": "https://example.test/1",
    "created": 1_700_000_000_000,
}


async def chat_posts(redis: aioredis.Redis, keys: Keys, chat: str) -> list[str]:
    return [unpack_post(eid, raw).key for eid, raw, _ in await read_range(redis, keys.chat(chat), "0-0")]


async def test_a_post_with_the_token_is_published_to_its_chat(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    async with running_app(settings_for(keys.prefix, webhook_token="s3cret"), redis_url) as srv:
        async with aiohttp.ClientSession() as http, http.post(srv.url + "/api/posts", json=POST, headers=TOKEN) as resp:
            assert resp.status == 202
            assert (await resp.json())["published"] == 1
    assert await chat_posts(redis, keys, "smbiz") == ["webhook:1"]


async def test_without_the_token_nothing_is_published(redis: aioredis.Redis, keys: Keys, redis_url: str) -> None:
    async with running_app(settings_for(keys.prefix, webhook_token="s3cret"), redis_url) as srv:
        async with aiohttp.ClientSession() as http:
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                async with http.post(srv.url + "/api/posts", json=POST, headers=headers) as resp:
                    assert resp.status == 401
    assert await chat_posts(redis, keys, "smbiz") == []


async def test_the_webhook_is_off_without_a_configured_token(redis: aioredis.Redis, keys: Keys, redis_url: str) -> None:
    async with running_app(settings_for(keys.prefix), redis_url) as srv:
        async with aiohttp.ClientSession() as http, http.post(srv.url + "/api/posts", json=POST, headers=TOKEN) as resp:
            assert resp.status == 404


async def test_good_records_are_kept_when_others_in_the_body_are_bad(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    second = {**POST, "key": "webhook:2", "chats": ["edchat"]}
    body = [POST, {"no": "post"}, second, {**POST, "created": "yesterday"}]
    async with running_app(settings_for(keys.prefix, webhook_token="s3cret"), redis_url) as srv:
        async with aiohttp.ClientSession() as http, http.post(srv.url + "/api/posts", json=body, headers=TOKEN) as resp:
            assert resp.status == 202
            answer = await resp.json()
        async with aiohttp.ClientSession() as http:
            async with http.post(srv.url + "/api/posts", data=b"{not json", headers=TOKEN) as resp:
                assert resp.status == 400
            async with http.get(srv.url + "/api/stats") as resp:
                assert (await resp.json())["webhook"]["malformed"] == 3  # two records, and the body not JSON
    assert answer["published"] == 2
    assert [e["index"] for e in answer["errors"]] == [1, 3]
    assert await chat_posts(redis, keys, "smbiz") == ["webhook:1"]
    assert await chat_posts(redis, keys, "edchat") == ["webhook:2"]


async def test_a_created_in_seconds_or_years_ahead_is_an_error_and_the_good_records_are_kept(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    # a sender's seconds were shown as a post from 1970, and a microsecond stamp stretched a report to the year 5138
    now = int(time.time() * 1000)
    seconds = {**POST, "key": "webhook:s", "created": now // 1000}
    ahead = {**POST, "key": "webhook:f", "created": now * 1000}
    old = {**POST, "key": "webhook:old", "created": 1_234_567_890_123}  # a recorded night of 2009 is a fine time
    edit_ahead = {"type": "edit", "post": {**POST, "created": now + 2 * 86_400_000}}
    async with running_app(settings_for(keys.prefix, webhook_token="s3cret"), redis_url) as srv:
        async with aiohttp.ClientSession() as http:
            async with http.post(srv.url + "/api/posts", json=[seconds, POST, ahead, old], headers=TOKEN) as resp:
                assert resp.status == 202
                answer = await resp.json()
            async with http.post(srv.url + "/api/posts", json=edit_ahead, headers=TOKEN) as resp:
                assert resp.status == 400
                assert "more than a day after" in (await resp.json())["errors"][0]["reason"]
            async with http.get(srv.url + "/api/stats") as resp:
                assert (await resp.json())["webhook"]["malformed"] == 3
    assert answer["published"] == 2
    assert [e["index"] for e in answer["errors"]] == [0, 2]
    assert "not seconds" in answer["errors"][0]["reason"]
    assert await chat_posts(redis, keys, "smbiz") == ["webhook:1", "webhook:old"]


async def test_every_post_is_stamped_when_ingested_and_edits_and_retractions_count_as_published(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    edit = {"type": "edit", "post": {**POST, "text": "Q1: what brought YOU here? #smbiz", "at": 5}}
    retract = {"type": "retract", "key": "webhook:1", "source": "webhook"}
    async with running_app(settings_for(keys.prefix, webhook_token="s3cret"), redis_url) as srv:
        async with aiohttp.ClientSession() as http:
            sent = int(time.time() * 1000)
            for body in ({**POST, "at": 1}, edit, retract):
                async with http.post(srv.url + "/api/posts", json=body, headers=TOKEN) as resp:
                    assert resp.status == 202
                    assert (await resp.json())["published"] == 1
    entries = await read_range(redis, keys.chat("smbiz"), "0-0")
    assert [kind for _, _, kind in entries] == [FIELD, EDIT_FIELD, RETRACT_FIELD]
    post, edited = unpack_post("", entries[0][1]), unpack_post("", entries[1][1])
    assert post.created == POST["created"] and post.at >= sent  # not the sender's 1, nor its created
    assert edited.at >= post.at > 1


async def test_a_record_in_no_followed_chat_is_listed_and_counted_and_nothing_is_a_400(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    elsewhere = {**POST, "key": "webhook:9", "chats": ["zzz"]}
    async with running_app(settings_for(keys.prefix, webhook_token="s3cret"), redis_url) as srv:
        async with aiohttp.ClientSession() as http:
            async with http.post(srv.url + "/api/posts", json=[POST, elsewhere], headers=TOKEN) as resp:
                assert resp.status == 202
                answer = await resp.json()
            assert answer["published"] == 1
            assert answer["errors"] == [{"index": 1, "reason": "in no chat followed now (#zzz)"}]
            async with http.post(srv.url + "/api/posts", json=elsewhere, headers=TOKEN) as resp:
                assert resp.status == 400  # nothing in the body could be used
            async with http.post(srv.url + "/api/posts", json=[], headers=TOKEN) as resp:
                assert resp.status == 400
                assert "no records" in await resp.text()
            async with http.get(srv.url + "/api/stats") as resp:
                assert (await resp.json())["webhook"]["skipped:no_chat"] == 2
    assert await chat_posts(redis, keys, "smbiz") == ["webhook:1"]


async def test_a_raw_platform_payload_is_parsed(redis: aioredis.Redis, keys: Keys, redis_url: str) -> None:
    fixture = FIXTURES_DIR / "bluesky" / "subscribe_golden_v1.jsonl"
    events = [json.loads(line) for line in fixture.read_text().splitlines() if line.strip()]
    post_event = next(e for e in events if e.get("commit", {}).get("collection") == "app.bsky.feed.post")
    post_event["commit"]["record"]["text"] += " #smbiz"
    post_event["commit"]["record"]["tags"] = ["smbiz"]
    async with running_app(settings_for(keys.prefix, webhook_token="s3cret"), redis_url) as srv:
        async with aiohttp.ClientSession() as http:
            async with http.post(srv.url + "/api/posts", json=post_event, headers=TOKEN) as resp:
                assert resp.status == 202, await resp.text()
    [key] = await chat_posts(redis, keys, "smbiz")
    assert key.startswith("bluesky:at://")


async def test_a_body_over_the_size_cap_is_refused_with_413_saying_why_and_nothing_is_published(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    huge = json.dumps({**POST, "text": "x" * 50_000_000}).encode()  # the 50 MB post of issue 14

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the cap must hold while reading
        for start in range(0, len(huge), 1 << 20):
            yield huge[start : start + (1 << 20)]

    async with running_app(settings_for(keys.prefix, webhook_token="s3cret"), redis_url) as srv:
        async with aiohttp.ClientSession() as http:
            for body in (io.BytesIO(huge), chunked()):
                async with http.post(srv.url + "/api/posts", data=body, headers=TOKEN) as resp:
                    assert resp.status == 413
                    assert "POST /api/posts takes at most 1,048,576 bytes a request" in await resp.text()
            async with http.post(srv.url + "/api/posts", json=POST, headers=TOKEN) as resp:
                assert resp.status == 202  # the server is fine afterwards
    assert await chat_posts(redis, keys, "smbiz") == ["webhook:1"]


async def test_a_long_text_under_the_cap_is_cut_to_the_text_limit_and_counted(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    long = {**POST, "text": "Q1: " + "y" * 500_000, "author": {"handle": "ann", "name": "N" * 5_000}}
    async with running_app(settings_for(keys.prefix, webhook_token="s3cret"), redis_url) as srv:
        async with aiohttp.ClientSession() as http:
            async with http.post(srv.url + "/api/posts", json=long, headers=TOKEN) as resp:
                assert resp.status == 202, await resp.text()
            async with http.get(srv.url + "/api/stats") as resp:
                counted = (await resp.json())["webhook"]
    [(eid, raw, _)] = await read_range(redis, keys.chat("smbiz"), "0-0")
    post = unpack_post(eid, raw)
    assert len(post.text) == LIMITS.text and post.text.endswith("\u2026") and post.text.startswith("Q1: yyy")
    assert len(post.author.name) == LIMITS.name
    assert counted["trimmed:text_cut"] == 1 and counted["trimmed:name_cut"] == 1


async def test_a_mastodon_delete_retracts_a_status_the_webhook_received_before(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    status = json.loads((FIXTURES_DIR / "mastodon" / "test_hashtag_tl.02.json").read_text())[0]  # tagged #hoot
    settings = settings_for(keys.prefix, webhook_token="s3cret", chats=(ChatSettings("hoot", "Hoot", "#123456"),))
    async with running_app(settings, redis_url) as srv:
        async with aiohttp.ClientSession() as http:
            for record in (status, {"event": "delete", "payload": status["id"]}):  # two requests, as they happen
                async with http.post(srv.url + "/api/posts", json=record, headers=TOKEN) as resp:
                    assert resp.status == 202, await resp.text()
                    assert (await resp.json())["events"] == 1
    entries = await redis.xrange(keys.chat("hoot"))
    assert [msgpack.unpackb(f[RETRACT_FIELD])["key"] for _, f in entries if RETRACT_FIELD in f] == [
        "mastodon:" + status["uri"]
    ]
