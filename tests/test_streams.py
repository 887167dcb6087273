"""Stream reads (mixer.streams): XREAD replies as Redis sends them, and when a read blocks at all."""

from __future__ import annotations

import uuid

import redis.asyncio as aioredis

from mixer.codec import EDIT_FIELD, FIELD, RETRACT_FIELD
from mixer.streams import block_for, dedicated_client, read_new


def test_a_wait_under_a_millisecond_does_not_block_and_longer_ones_block_that_long() -> None:
    # Redis ends a blocked read only on a server tick: BLOCK 1 lasts up to 100 ms at the default hz 10
    assert [block_for(w) for w in (-50, 0, 0.4, 0.999)] == [None] * 4
    assert [block_for(w) for w in (1, 1.9, 250.0)] == [1, 1, 250]


async def test_entries_read_as_redis_sent_them_and_through_redis_pys_parser_are_the_same(redis_url: str) -> None:
    url = redis_url
    key = f"test-streams:{uuid.uuid4().hex[:8]}"
    raw_reader = dedicated_client(url, 1000)  # takes XREAD's reply as sent
    parsed_reader = aioredis.Redis.from_url(url)  # redis-py's own reply parser
    try:
        await parsed_reader.xadd(key, {FIELD: b"post"})
        await parsed_reader.xadd(key, {b"x": b"other", EDIT_FIELD: b"edit"})  # a known kind among other fields
        await parsed_reader.xadd(key, {b"x": b"unknown"})
        await parsed_reader.xadd(key, {RETRACT_FIELD: b"gone", FIELD: b"post too"})  # the first kind in KINDS wins
        raw = await read_new(raw_reader, {key: "0-0"}, None, 10)
        parsed = await read_new(parsed_reader, {key: "0-0"}, None, 10)
        assert raw == parsed
        assert [(payload, kind) for _, payload, kind in raw[key]] == [
            (b"post", FIELD),
            (b"edit", EDIT_FIELD),
            (b"", b""),
            (b"post too", FIELD),
        ]
        assert await read_new(raw_reader, {key: raw[key][-1][0]}, None, 10) == {}
    finally:
        await parsed_reader.delete(key)
        await raw_reader.aclose()
        await parsed_reader.aclose()
