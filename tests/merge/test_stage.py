from __future__ import annotations

import asyncio
import logging
import random
import string
from pathlib import Path

import msgpack
import pytest
import redis.asyncio as aioredis

from mixer.codec import ACTION_FIELD, FIELD, pack_post
from mixer.ingest.publish import Publisher
from mixer.keys import Keys
from mixer.merge.lease import LeaseLost
from mixer.merge.stage import ACTIONS_CURSOR, MergeStage
from mixer.models import Edit
from mixer.rules import Rules
from mixer.streams import dedicated_client, id_key, read_range
from tests.helpers import FakeClock, feed_entries, feed_posts, logged, make_post
from tests.redis_server import outage, restartable_redis

CHATS = ("smbiz", "edchat", "journchat")


async def test_new_rules_are_compiled_off_the_event_loop(redis: aioredis.Redis, keys: Keys) -> None:
    # 1,000 words of 60 letters: within the rules' limits, about a second to compile (10,000 of 96 took 38 s).
    rng = random.Random(1)
    words = tuple("".join(rng.choice(string.ascii_lowercase) for _ in range(60)) for _ in range(1000))
    merge = stage(redis, keys, FakeClock())
    await redis.set(keys.mod_rules, Rules(words=words).to_json())
    loading = asyncio.create_task(merge.load_rules())
    turns = 0
    while not loading.done():  # other tasks keep their turns while the rules compile
        turns += 1
        await asyncio.sleep(0)
    await loading
    assert merge.moderator.rules.words == words
    assert turns > 100  # compiled on the loop: the read's few turns, then nothing until it is done


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
    clock.now += 1
    second = stage(redis, keys, clock, window=0)
    await second.load_cursors()
    await second.step(max_block=0.01)
    assert [p.key for p in await feed_posts(redis, keys)] == ["x:1", "x:2"]
    kinds = [(kind, entry["key"]) for kind, entry in await feed_entries(redis, keys)]
    assert kinds == [("p", "x:1"), ("u", "x:1"), ("p", "x:2")]  # the new chat reaches screens as an update
    [update] = [entry for kind, entry in await feed_entries(redis, keys) if kind == "u"]
    assert update["chats"] == ["smbiz", "edchat"]


async def test_an_edit_that_brings_a_blocked_word_retracts_the_card(redis: aioredis.Redis, keys: Keys) -> None:
    pub = Publisher(redis, keys, CHATS, 1000)
    post = make_post("x:1", text="a fine post")
    await pub.publish([post, make_post("x:2", text="another")])
    clock = FakeClock()
    merge = MergeStage(redis, keys, CHATS, window=0, clock=clock, rules=Rules(words=("spam",)))
    await merge.load_cursors()
    await merge.step(max_block=0.01)
    await pub.publish([Edit(post.replace(text="now with spam", at=post.at + 5))])
    clock.now += 1
    await merge.step(max_block=0.01)
    entries = await feed_entries(redis, keys)
    [card] = [entry for kind, entry in entries if kind == "p" and entry["key"] == "x:1"]
    assert [kind for kind, _ in entries] == ["p", "p", "r"] and entries[-1][1]["ids"] == [card["id"]]
    assert merge.counters["blocked_edit"] == 1


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


async def test_copies_of_an_entry_in_two_chats_make_one_card_and_a_bad_one_counts_twice(
    redis: aioredis.Redis, keys: Keys
) -> None:
    for chat in ("smbiz", "edchat"):  # one publish's copies: the same bytes in each chat
        await redis.xadd(keys.chat(chat), {FIELD: b"\xc1 not msgpack"})
        await redis.xadd(keys.chat(chat), {FIELD: pack_post(make_post("x:1", ("smbiz", "edchat")))})
    merge = stage(redis, keys, FakeClock(), window=0)
    await merge.load_cursors()
    assert await merge.step(max_block=0.01) == 1
    [post] = await feed_posts(redis, keys)
    assert post.chats == ("smbiz", "edchat")
    assert merge.counters["malformed"] == 2 and merge.counters["read"] == 4


async def test_cursor_never_passes_a_post_still_held(redis: aioredis.Redis, keys: Keys) -> None:
    pub = Publisher(redis, keys, CHATS, 1000)
    await pub.publish([make_post("x:1")])
    clock = FakeClock()
    merge = stage(redis, keys, clock)
    await merge.load_cursors()
    await merge.step(max_block=0.01)
    [(held_id, _, _)] = await read_range(redis, keys.chat("smbiz"), "0-0")
    cursor = await redis.hget(keys.merge_cursor, "smbiz")
    assert cursor is not None and id_key(cursor.decode()) < id_key(held_id)
    # a restart now re-reads the held post and writes it
    again = stage(redis, keys, clock, window=0)
    await again.load_cursors()
    await again.step(max_block=0.01)
    assert [p.key for p in await feed_posts(redis, keys)] == ["x:1"]


