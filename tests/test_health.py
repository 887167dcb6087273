"""`mixer ingest --check` and `mixer merge --check` (mixer/health.py): real role processes write their health key in
a real Redis, and the probe, a process too, reads it: fresh is exit 0, stale or absent exit 1, each with one line."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from mixer import health
from mixer.keys import Keys
from tests.helpers import eventually, logged
from tests.processes import die_with_parent, free_port, mixer_env, start_mixer
from tests.redis_server import outage, restartable_redis


async def probe(role: str, env: dict[str, str]) -> tuple[int, list[str]]:
    """Exit code and output lines of `mixer ROLE --check`."""
    proc = await start_mixer(role, "--check", env=env)
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    return await proc.wait(), out.decode().splitlines()


@pytest.mark.parametrize("role", ["ingest", "merge"])
async def test_check_passes_while_the_role_runs_and_its_key_expires(
    role: str, redis: aioredis.Redis, keys: Keys, redis_url: str, tmp_path: Path
) -> None:
    env = mixer_env(redis_url, keys, "smbiz")
    with (tmp_path / f"{role}.log").open("wb") as log:
        proc = await start_mixer(role, env=env, log=log, preexec=die_with_parent())
        try:
            key = keys.health(role, socket.gethostname())
            await eventually(lambda: redis.exists(key), timeout=20)
            code, lines = await probe(role, env)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 15) == 0
    assert code == 0
    assert len(lines) == 1 and f"mixer {role} on {socket.gethostname()}: healthy" in lines[0]
    assert 0 < await redis.ttl(key) <= health.TTL  # left to expire: a probe after the role stops fails


@pytest.mark.parametrize("role", ["ingest", "merge"])
async def test_check_fails_when_the_last_beat_is_stale(
    role: str, redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    # the key as Redis holds it 20 s after a stuck or killed role's last beat
    await redis.set(keys.health(role, socket.gethostname()), "pid 4242", ex=health.TTL - 20)
    code, lines = await probe(role, mixer_env(redis_url, keys, "smbiz"))
    assert code == 1
    assert len(lines) == 1 and "unhealthy: last heartbeat (pid 4242) " in lines[0]
    assert 20 <= int(lines[0].rsplit(") ", 1)[1].split()[0]) < health.TTL  # its age, as Redis's TTL tells it


async def test_a_beat_from_another_host_does_not_count(redis: aioredis.Redis, keys: Keys, redis_url: str) -> None:
    await redis.set(keys.health("merge", "another-container"), "pid 1", ex=health.TTL)
    code, lines = await probe("merge", mixer_env(redis_url, keys, "smbiz"))
    assert code == 1
    assert len(lines) == 1 and "unhealthy: no heartbeat in Redis" in lines[0]


@pytest.mark.parametrize("role", ["ingest", "merge"])
async def test_check_fails_when_no_role_ever_beat(role: str, redis: aioredis.Redis, keys: Keys, redis_url: str) -> None:
    code, lines = await probe(role, mixer_env(redis_url, keys, "smbiz"))
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith(f"mixer {role} on ") and "no heartbeat in Redis" in lines[0]


async def test_check_fails_in_one_line_when_redis_does_not_answer(keys: Keys) -> None:
    code, lines = await probe("merge", mixer_env(f"redis://127.0.0.1:{free_port()}/0", keys, "smbiz"))
    assert code == 1
    assert len(lines) == 1 and "unhealthy: Redis does not answer" in lines[0]


async def test_a_redis_outage_is_one_warning_and_one_line_when_the_key_is_written_again(
    keys: Keys, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the beat used to log a WARNING per retry for the whole outage and nothing once it wrote again
    caplog.set_level(logging.DEBUG, logger="mixer.health")
    async with restartable_redis(tmp_path) as server:
        beating = asyncio.create_task(health.beat(server.url, keys, "merge", every=0.2))
        try:
            probe = aioredis.Redis.from_url(server.url)
            key = keys.health("merge", socket.gethostname())
            await eventually(lambda: probe.exists(key), timeout=10)
            await probe.aclose()

            def said(level: int, words: str) -> int:
                return len(logged(caplog.records, "", level, words))

            await outage(
                server,
                lambda: said(logging.DEBUG, "cannot write") >= 3,
                lambda: said(logging.INFO, "written again after") == 1,
            )
        finally:
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)
    assert said(logging.WARNING, "cannot write") == 1
