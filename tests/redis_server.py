"""A redis-server of a test's own on a free port, which the test stops and starts again on the same port.

Started as ``redis-server --port N --save "" --appendonly no`` in a temporary directory: no background
persistence. ``stop`` is ``SHUTDOWN SAVE``, which writes one snapshot on the way out even so, and ``start``
loads it: a Redis restarted with its data, as a production one with persistence comes back, so a test can
check that nothing written before the outage or during it is missing or there twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from mixer.embedded import redis_binary
from tests.processes import free_port


class RestartableRedis:
    """One redis-server process at a time on ``port``; ``stop`` then ``start`` keeps the data."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, timeout: float = 10) -> None:
        args = ("--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
        args += ("--dir", str(self.directory), "--logfile", "redis.log")
        self.proc = await asyncio.create_subprocess_exec(redis_binary(), *args, stdout=asyncio.subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not await self.answers():  # nothing to await but the port while it starts (and loads its snapshot)
            if self.proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError((self.directory / "redis.log").read_text(errors="replace")[-2000:])
            await asyncio.sleep(0.02)

    async def answers(self) -> bool:
        client = aioredis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(await client.ping())
        except (RedisConnectionError, OSError):
            return False
        finally:
            await client.aclose()

    async def stop(self) -> None:
        """``SHUTDOWN SAVE`` and wait for the process to exit: the port refuses connections from then on."""
        assert self.proc is not None
        client = aioredis.Redis(port=self.port, socket_timeout=10)
        try:
            await client.shutdown(save=True)
        except RedisConnectionError:
            pass  # the server closes the connection as it exits: that is the answer
        finally:
            await client.aclose()
        await self.proc.wait()
        self.proc = None

    async def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            await self.proc.wait()
            self.proc = None


@contextlib.asynccontextmanager
async def restartable_redis(directory: Path) -> AsyncIterator[RestartableRedis]:
    """A started ``RestartableRedis`` in ``directory``, killed on the way out."""
    server = RestartableRedis(directory)
    await server.start()
    try:
        yield server
    finally:
        await server.kill()


async def outage(server: RestartableRedis, retried: Callable[[], bool], back: Callable[[], bool]) -> None:
    """Stop ``server`` until ``retried`` holds (the code under test has retried enough), then start it again and wait
    until ``back`` holds (it said it works again); each wait fails the test after 15 s."""
    from tests.helpers import eventually

    await server.stop()
    await eventually(retried, timeout=15)
    await server.start()
    await eventually(back, timeout=15)