async def test_a_backlog_read_in_chunks_still_unions_twins_across_chats(redis: aioredis.Redis, keys: Keys) -> None:
    pub = Publisher(redis, keys, CHATS, 100_000)
    # smbiz has a long backlog; each post is also in edchat, whose stream is short per post
    await pub.publish([make_post(f"x:{i}", ("smbiz", "edchat") if i % 2 else ("smbiz",)) for i in range(3000)])
    merge = MergeStage(redis, keys, CHATS, window=0.2, batch=100)
    await merge.load_cursors()
    while await redis.xlen(keys.feed) < 3000:
        await merge.step(max_block=0.05)
    feed = await feed_posts(redis, keys)
    assert len(feed) == 3000
    assert all(set(p.chats) == ({"smbiz", "edchat"} if int(p.key[2:]) % 2 else {"smbiz"}) for p in feed)
    assert merge.counters["duplicate"] == 0


async def test_a_merge_stage_that_lost_its_lease_writes_nothing(redis: aioredis.Redis, keys: Keys) -> None:
    await Publisher(redis, keys, CHATS, 1000).publish([make_post("x:1")])
    await redis.set(keys.merge_lease, "another-host:1:abc", px=5000)  # someone else leads now
    merge = stage(redis, keys, FakeClock(), window=0)
    merge.fence = (keys.merge_lease, "this-host:2:def")
    await merge.load_cursors()
    with pytest.raises(LeaseLost):
        await merge.step(max_block=0.01)
    assert await redis.xlen(keys.feed) == 0
    assert await redis.hget(keys.merge_cursor, "smbiz") is None
    await redis.set(keys.merge_lease, "this-host:2:def", px=5000)
    await merge.load_cursors()
    await merge.step(max_block=0.01)
    assert [p.key for p in await feed_posts(redis, keys)] == ["x:1"]


async def test_a_silent_chat_never_holds_the_feed_back(redis: aioredis.Redis, keys: Keys) -> None:
    await Publisher(redis, keys, CHATS, 1000).publish([make_post("x:1", ("smbiz",))])
    clock = FakeClock()
    merge = stage(redis, keys, clock, window=0.5)  # edchat and journchat have never said a word
    await merge.load_cursors()
    await merge.step(max_block=0.01)
    clock.now += 0.6  # only time passes: no other chat's stream moves
    await merge.step(max_block=0.01)
    assert [p.key for p in await feed_posts(redis, keys)] == ["x:1"]


async def test_the_memory_of_seen_posts_stays_bounded(redis: aioredis.Redis, keys: Keys) -> None:
    pub = Publisher(redis, keys, CHATS, 10_000)
    clock = FakeClock()
    merge = MergeStage(redis, keys, CHATS, window=0, seen_max=50, trim_every=1, clock=clock)
    await merge.load_cursors()
    for start in range(0, 200, 20):
        await pub.publish([make_post(f"x:{i}", text=f"post number {i} of many") for i in range(start, start + 20)])
        clock.now += 1
        await merge.step(max_block=0.01)
    assert await redis.zcard(keys.seen) <= 50
    assert await redis.hlen(keys.index) <= 50
    assert await redis.hexists(keys.index, "x:199") and not await redis.hexists(keys.index, "x:0")


async def newest_stamp(redis: aioredis.Redis, keys: Keys, chat: str) -> float:
    """Seconds of the newest entry id in ``chat``'s stream: the Redis time the merge stage orders by."""
    [(entry_id, _, _)] = (await read_range(redis, keys.chat(chat), "0-0", count=100_000))[-1:]
    return id_key(entry_id)[0] / 1000


async def learned_stage(redis: aioredis.Redis, keys: Keys, clock: FakeClock) -> MergeStage:
    """A stage whose learning time (10 windows from its start) is over before anything below is published."""
    clock.now -= 60
    merge = stage(redis, keys, clock, window=0.5)
    await merge.load_cursors()
    return merge


async def test_a_post_no_chat_can_still_twin_leaves_in_the_step_that_reads_it(
    redis: aioredis.Redis, keys: Keys
) -> None:
    clock = FakeClock()
    merge = await learned_stage(redis, keys, clock)
    await Publisher(redis, keys, CHATS, 1000).publish([make_post("x:1", ("smbiz", "edchat"))])
    clock.now = await newest_stamp(redis, keys, "edchat")  # no time to wait out: the streams are read past it
    assert await merge.step(max_block=0.01) == 1
    [post] = await feed_posts(redis, keys)
    assert post.chats == ("smbiz", "edchat") and merge.buffer.late_chats(int(clock.now * 1000)) == []


