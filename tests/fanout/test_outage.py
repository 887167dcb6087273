"""The HTTP API while Redis is away or refuses writes: 503 with Retry-After, logged once; /readyz not ready.

Each test starts its own redis-server (so stopping it or filling its disk touches no other test).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from mixer.embedded import EmbeddedRedis, redis_binary
from mixer.fanout.appkeys import STREAMS
from mixer.keys import Keys
from tests.helpers import eventually, logged, make_post
from tests.redis_server import outage, restartable_redis
from tests.servers import running_app, settings_for

TOKEN = "t" * 32


@pytest.fixture
def private_redis() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@asynccontextmanager
async def redis_on_disk(where: Path, *args: str) -> AsyncIterator[tuple[str, Path]]:
    """A redis-server whose data directory (yielded with its URL) a test can take away."""
    data = where / "data"
    data.mkdir()
    sock = where / "redis.sock"
    proc = await asyncio.create_subprocess_exec(
        redis_binary(), "--port", "0", "--unixsocket", str(sock), "--dir", str(data), *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url = f"unix://{sock}"
    client = aioredis.Redis.from_url(url)

    async def answers() -> bool:
        try:
            return bool(await client.ping())
        except (aioredis.RedisError, OSError):
            return False

    try:
        await eventually(answers, timeout=10)
        yield url, data
    finally:
        await client.aclose()
        proc.kill()  # not SIGTERM: with save points set, a Redis that cannot save refuses to shut down
        await proc.wait()


async def fail_a_snapshot(url: str, data: Path) -> None:
    """Make the next BGSAVE fail as on a full disk: its directory is gone."""
    shutil.rmtree(data)
    client = aioredis.Redis.from_url(url)
    try:
        await client.bgsave()

        async def failed() -> bool:
            return (await client.info("persistence"))["rdb_last_bgsave_status"] != "ok"

        await eventually(failed, timeout=10)
    finally:
        await client.aclose()


async def test_with_redis_away_the_api_answers_503_with_retry_after_and_logs_it_once(
    private_redis: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    keys = Keys(prefix="outage")
    settings = settings_for(keys.prefix, moderation_token=TOKEN)
    async with running_app(settings, private_redis.url) as srv, aiohttp.ClientSession() as http:
        private_redis.stop()
        caplog.clear()
        for path in ("/api/feed", "/api/stats", "/api/feed?since=0-0", "/api/mod/queue", "/api/stats"):
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with http.get(srv.url + path, headers=headers) as resp:
                assert resp.status == 503, path
                assert int(resp.headers["Retry-After"]) > 0
                assert "redis is unavailable" in await resp.text()
        async with http.get(srv.url + "/readyz") as resp:
            assert resp.status == 503  # (the reason: Redis, or the feed follower waiting for it)
    warnings = [r for r in caplog.records if r.name == "mixer.fanout.outage" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert not [r for r in caplog.records if r.name.startswith("aiohttp") and r.levelno >= logging.ERROR]


async def test_readyz_is_not_ready_while_redis_refuses_writes(tmp_path: Path) -> None:
    async with redis_on_disk(tmp_path, "--save", "3600 1", "--appendonly", "no") as (url, data):
        settings = settings_for("refusing", moderation_token=TOKEN)
        async with running_app(settings, url) as srv, aiohttp.ClientSession() as http:
            async with http.get(srv.url + "/readyz") as resp:
                assert resp.status == 200
            await fail_a_snapshot(url, data)  # with save points set, Redis now refuses writes (MISCONF)
            async with http.get(srv.url + "/readyz") as resp:
                reason = await resp.text()
                assert resp.status == 503
                assert reason.count("\n") == 1 and reason.startswith("redis cannot persist to disk")
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with http.post(srv.url + "/api/mod/unpin", json={}, headers=headers) as resp:
                assert resp.status == 503 and "Retry-After" in resp.headers
                assert "refuses writes" in await resp.text()


async def test_readyz_is_not_ready_when_redis_could_not_snapshot_even_if_it_takes_writes(tmp_path: Path) -> None:
    async with redis_on_disk(tmp_path, "--save", "", "--appendonly", "no") as (url, data):
        async with running_app(settings_for("unsaved"), url) as srv, aiohttp.ClientSession() as http:
            await fail_a_snapshot(url, data)
            async with http.get(srv.url + "/readyz") as resp:
                assert resp.status == 503
                assert "snapshot" in await resp.text()


async def test_a_redis_outage_is_one_warning_per_feed_follower_and_one_line_when_it_answers_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # each follower used to log a WARNING per retry (two streams, every 5 s for the whole outage) and nothing when
    # Redis was back: the log of a 30 s outage ended on a warning, with no word that the feed moved again
    caplog.set_level(logging.DEBUG, logger="mixer.fanout.live")
    async with restartable_redis(tmp_path) as server, running_app(settings_for("outage-log"), server.url) as srv:
        streams = set(srv.app[STREAMS].values())
        assert len(streams) == 2  # the feed and the wall's shaped stream

        def lines(level: int, words: str) -> list[str]:
            return logged(caplog.records, "mixer.fanout.live", level, words)

        def retried() -> bool:
            return len(lines(logging.DEBUG, "redis error")) >= 2 * len(streams)

        await outage(server, retried, lambda: len(lines(logging.INFO, "redis answers again after")) == len(streams))
    warnings = lines(logging.WARNING, "redis error")
    assert len(warnings) == len(streams)
    assert {line.split(": ")[1] for line in warnings} == streams  # each names its stream


async def test_a_webhook_post_while_redis_is_away_is_a_503_logged_once_as_the_apis_outage(
    private_redis: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    # the webhook's publisher used to log, in `mixer serve`'s log, "ingest: ... holding what is unpublished and
    # retrying with backoff" beside the API's own line: it holds nothing, the request is answered 503 at once
    settings = settings_for("outage-webhook", webhook_token=TOKEN)
    post = make_post("webhook:during-outage").to_dict()
    async with running_app(settings, private_redis.url) as srv, aiohttp.ClientSession() as http:
        private_redis.stop()
        caplog.clear()
        for _ in range(2):
            async with http.post(srv.url + "/api/posts", json=post, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                assert r.status == 503 and "redis is unavailable" in await r.text()
    said = [r.name for r in caplog.records if r.levelno >= logging.WARNING and r.name != "mixer.fanout.live"]
    assert said == ["mixer.fanout.outage"]  # (the feed followers' own outage lines aside)
