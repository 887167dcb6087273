from __future__ import annotations

import redis.asyncio as aioredis

from mixer.codec import FIELD, unpack_post
from mixer.ingest import Publisher
from mixer.keys import Keys
from mixer.merge import MergeStage, ReorderBuffer
from mixer.models import Post
from mixer.streams import id_key, read_range

from .helpers import make_post

CHATS = ("smbiz", "edchat", "journchat")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def feed_posts(redis: aioredis.Redis, keys: Keys) -> list[Post]:
    return [unpack_post(eid, raw) for eid, raw in await read_range(redis, keys.feed, "0-0", count=10_000)]


def stage(redis: aioredis.Redis, keys: Keys, clock: FakeClock, window: float = 0.5) -> MergeStage:
    return MergeStage(redis, keys, CHATS, window=window, clock=clock)


async def test_same_post_in_two_chats_is_written_once_with_both_tags(redis: aioredis.Redis, keys: Keys) -> None:
    pub = Publisher(redis, keys, CHATS, 1000)
    await pub.publish([make_post("x:1", ("smbiz",))])
    await pub.publish([make_post("x:1", ("edchat",))])
    clock = FakeClock()
    merge = stage(redis, keys, clock)
    await merge.load_cursors()
    assert await merge.step(max_block=0.01) == 0  # held for its window
    clock.now += 1
    assert await merge.step(max_block=0.01) == 1
    [post] = await feed_posts(redis, keys)
    assert post.key == "x:1"
    assert set(post.chats) == {"smbiz", "edchat"}


async def test_posts_leave_in_created_order_within_the_window(redis: aioredis.Redis, keys: Keys) -> None:
    pub = Publisher(redis, keys, CHATS, 1000)
    await pub.publish([make_post("b", ("smbiz",), created=2000), make_post("c", ("smbiz",), created=3000)])
    await pub.publish([make_post("a", ("journchat",), created=1000)])
    clock = FakeClock()
    merge = stage(redis, keys, clock)
    await merge.load_cursors()
    await merge.step(max_block=0.01)
    clock.now += 1
    await merge.step(max_block=0.01)
    assert [p.key for p in await feed_posts(redis, keys)] == ["a", "b", "c"]


async def test_a_post_seen_before_a_restart_is_not_written_again(redis: aioredis.Redis, keys: Keys) -> None:
    pub = Publisher(redis, keys, CHATS, 1000)
    await pub.publish([make_post("x:1", ("smbiz",))])
    clock = FakeClock()
    first = stage(redis, keys, clock, window=0)
    await first.load_cursors()
    await first.step(max_block=0.01)
    # the same post reaches another chat much later, and the merge stage restarts in between
    await pub.publish([make_post("x:1", ("edchat",)), make_post("x:2", ("edchat",))])
    second = stage(redis, keys, clock, window=0)
    await second.load_cursors()
    await second.step(max_block=0.01)
    assert [p.key for p in await feed_posts(redis, keys)] == ["x:1", "x:2"]
    assert second.counters["duplicate"] == 1


async def test_malformed_entry_is_counted_and_skipped(redis: aioredis.Redis, keys: Keys, caplog) -> None:  # type: ignore[no-untyped-def]
    await redis.xadd(keys.chat("smbiz"), {FIELD: b"\xc1 not msgpack"})
    await redis.xadd(keys.chat("smbiz"), {b"other": b"field"})
    await Publisher(redis, keys, CHATS, 1000).publish([make_post("good")])
    merge = stage(redis, keys, FakeClock(), window=0)
    await merge.load_cursors()
    await merge.step(max_block=0.01)
    assert [p.key for p in await feed_posts(redis, keys)] == ["good"]
    assert merge.counters["malformed"] == 2
    assert "malformed entry" in caplog.text and "smbiz" in caplog.text


async def test_cursor_never_passes_a_post_still_held(redis: aioredis.Redis, keys: Keys) -> None:
    pub = Publisher(redis, keys, CHATS, 1000)
    await pub.publish([make_post("x:1")])
    clock = FakeClock()
    merge = stage(redis, keys, clock)
    await merge.load_cursors()
    await merge.step(max_block=0.01)
    [(held_id, _)] = await read_range(redis, keys.chat("smbiz"), "0-0")
    cursor = await redis.hget(keys.merge_cursor, "smbiz")
    assert cursor is not None and id_key(cursor.decode()) < id_key(held_id)
    # a restart now re-reads the held post and writes it
    again = stage(redis, keys, clock, window=0)
    await again.load_cursors()
    await again.step(max_block=0.01)
    assert [p.key for p in await feed_posts(redis, keys)] == ["x:1"]


def test_reorder_buffer_releases_the_oldest_when_over_capacity() -> None:
    buf = ReorderBuffer(window=60, max_pending=2)
    for i, key in enumerate(["a", "b", "c"]):
        buf.add("smbiz", f"1-{i}", make_post(key), now=0)
    assert [p.post.key for p in buf.pop_ready(now=0)] == ["a"]
    assert buf.safe_cursor("smbiz", "1-2") == "1-0"
