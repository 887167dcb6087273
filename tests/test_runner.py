"""The process roles as `mixer` starts them: `mixer ingest` runs the followers the config names."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from mixer.codec import unpack_post
from mixer.keys import Keys
from mixer.streams import read_range
from tests.fake_mastodon import STATUSES, FakeMastodon, key_of, serving_mastodon
from tests.processes import mixer_env, start_mixer


@pytest.fixture
async def fake() -> AsyncIterator[FakeMastodon]:
    async with serving_mastodon() as server:
        yield server


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
