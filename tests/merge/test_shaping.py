"""The shaping stage: the feed in, one paced stream per shaped profile out, through a real Redis."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis

from mixer.codec import ACTION_FIELD, EDIT_FIELD, FIELD, PIN_FIELD, RETRACT_FIELD, pack_post
from mixer.keys import Keys
from mixer.merge.shaping import ShapingStage, shape_forever
from mixer.settings import Profile
from mixer.streams import dedicated_client, id_key, read_range
from tests.helpers import FakeClock, logged, make_post
from tests.redis_server import outage, restartable_redis

WALL = Profile("wall", rate=1.0, burst=2, max_wait=5.0)


async def feed(redis: aioredis.Redis, keys: Keys, *keys_chats: tuple[str, str]) -> list[str]:
    ids = []
    for key, chat in keys_chats:
        ids.append((await redis.xadd(keys.feed, {FIELD: pack_post(make_post(key, (chat,)))})).decode())
    return ids


async def shaped(redis: aioredis.Redis, keys: Keys) -> list[tuple[str, dict[str, Any]]]:
    entries = await read_range(redis, keys.shaped("wall"), "0-0", count=10_000)
    return [(kind.decode(), msgpack.unpackb(raw) | {"entry": eid}) for eid, raw, kind in entries]


async def stage(redis: aioredis.Redis, keys: Keys, clock: FakeClock) -> ShapingStage:
    shaping = ShapingStage(redis, keys, [WALL, Profile("full", rate=0)], clock=clock)
    await redis.hset(keys.shaped_cursor, "feed", "0-0")
    await shaping.load()
    return shaping


async def test_a_burst_leaves_at_the_profile_pace_and_the_oldest_surplus_is_dropped_and_counted(
    redis: aioredis.Redis, keys: Keys
) -> None:
    ids = await feed(redis, keys, *((f"x:{n}", "smbiz") for n in range(10)))
    clock = FakeClock()
    shaping = await stage(redis, keys, clock)
    await shaping.step(max_block=0.01)
    assert [e["key"] for _, e in await shaped(redis, keys)] == ["x:0", "x:1"]  # the burst allowance
    for _ in range(3):
        clock.now += 1
        await shaping.step(max_block=0.01)
    out = await shaped(redis, keys)
    assert [e["key"] for _, e in out] == ["x:0", "x:1", "x:2", "x:3", "x:4"]
    assert [e["ref"] for _, e in out] == ids[:5]
    clock.now += 10  # everything still waiting is past max_wait: dropped, never shown late
    await shaping.step(max_block=0.01)
    assert len(await shaped(redis, keys)) == 5
    assert await redis.hget(keys.shaped_drops("wall"), "smbiz") == b"5"


async def test_a_quiet_chat_is_not_drowned_by_a_loud_one(redis: aioredis.Redis, keys: Keys) -> None:
    await feed(redis, keys, *((f"loud:{n}", "smbiz") for n in range(20)), ("quiet:1", "edchat"))
    clock = FakeClock()
    shaping = await stage(redis, keys, clock)
    await shaping.step(max_block=0.01)
    for _ in range(3):
        clock.now += 1
        await shaping.step(max_block=0.01)
    assert "quiet:1" in [e["key"] for _, e in await shaped(redis, keys)][:4]


async def test_edits_and_retractions_of_emitted_posts_follow_with_the_profiles_ids(
    redis: aioredis.Redis, keys: Keys
) -> None:
    [first] = await feed(redis, keys, ("x:1", "smbiz"))
    shaping = await stage(redis, keys, FakeClock())
    await shaping.step(max_block=0.01)
    [(_, emitted)] = await shaped(redis, keys)
    edited = {**make_post("x:1", text="edited").to_dict(), "id": first}
    await redis.xadd(keys.feed, {EDIT_FIELD: msgpack.packb(edited)})
    await redis.xadd(keys.feed, {RETRACT_FIELD: msgpack.packb({"ids": [first], "keys": ["x:1"]})})
    await shaping.step(max_block=0.01)
    out = await shaped(redis, keys)
    assert [kind for kind, _ in out] == ["p", "u", "r"]
    assert out[1][1]["id"] == emitted["entry"] and out[1][1]["text"] == "edited"
    assert out[2][1]["ids"] == [emitted["entry"]]


async def test_a_chat_joined_by_an_emitted_post_is_named_and_one_joined_while_waiting_leaves_with_the_post(
    redis: aioredis.Redis, keys: Keys
) -> None:
    ids = await feed(redis, keys, ("x:0", "smbiz"), ("x:1", "smbiz"), ("x:2", "smbiz"))  # x:2 waits (burst 2)
    clock = FakeClock()
    shaping = await stage(redis, keys, clock)
    await shaping.step(max_block=0.01)
    for n in (0, 2):
        joined = {**make_post(f"x:{n}").to_dict(), "id": ids[n], "chats": ["smbiz", "edchat"], "joined": ["edchat"]}
        await redis.xadd(keys.feed, {EDIT_FIELD: msgpack.packb(joined)})
    clock.now += 1
    await shaping.step(max_block=0.01)
    out = await shaped(redis, keys)
    assert [(kind, e["key"], e["chats"], e.get("joined")) for kind, e in out] == [
        ("p", "x:0", ["smbiz"], None),
        ("p", "x:1", ["smbiz"], None),
        ("u", "x:0", ["smbiz", "edchat"], ["edchat"]),  # a filtered wall client gets x:0 as a new card
        ("p", "x:2", ["smbiz", "edchat"], None),  # a post, not a late one: it had not left
    ]


async def test_pins_unpins_and_any_other_control_entry_reach_every_profile_with_the_profiles_ids(
    redis: aioredis.Redis, keys: Keys
) -> None:
    calm = Profile("calm", rate=0.1, burst=1, max_wait=60.0)
    ids = await feed(redis, keys, ("x:1", "smbiz"), ("x:2", "smbiz"))
    clock = FakeClock()
    clock.now += 3600  # so a profile's own ids cannot coincide with the feed's
    shaping = ShapingStage(redis, keys, [WALL, calm], clock=clock)
    await redis.hset(keys.shaped_cursor, "feed", "0-0")
    await shaping.load()
    await shaping.step(max_block=0.01)  # the wall shows both posts, the calm profile only the first so far
    stored = {ids[1]: {**make_post("x:2").to_dict(), "id": ids[1]}}
    await redis.xadd(keys.feed, {PIN_FIELD: msgpack.packb({"post": stored[ids[1]]})})
    await redis.xadd(keys.feed, {PIN_FIELD: msgpack.packb({"post": None})})
    # A kind of entry this stage has no case for stands for one added later: it goes everywhere as it is.
    await redis.xadd(keys.feed, {ACTION_FIELD: msgpack.packb({"future": True})})
    await shaping.step(max_block=0.01)

    pinned_ids = {}
    for name in ("wall", "calm"):
        entries = await read_range(redis, keys.shaped(name), "0-0", count=100)
        out = [(kind.decode(), msgpack.unpackb(raw), eid) for eid, raw, kind in entries]
        shown = {body["ref"]: eid for kind, body, eid in out if kind == "p"}
        pinned, unpinned = [body for kind, body, _ in out if kind == "n"]
        assert pinned["post"]["key"] == "x:2" and unpinned == {"post": None}
        pinned_ids[name] = (pinned["post"]["id"], shown.get(ids[1]))
        assert [body for kind, body, _ in out if kind == "a"] == [{"future": True}]
        assert msgpack.unpackb(await redis.get(keys.shaped_pinned(name))) is None  # what a new client's hello says
    # Under the profile's own id where it showed the post (so its edits and retraction match the pin), else the feed's.
    assert pinned_ids["wall"][0] == pinned_ids["wall"][1] != ids[1]
    assert pinned_ids["calm"] == (ids[1], None)


async def test_a_profiles_pinned_post_is_kept_for_the_hello_under_its_id(redis: aioredis.Redis, keys: Keys) -> None:
    [first] = await feed(redis, keys, ("x:1", "smbiz"))
    clock = FakeClock()
    clock.now += 3600  # so the profile's own ids cannot coincide with the feed's
    shaping = await stage(redis, keys, clock)
    await shaping.step(max_block=0.01)
    [(_, emitted)] = await shaped(redis, keys)
    await redis.xadd(keys.feed, {PIN_FIELD: msgpack.packb({"post": {**make_post("x:1").to_dict(), "id": first}})})
    await shaping.step(max_block=0.01)
    pinned = msgpack.unpackb(await redis.get(keys.shaped_pinned("wall")))
    assert (pinned["key"], pinned["id"], pinned["ref"]) == ("x:1", emitted["entry"], first)


async def test_a_restarted_stage_neither_repeats_nor_loses_a_post(redis: aioredis.Redis, keys: Keys) -> None:
    await feed(redis, keys, *((f"x:{n}", "smbiz") for n in range(4)))
    clock = FakeClock()
    first = await stage(redis, keys, clock)
    await first.step(max_block=0.01)  # two leave, two wait
    second = ShapingStage(redis, keys, [WALL], clock=clock)
    await second.load()
    clock.now += 3
    await second.step(max_block=0.01)
    assert [e["key"] for _, e in await shaped(redis, keys)] == ["x:0", "x:1", "x:2", "x:3"]


async def test_a_restarted_stage_still_maps_edits_and_retractions_of_posts_it_emitted_long_before(
    redis: aioredis.Redis, keys: Keys
) -> None:
    [first] = await feed(redis, keys, ("x:old", "smbiz"))
    clock = FakeClock()
    shaping = await stage(redis, keys, clock)
    await shaping.step(max_block=0.01)
    [(_, emitted)] = await shaped(redis, keys)
    # Far more later entries than one page of the reload: the old post's ref is still found.
    filler = {FIELD: msgpack.packb({"ref": "0-1", "key": "x:filler"})}
    pipe = redis.pipeline(transaction=False)
    for _ in range(4500):
        pipe.xadd(keys.shaped("wall"), filler)
    await pipe.execute()
    restarted = ShapingStage(redis, keys, [WALL], clock=clock)
    await restarted.load()
    edited = {**make_post("x:old", text="edited").to_dict(), "id": first}
    await redis.xadd(keys.feed, {EDIT_FIELD: msgpack.packb(edited)})
    await redis.xadd(keys.feed, {RETRACT_FIELD: msgpack.packb({"ids": [first], "keys": ["x:old"]})})
    await restarted.step(max_block=0.01)
    tail = await redis.xrevrange(keys.shaped("wall"), count=2)
    (_, retract), (_, update) = tail
    assert msgpack.unpackb(update[EDIT_FIELD])["id"] == emitted["entry"]
    assert msgpack.unpackb(retract[RETRACT_FIELD])["ids"] == [emitted["entry"]]


async def test_a_post_one_profile_dropped_still_leaves_whole_on_a_profile_that_holds_it(
    redis: aioredis.Redis, keys: Keys
) -> None:
    await feed(redis, keys, *((f"x:{n}", "smbiz") for n in range(4)))
    clock = FakeClock()
    hasty, patient = Profile("hasty", rate=1.0, burst=1, max_wait=1.0), Profile("patient", rate=1.0, burst=1)
    shaping = ShapingStage(redis, keys, [hasty, patient], clock=clock)
    await redis.hset(keys.shaped_cursor, "feed", "0-0")
    await shaping.load()
    await shaping.step(max_block=0.01)
    for _ in range(3):  # hasty drops what waited over a second; patient still shows it, the feed's body intact
        clock.now += 1
        await shaping.step(max_block=0.01)
    bodies = {}
    for name in ("hasty", "patient"):
        bodies[name] = [msgpack.unpackb(raw) for _, raw, _ in await read_range(redis, keys.shaped(name), "0-0")]
    assert [b["key"] for b in bodies["hasty"]] == ["x:0", "x:1"]
    assert [b["key"] for b in bodies["patient"]] == ["x:0", "x:1", "x:2", "x:3"]
    assert all(b["chats"] == ["smbiz"] and b["text"] for b in bodies["patient"])
    assert await redis.hget(keys.shaped_drops("hasty"), "smbiz") == b"2"


async def test_a_restart_that_reads_again_posts_already_emitted_does_not_hold_the_cursor_back(
    redis: aioredis.Redis, keys: Keys
) -> None:
    # A loud chat's third post waits while a quiet chat's later post leaves at once: the cursor stays before the one
    # waiting, so a restart reads the emitted one again. No profile takes it again, and nothing must wait for it.
    ids = await feed(redis, keys, ("x:0", "smbiz"), ("x:1", "smbiz"), ("x:2", "smbiz"), ("x:3", "edchat"))
    clock = FakeClock()
    first = await stage(redis, keys, clock)
    await first.step(max_block=0.01)
    assert [e["key"] for _, e in await shaped(redis, keys)] == ["x:0", "x:3"]  # x:3 emitted, after x:1 and x:2 wait
    assert id_key((await redis.hget(keys.shaped_cursor, "feed")).decode()) < id_key(ids[1])
    restarted = ShapingStage(redis, keys, [WALL], clock=clock)
    await restarted.load()
    clock.now += 3
    await restarted.step(max_block=0.01)
    assert [e["key"] for _, e in await shaped(redis, keys)] == ["x:0", "x:3", "x:1", "x:2"]
    assert (await redis.hget(keys.shaped_cursor, "feed")).decode() == ids[-1]


async def test_a_redis_outage_is_one_warning_and_one_line_when_shaping_resumes(
    keys: Keys, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # shaping used to log a WARNING per retry and nothing when it shaped again
    caplog.set_level(logging.DEBUG, logger="mixer.merge.shaping")

    def said(level: int, words: str) -> int:
        return len(logged(caplog.records, "mixer.merge.shaping", level, words))

    async with restartable_redis(tmp_path) as server:
        redis = dedicated_client(server.url, 1000)
        shaping = asyncio.create_task(shape_forever(ShapingStage(redis, keys, [WALL])))
        try:
            await outage(
                server,
                lambda: said(logging.DEBUG, "redis error") >= 3,
                lambda: said(logging.INFO, "redis answers again after") == 1,
            )
        finally:
            shaping.cancel()
            await asyncio.gather(shaping, return_exceptions=True)
            await redis.aclose()
    assert said(logging.WARNING, "redis error") == 1