async def test_a_follower_seeing_posts_late_makes_only_its_chats_wait_the_window(
    redis: aioredis.Redis, keys: Keys
) -> None:
    clock = FakeClock()
    merge = await learned_stage(redis, keys, clock)
    early, late = Publisher(redis, keys, CHATS, 1000), Publisher(redis, keys, CHATS, 1000)
    await early.publish([make_post("x:1", ("smbiz",))])
    clock.now = await newest_stamp(redis, keys, "smbiz")
    assert await merge.step(max_block=0.01) == 1
    await late.publish([make_post("x:1", ("edchat",))])  # the other follower's copy: too late to make one card
    clock.now = await newest_stamp(redis, keys, "edchat") + 0.5
    await merge.step(max_block=0.01)
    assert [set(p.chats) for p in await feed_posts(redis, keys)] == [{"smbiz"}]  # its chat came as an update
    await early.publish([make_post("x:3", ("journchat",))])
    await early.publish([make_post("x:2", ("smbiz",))])
    clock.now = await newest_stamp(redis, keys, "smbiz")
    assert await merge.step(max_block=0.01) == 1  # journchat is on time; smbiz has been seen late
    clock.now += 0.5
    assert await merge.step(max_block=0.01) == 1
    assert [p.key for p in await feed_posts(redis, keys)] == ["x:1", "x:3", "x:2"]


async def test_a_write_refused_in_the_middle_of_a_backlog_loses_and_repeats_nothing(
    redis: aioredis.Redis, keys: Keys
) -> None:
    posts = [make_post(f"x:{i}", ("smbiz", "edchat")[i % 2 :], created=1_000 + i) for i in range(600)]
    await Publisher(redis, keys, CHATS, 100_000).publish(posts)
    merge = MergeStage(redis, keys, CHATS, window=0, batch=100, clock=FakeClock())  # 100 entries a chat per read
    merge.fence = (keys.merge_lease, "me")
    await redis.set(keys.merge_lease, "me")
    await merge.load_cursors()
    await merge.step(max_block=0.01)
    await redis.set(keys.merge_lease, "someone-else")  # the next write is refused, its batch read and held
    with pytest.raises(LeaseLost):
        await merge.step(max_block=0.01)
    await redis.set(keys.merge_lease, "me")
    await merge.load_cursors()  # as run() does after an error: from the stored cursors
    while await redis.xlen(keys.feed) < 600:
        await merge.step(max_block=0.01)
    await merge.step(max_block=0.01)  # one more: nothing read again may be written again
    assert sorted(p.key for p in await feed_posts(redis, keys)) == sorted(p.key for p in posts)  # each once


