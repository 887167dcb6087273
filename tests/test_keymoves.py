"""``mixer.keymoves``: keys of the layout before per-event hash tags are renamed when a role starts."""

from __future__ import annotations

import dataclasses

import redis.asyncio as aioredis

from mixer.keymoves import adopt_old_keys, new_name
from mixer.keys import Keys
from mixer.runner import redis_url_for
from mixer.settings import Settings


async def write_old_layout(redis: aioredis.Redis, keys: Keys) -> None:
    p = keys.prefix
    await redis.xadd(f"{p}:{{feed}}:feed", {"p": b"card"})
    await redis.hset(f"{p}:{{feed}}:merge:cursor", "smbiz", "5-0")
    await redis.set(f"{p}:{{profiles}}:bluesky:did:plc:abc", "{}", ex=600)
    await redis.hset(f"{p}:ingest:stats", "replay", "{}")
    await redis.xadd(f"{p}:mod:audit", {"a": b"hide"})


async def test_an_old_layout_night_is_renamed_to_the_event_hash_tag(redis: aioredis.Redis, keys: Keys) -> None:
    await write_old_layout(redis, keys)
    assert await adopt_old_keys(redis, keys) == 5
    assert await redis.xlen(keys.feed) == 1
    assert await redis.hget(keys.merge_cursor, "smbiz") == b"5-0"
    assert 0 < await redis.ttl(keys.bluesky_profile("did:plc:abc")) <= 600  # a cache entry keeps its expiry
    assert await redis.hget(keys.ingest_stats, "replay") == b"{}"
    assert await redis.xlen(keys.mod_audit) == 1
    left = [k async for k in redis.scan_iter(match=keys.pattern()) if b"{feed}" in k or b"{profiles}" in k]
    assert left == []
    assert await adopt_old_keys(redis, keys) == 0


async def test_a_key_of_the_new_layout_is_never_overwritten(redis: aioredis.Redis, keys: Keys) -> None:
    await redis.xadd(f"{keys.prefix}:{{feed}}:feed", {"p": b"old"})
    await redis.xadd(keys.feed, {"p": b"new"})
    await redis.xadd(keys.feed, {"p": b"newer"})
    assert await adopt_old_keys(redis, keys) == 0
    assert await redis.xlen(keys.feed) == 2


async def test_another_prefix_is_left_alone(redis: aioredis.Redis, keys: Keys) -> None:
    other = Keys(f"{keys.prefix}x")
    await redis.xadd(f"{other.prefix}:{{feed}}:feed", {"p": b"x"})
    try:
        assert await adopt_old_keys(redis, keys) == 0
        assert await redis.exists(f"{other.prefix}:{{feed}}:feed")
    finally:
        await redis.delete(f"{other.prefix}:{{feed}}:feed")


def test_new_names_carry_the_prefix_as_hash_tag() -> None:
    keys = Keys("ev")
    assert new_name(keys, "ev:{feed}:chat:smbiz") == keys.chat("smbiz")
    assert new_name(keys, "ev:{profiles}:bluesky:did:x") == keys.bluesky_profile("did:x")
    assert new_name(keys, "ev:mod:audit") == keys.mod_audit


async def test_every_role_renames_the_old_layout_as_it_starts(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    await write_old_layout(redis, keys)
    settings = dataclasses.replace(Settings(), redis_url=redis_url, key_prefix=keys.prefix)
    async with redis_url_for(settings):
        assert await redis.xlen(keys.feed) == 1
