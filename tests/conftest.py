"""One real Redis for the whole suite, and a fresh key prefix per test.

Which Redis: ``MIXER_TEST_REDIS_URL`` if set, else one answering on 127.0.0.1:6379,
else an embedded redis-server started for the session. Each test gets its own prefix
and every key under it is deleted afterwards, whoever wrote it. Every test runs with ``XDG_STATE_HOME`` in a
temp dir of its own (``state_home``), so a `mixer run` it starts keeps its night there, never
in the developer's ~/.local/state.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis import Redis as SyncRedis

from mixer.keys import Keys


def _local_redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$XDG_STATE_HOME`` for this test and the processes it starts: a fresh temp dir."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    return state


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("MIXER_TEST_REDIS_URL")
    if url:
        yield url
        return
    if _local_redis_answers():
        yield "redis://127.0.0.1:6379/0"
        return
    from mixer.embedded import EmbeddedRedis

    server = EmbeddedRedis()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def keys(redis_url: str) -> Iterator[Keys]:
    """A fresh prefix; every key under it is deleted afterwards, also those written by the servers and processes
    the test started without the ``redis`` fixture (a merge stage's cursors, a browser test's night)."""
    keys = Keys(prefix=f"test-{uuid.uuid4().hex[:12]}")
    yield keys
    with SyncRedis.from_url(redis_url) as client:
        doomed = list(client.scan_iter(match=keys.pattern(), count=1000))
        if doomed:
            client.delete(*doomed)


@pytest.fixture
async def redis(redis_url: str, keys: Keys) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()  # (``keys`` deletes the test's keys)
