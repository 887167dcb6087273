"""POST /api/posts: the webhook that takes a Post or any platform payload."""

from __future__ import annotations

import json

import aiohttp
import redis.asyncio as aioredis

from mixer.codec import unpack_post
from mixer.keys import Keys
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
                assert (await resp.json())["webhook"]["malformed"] == 2
    assert answer["published"] == 2
    assert [e["index"] for e in answer["errors"]] == [1, 3]
    assert await chat_posts(redis, keys, "smbiz") == ["webhook:1"]
    assert await chat_posts(redis, keys, "edchat") == ["webhook:2"]


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
