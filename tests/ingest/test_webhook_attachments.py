"""Attachments through ``POST /api/posts`` and the whole way to the screens: the webhook's checks, then a real
Redis, the merge and shaping stages as `mixer run` starts them, and websocket clients (JSON and msgpack)."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import aiohttp
import msgpack
import redis.asyncio as aioredis

from mixer.codec import unpack_post
from mixer.keys import Keys
from mixer.runner import merge_forever
from mixer.streams import read_range
from tests.helpers import FIXTURES
from tests.servers import running_app, settings_for

TOKEN = {"Authorization": "Bearer s3cret"}
PHOTO = {
    "kind": "image",
    "url": "https://files.example/a.jpg",
    "preview": "https://files.example/a_small.jpg",
    "alt": "Six people around a table",
    "width": 640,
    "height": 480,
}
POST = {
    "key": "webhook:1",
    "source": "webhook",
    "chats": ["smbiz"],
    "author": {"handle": "ann", "name": "Ann", "avatar": None},
    "text": "Our table #smbiz",
    "url": "https://example.test/1",
    "created": 1_700_000_000_000,
    "attachments": [PHOTO, {"kind": "image", "url": "javascript:alert(1)"}],
}


async def chat_items(redis: aioredis.Redis, keys: Keys, chat: str) -> list[dict[str, Any]]:
    return [unpack_post(eid, raw).to_dict() for eid, raw, _ in await read_range(redis, keys.chat(chat), "0-0")]


async def test_the_webhook_takes_attachments_drops_a_non_http_one_and_refuses_a_wrong_shape_naming_it(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    bad = {
        **POST,
        "key": "webhook:2",
        "attachments": [{"kind": "image", "url": "https://x.example/b.png", "width": "9"}],
    }
    async with running_app(settings_for(keys.prefix, webhook_token="s3cret"), redis_url) as srv:
        async with aiohttp.ClientSession() as http:
            async with http.post(srv.url + "/api/posts", json=[POST, bad], headers=TOKEN) as resp:
                assert resp.status == 202
                answer = await resp.json()
            async with http.get(srv.url + "/api/stats") as resp:
                counters = (await resp.json())["webhook"]
    assert answer["published"] == 1
    assert answer["errors"] == [
        {"index": 1, "reason": "'attachments[0].width' must be a whole number of pixels from 1 to 100,000"}
    ]
    assert counters["malformed"] == 1 and counters["trimmed:attachment_dropped"] == 1
    (item,) = await chat_items(redis, keys, "smbiz")
    assert item["attachments"] == [PHOTO] and item["media"] == [PHOTO["url"]]


async def test_a_posts_attachments_reach_websocket_clients_intact_and_an_edited_alt_text_follows(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    status = json.loads((FIXTURES / "media" / "mastodon_status.json").read_text())
    status["tags"] = [{"name": "smbiz", "url": "https://files.mastodon.social/tags/smbiz"}]
    edited = copy.deepcopy(status)
    edited["media_attachments"][0]["description"] = "Six people around a table with laptops"
    settings = settings_for(keys.prefix, webhook_token="s3cret")
    stages = asyncio.create_task(merge_forever(settings, redis_url))
    try:
        async with running_app(settings, redis_url) as srv, aiohttp.ClientSession() as http:
            async with http.ws_connect(srv.ws_url) as ws, http.ws_connect(srv.ws_url + "?format=msgpack") as wsm:
                await ws.receive_json(timeout=10)  # hello
                await wsm.receive_bytes(timeout=10)
                async with http.post(
                    srv.url + "/api/posts", json={"event": "update", "payload": status}, headers=TOKEN
                ):
                    pass
                item = await next_item(ws, "posts")
                packed = await next_item(wsm, "posts")
                expected = [
                    {
                        "kind": "image",
                        "url": status["media_attachments"][0]["url"],
                        "preview": status["media_attachments"][0]["preview_url"],
                        "alt": "test media description",
                        "width": 640,
                        "height": 480,
                    },
                    {
                        "kind": "video",
                        "url": status["media_attachments"][1]["url"],
                        "preview": status["media_attachments"][1]["preview_url"],
                        "width": 1280,
                        "height": 720,
                    },
                    {"kind": "audio", "url": status["media_attachments"][2]["url"]},
                ]
                assert item["attachments"] == packed["attachments"] == expected
                assert item["media"] == [a["url"] for a in expected]
                body = {"event": "status.update", "payload": edited}
                async with http.post(srv.url + "/api/posts", json=body, headers=TOKEN):
                    pass
                update = await next_item(ws, "update")
                assert update["attachments"][0]["alt"] == "Six people around a table with laptops"
                assert update["attachments"][1:] == expected[1:]
            async with http.get(srv.url + "/api/feed?limit=5") as resp:
                (feed_item,) = (await resp.json())["items"]
            assert feed_item["attachments"][0]["alt"] == "Six people around a table with laptops"
    finally:
        stages.cancel()
        await asyncio.gather(stages, return_exceptions=True)


async def next_item(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    """The first item of the next ``kind`` frame (JSON text or msgpack binary)."""
    while True:
        message = await ws.receive(timeout=10)
        frame = json.loads(message.data) if message.type == aiohttp.WSMsgType.TEXT else msgpack.unpackb(message.data)
        if frame["type"] == kind:
            return frame["items"][0]  # type: ignore[no-any-return]
