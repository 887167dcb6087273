"""`mixer ingest` as a process: it starts the followers the config names."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import redis.asyncio as aioredis

from mixer.codec import unpack_post
from mixer.ingest.publish import CursorStore, Publisher
from mixer.keys import Keys
from mixer.streams import read_range

from . import test_sources_mastodon
from .processes import mixer_env, start_mixer
from .test_sources_mastodon import STATUSES, FakeMastodon, key_of

fake = test_sources_mastodon.fake  # the fake Mastodon instance fixture, shared


async def test_mixer_ingest_follows_the_configured_mastodon_instance_and_reports_counters(
    redis: aioredis.Redis, keys: Keys, redis_url: str, fake: FakeMastodon, tmp_path: Path
) -> None:
    fake.timeline = STATUSES[:5]
    env = mixer_env(redis_url, keys, "hoot", MIXER_MASTODON_INSTANCES=fake.url, MIXER_MASTODON_POLL_SECONDS="0.2")
    with (tmp_path / "ingest.log").open("wb") as log:
        proc = await start_mixer("ingest", env=env, log=log)
        try:
            async with asyncio.timeout(20):
                last = "0-0"
                while (await redis.xlen(keys.chat("hoot"))) < 5:
                    reply = await redis.xread({keys.chat("hoot"): last}, block=1000)
                    last = reply[0][1][-1][0] if reply else last
                while not await redis.hexists(keys.ingest_stats, f"mastodon:{fake.url.split('//')[1]}"):
                    await redis.xread({keys.chat("hoot"): "$"}, block=200)  # waits on Redis, not a bare sleep
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 15) == 0
    entries = await read_range(redis, keys.chat("hoot"), "0-0")
    assert [unpack_post(eid, raw).key for eid, raw, _ in entries] == [key_of(s) for s in STATUSES[:5]]
    [stats] = (await redis.hgetall(keys.ingest_stats)).values()
    assert json.loads(stats)["published"] == 5


async def test_a_followers_recall_keeps_its_last_size_to_twice_size_entries_across_restarts(
    redis: aioredis.Redis, keys: Keys
) -> None:
    publisher = Publisher(redis, keys, ["smbiz"], maxlen=100)
    recall = publisher.recall("x", 3)
    for n in range(8):  # a batch each: three fill "new", the fourth turns it into "old"
        await publisher.publish([], cursor=("x", str(n)), recall=(recall, {f"k{n}": f"v{n}"}))
    assert await CursorStore(redis, keys).get("x") == "7"  # written with them
    await publisher.publish([], recall=(recall, {"k5": "again"}))
    again = publisher.recall("x", 3)  # a restarted follower
    assert await again.load() == {"k3": "v3", "k4": "v4", "k5": "again", "k6": "v6", "k7": "v7"}
    await publisher.publish([], recall=(again, {"k9": "v9"}))  # it knows "new" is full: it turns over
    assert await publisher.recall("x", 3).load() == {"k5": "again", "k6": "v6", "k7": "v7", "k9": "v9"}
    assert await redis.hlen(keys.ingest_recall("x", "new")) == 1