async def test_a_redis_outage_is_one_warning_and_one_line_when_the_stage_resumes(
    keys: Keys, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the stage used to log a WARNING per retry and nothing when it merged again
    caplog.set_level(logging.DEBUG, logger="mixer.merge.stage")

    def said(level: int, words: str) -> int:
        return len(logged(caplog.records, "mixer.merge.stage", level, words))

    async with restartable_redis(tmp_path) as server:
        redis = dedicated_client(server.url, 1000)
        ready = asyncio.Event()
        merging = asyncio.create_task(MergeStage(redis, keys, CHATS, window=0).run(ready))
        try:
            await asyncio.wait_for(ready.wait(), 10)
            await outage(
                server,
                lambda: said(logging.DEBUG, "redis error") >= 3,
                lambda: said(logging.INFO, "redis answers again after") == 1,
            )
        finally:
            merging.cancel()
            await asyncio.gather(merging, return_exceptions=True)
            await redis.aclose()
    assert said(logging.WARNING, "redis error") == 1


MANY = tuple(f"chat{i:02d}" for i in range(40))


async def stepped(merge: MergeStage, redis: aioredis.Redis, keys: Keys, budget: int) -> list[int]:
    """Step ``merge`` until it reads and writes nothing more; checks that no step read more than ``budget`` entries
    (chat streams and moderator actions together) nor wrote more; returns the feed entries each step wrote (the last
    step, which read and wrote nothing, left out)."""
    written: list[int] = []
    actions_seen = 0
    while True:
        read = merge.counters["read"]
        wrote = await merge.step(max_block=0.01)
        cursor = await redis.hget(keys.merge_cursor, ACTIONS_CURSOR)
        actions = len(await redis.xrange(keys.mod_actions, "-", cursor.decode())) if cursor else 0
        assert merge.counters["read"] - read + actions - actions_seen <= budget
        assert wrote <= budget
        assert len(merge.buffer) <= merge.buffer.max_pending
        actions_seen = actions
        if merge.counters["read"] == read and not wrote:
            return written
        written.append(wrote)


async def test_a_step_over_many_streams_reads_and_releases_no_more_than_its_budget(
    redis: aioredis.Redis, keys: Keys
) -> None:
    # one XREAD COUNT is shared by every stream: 1000 each used to be 50,000 entries decoded in one step for 50 chats
    # (a merge catching up on such a burst peaked at 556 MB), and a release then wrote every event due at once
    clock = FakeClock()
    merge = MergeStage(redis, keys, MANY, window=5, read_budget=500, clock=clock)
    await merge.load_cursors()
    posts = [make_post(f"x:{chat}:{i}", (chat,), created=1_000 + i) for i in range(30) for chat in MANY]
    await Publisher(redis, keys, MANY, 100_000).publish(posts)
    for n in range(40):  # the moderator actions' stream is read in the same XREAD: its entries count too
        action = {"action": "hide", "key": f"x:unknown:{n}"}  # a key the index does not know: changes nothing
        await redis.xadd(keys.mod_actions, {ACTION_FIELD: msgpack.packb(action, use_bin_type=True)})
    assert merge.read_count(len(MANY) + 1) == 12  # 500 // 41 a stream, not ``batch`` (1000)
    assert set(await stepped(merge, redis, keys, 500)) == {0}  # all read, all held: the window is not over
    assert len(merge.buffer) == len(posts) and merge.counters["read"] == len(posts)
    clock.now += 10  # every post is due at once: they leave 500 a step, the earliest due first
    assert await stepped(merge, redis, keys, 500) == [500, 500, 200]
    assert sorted(p.key for p in await feed_posts(redis, keys)) == sorted(p.key for p in posts)  # each once


async def test_backlogs_of_many_sizes_over_many_streams_are_merged_once_each_in_time_order(
    redis: aioredis.Redis, keys: Keys
) -> None:
    # a few entries a stream per read (400 // 41 = 9), backlogs from a few entries to hundreds, a fifth of the posts in
    # two chats: every post leaves once, with both chats, and the feed is in time order across every stream
    rng = random.Random(7)
    clock = FakeClock()
    start = int(clock.now * 1000) - 3_600_000  # an hour of backlog, one post a ms stamp of its own
    posts = []
    for i in range(3000):
        chats = tuple(dict.fromkeys(rng.choices(MANY, weights=range(1, len(MANY) + 1), k=1 + (i % 5 == 0))))
        posts.append(make_post(f"x:{i}", chats, created=start + i * 1000))
    for i, post in enumerate(posts):  # every copy of a post carries its stamp (one publish writes them all at once)
        for chat in post.chats:
            await redis.xadd(keys.chat(chat), {FIELD: pack_post(post)}, id=f"{start + i * 1000}-0")
    merge = MergeStage(redis, keys, MANY, window=0.5, read_budget=400, clock=clock)
    await merge.load_cursors()
    assert sum(await stepped(merge, redis, keys, 400)) == len(posts)
    feed = await feed_posts(redis, keys)
    assert [(p.key, p.chats) for p in feed] == [(p.key, p.chats) for p in posts]
    assert merge.counters["duplicate"] == 0


async def test_a_skewed_catch_up_stays_in_time_order_with_the_buffer_bounded(redis: aioredis.Redis, keys: Keys) -> None:
    # an outage's backlog, a tenth of the worst case measured (docs/deploy.md "Merge memory"): chat01 has 1000 posts
    # within its first second, chat02-50 300 each over the hour after it. chat01 holds the watermark back for 48 reads
    # of 21 (1100 // 51); the streams ahead, read 21 each a step too, filled the buffer to max_pending in two steps
    # and their oldest posts were forced out before chat01's later ones. Now they wait while the buffer is nearly full.
    chats = tuple(f"chat{i:02d}" for i in range(1, 51))
    rng = random.Random(11)
    clock = FakeClock()
    start = int(clock.now * 1000) - 3_600_000
    stamped = [(start + i, chats[0]) for i in range(1000)]
    others = [chat for chat in chats[1:] for _ in range(300)]
    rng.shuffle(others)  # in an uneven order: the streams ahead are read up to different points
    stamped += [(start + 1000 + i * 230, chat) for i, chat in enumerate(others)]
    posts = [make_post(f"x:{ms}", (chat,), created=ms) for ms, chat in stamped]
    async with redis.pipeline(transaction=False) as pipe:
        for (ms, chat), post in zip(stamped, posts, strict=True):
            pipe.xadd(keys.chat(chat), {FIELD: pack_post(post)}, id=f"{ms}-0")
        await pipe.execute()
    merge = MergeStage(redis, keys, chats, window=0.5, read_budget=1100, max_pending=2000, clock=clock)
    await merge.load_cursors()
    assert sum(await stepped(merge, redis, keys, 1100)) == len(posts)  # the buffer never above 2000 between steps
    assert [p.key for p in await feed_posts(redis, keys)] == [p.key for p in posts]  # each once, in time order
