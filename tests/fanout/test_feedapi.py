"""``GET /api/feed`` does bounded Redis work whatever the feed's length (issue 16, item 3).

Counted on a private redis-server (nothing else talks to it) with ``INFO commandstats``: the stream reads and
post-index lookups a request makes. The follower's XREAD and the stats task's HGETALL are other commands.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import msgpack
import pytest
import redis.asyncio as aioredis

from mixer.codec import FIELD, pack_post
from mixer.embedded import EmbeddedRedis
from mixer.fanout.feedapi import FEED_READS_MAX
from mixer.keys import Keys
from tests.helpers import make_post
from tests.servers import running_app, settings_for

FEED_COMMANDS = ("xrange", "xrevrange", "hmget")


@pytest.fixture
def private_redis() -> Iterator[str]:
    with EmbeddedRedis() as server:
        yield server.url


async def feed_commands(redis: aioredis.Redis) -> int:
    stats = await redis.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in FEED_COMMANDS)


async def fill(redis: aioredis.Redis, keys: Keys, count: int) -> None:
    """``count`` posts of #smbiz in the feed and the post index, as the merge stage leaves them."""
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(count):
            post = make_post(f"x:{n}", ("smbiz",))
            feed_id = f"{1_700_000_000_000 + n}-0"
            pipe.xadd(keys.feed, {FIELD: pack_post(post)}, id=feed_id)
            pipe.hset(keys.index, post.key, msgpack.packb({**post.to_dict(), "id": feed_id}))
        await pipe.execute()


async def test_a_narrow_filter_costs_the_same_redis_work_on_a_short_and_a_long_feed(private_redis: str) -> None:
    redis = aioredis.Redis.from_url(private_redis)
    spent: dict[tuple[int, str], int] = {}
    try:
        for length in (5_000, 20_000):
            keys = Keys(prefix=f"feed{length}")
            await fill(redis, keys, length)
            async with running_app(settings_for(keys.prefix), private_redis) as srv, aiohttp.ClientSession() as http:
                for query in ("since=0-0&chats=journchat&limit=1", "chats=journchat&limit=1"):
                    before = await feed_commands(redis)
                    async with http.get(f"{srv.url}/api/feed?{query}") as resp:
                        body = await resp.json()
                    spent[length, query] = await feed_commands(redis) - before
                    assert body["items"] == [] and body["partial"] is True, (length, query)
    finally:
        await redis.aclose()
    for query in ("since=0-0&chats=journchat&limit=1", "chats=journchat&limit=1"):
        assert spent[5_000, query] == spent[20_000, query] <= 2 * FEED_READS_MAX, spent


async def test_a_filter_naming_no_configured_chat_reads_nothing(private_redis: str) -> None:
    redis = aioredis.Redis.from_url(private_redis)
    keys = Keys(prefix="nomatch")
    try:
        await fill(redis, keys, 500)
        async with running_app(settings_for(keys.prefix), private_redis) as srv, aiohttp.ClientSession() as http:
            for query in ("since=0-0&chats=nomatch&limit=1", "chats=nomatch,other&limit=1000"):
                before = await feed_commands(redis)
                async with http.get(f"{srv.url}/api/feed?{query}") as resp:
                    body = await resp.json()
                assert await feed_commands(redis) == before, query
                assert body["items"] == [] and body["partial"] is False
    finally:
        await redis.aclose()


async def test_a_since_whose_gap_was_trimmed_or_lies_beyond_the_feed_is_told_reset(private_redis: str) -> None:
    # /ws said reset, while /api/feed returned the rest of the gap with nothing to say part of it was gone
    redis = aioredis.Redis.from_url(private_redis)
    keys = Keys(prefix="trimmed")
    try:
        await fill(redis, keys, 100)
        async with running_app(settings_for(keys.prefix), private_redis) as srv, aiohttp.ClientSession() as http:

            async def feed(since: str) -> dict[str, Any]:
                async with http.get(f"{srv.url}/api/feed?since={since}&limit=1000") as resp:
                    body: dict[str, Any] = await resp.json()
                    return body

            whole = await feed("1700000000010-0")
            assert whole["reset"] is False and len(whole["items"]) == 89
            await redis.xtrim(keys.feed, minid="1700000000050-0")
            cut = await feed("1700000000010-0")
            assert cut["reset"] is True and len(cut["items"]) == 50
            assert (await feed("1700000000060-0"))["reset"] is False
            assert (await feed("1800000000000-0"))["reset"] is True  # beyond every id the feed gave: it went back
    finally:
        await redis.aclose()
