"""The process roles as `mixer` starts them: what `mixer ingest` follows, and what each role loads."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from mixer.codec import unpack_post
from mixer.ingest.publish import Publisher
from mixer.keys import Keys
from mixer.streams import read_range
from tests.fake_mastodon import STATUSES, FakeMastodon, key_of, serving_mastodon
from tests.helpers import FIXTURES, make_post
from tests.processes import free_port, mixer_env, read_until, start_mixer


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


async def _first_entry(redis: aioredis.Redis, stream: str) -> None:
    async with asyncio.timeout(20):
        while not await redis.xlen(stream):
            await redis.xread({stream: "$"}, block=500)  # waits on Redis, not a bare sleep


async def _modules_loaded(role: str, redis: aioredis.Redis, keys: Keys, redis_url: str, tmp_path: Path) -> set[str]:
    """Every module the `mixer ROLE` process imported while it did its work (python -X importtime)."""
    recording = FIXTURES / "recorded" / "pstweetchat_2019-03-01.jsonl"
    env = mixer_env(redis_url, keys, "pstweetchat", PYTHONPROFILEIMPORTTIME="1", MIXER_MERGE_WINDOW_MS="20")
    args = {"ingest": ["--replay", str(recording), "--speed", "0"], "serve": ["--no-merge", "--port", str(free_port())]}
    if role == "merge":
        await Publisher(redis, keys, ["pstweetchat"], 1000).publish([make_post("a", ("pstweetchat",))])
    log_path = tmp_path / f"{role}.log"
    with log_path.open("wb") as log:
        proc = await start_mixer(role, *args.get(role, []), env=env, log=None if role == "serve" else log)
        try:
            if role == "serve":
                log.write("".join(await read_until(proc, "live at")).encode())
            else:
                await _first_entry(redis, keys.feed if role == "merge" else keys.chat("pstweetchat"))
        finally:
            proc.send_signal(signal.SIGTERM)
            if role == "serve":
                out, _ = await proc.communicate()
                log.write(out)
            assert await asyncio.wait_for(proc.wait(), 15) == 0
    lines = log_path.read_text().splitlines()
    return {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:") and "|" in line}


@pytest.mark.parametrize("role", ["merge", "ingest"])
async def test_the_merge_and_ingest_processes_never_load_the_web_server(
    role: str, redis: aioredis.Redis, keys: Keys, redis_url: str, tmp_path: Path
) -> None:
    loaded = await _modules_loaded(role, redis, keys, redis_url, tmp_path)
    assert "mixer.runner" in loaded  # the listing works
    assert "aiohttp.web" not in loaded
    assert not any(name.startswith("mixer.fanout") for name in loaded)


async def test_the_fan_out_process_does_load_it(
    redis: aioredis.Redis, keys: Keys, redis_url: str, tmp_path: Path
) -> None:
    loaded = await _modules_loaded("serve", redis, keys, redis_url, tmp_path)
    assert {"aiohttp.web", "mixer.fanout.app"} <= loaded  # the check above would see it
