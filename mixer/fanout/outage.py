"""What the HTTP routes say while Redis is away or refuses writes: 503 with ``Retry-After``, and ``/readyz``.

``redis_guard`` wraps each ``/api/*`` handler (a wrapper, not a middleware: a middleware would put two more
coroutine frames under every open websocket, docs/benchmarks.md "Idle websockets"): a Redis connection error or
timeout, or Redis refusing writes (MISCONF: it cannot persist to disk; OOM; a read-only replica), becomes **503**
with ``Retry-After`` and a one-line reason instead of a 500 with a traceback. ``RedisHealth`` logs each outage
once at WARNING when it starts (at most once a minute) and once at INFO when Redis answers again.
``redis_refusal`` is what ``/readyz`` asks Redis: not ready when it does not answer or when it cannot write
(``INFO persistence``). Websockets and SSE handle outages themselves (``mixer.fanout.live``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5  # what a 503 tells a client to wait: about a Redis restart
LOG_EVERY_SECONDS = 60.0  # at most one outage warning per this long, however often Redis comes and goes
PING_TIMEOUT = 2.0  # /readyz's wait for Redis


def unavailable(exc: BaseException) -> str | None:
    """A one-line reason when ``exc`` means Redis is away or refuses writes (a 503, not a bug), else None."""
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | TimeoutError):
        return f"redis is unavailable ({type(exc).__name__})"
    if isinstance(exc, OutOfMemoryError | ReadOnlyError):
        return f"redis refuses writes ({type(exc).__name__})"
    if isinstance(exc, ResponseError) and "MISCONF" in str(exc):  # (in a pipeline, wrapped in a longer message)
        return "redis refuses writes: it cannot persist to disk (MISCONF)"
    return None


class RedisHealth:
    """Whether Redis failed the last request that used it; logs the transitions, not every failed request."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.down_since: float | None = None
        self._warned_at = -LOG_EVERY_SECONDS
        self.refused = 0  # requests answered 503 in the current outage

    def failed(self, reason: str, where: str) -> None:
        now = self._clock()
        self.refused += 1
        if self.down_since is None:
            self.down_since = now
            if now - self._warned_at >= LOG_EVERY_SECONDS:
                self._warned_at = now
                log.warning("%s (first seen on %s): HTTP API answers 503 until it is back", reason, where)

    def answered(self) -> None:
        if self.down_since is not None:
            log.info(
                "redis answers again after %.1f s; %d request(s) were answered 503",
                self._clock() - self.down_since, self.refused,
            )  # fmt: skip
            self.down_since, self.refused = None, 0


def redis_guard(health: RedisHealth) -> Callable[[Handler], Handler]:
    """What wraps each ``/api/*`` handler: Redis away or refusing writes becomes 503 + ``Retry-After``, logged once."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guard(request: web.Request) -> web.StreamResponse:
            try:
                response = await handler(request)
            except RedisError as exc:  # (not OSError: a client that hangs up mid-request is no Redis outage)
                reason = unavailable(exc)
                if reason is None:
                    raise
                health.failed(reason, request.path)
                raise web.HTTPServiceUnavailable(
                    text=f"{reason}: retry in {RETRY_AFTER_SECONDS} s",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                ) from None
            if request.path != "/api/chats":  # every other API route reads Redis: this one proves it answers
                health.answered()
            return response

        return guard

    return wrap


async def redis_refusal(redis: aioredis.Redis) -> str | None:
    """Why Redis cannot serve this server now (one line), or None when it answers and can write."""
    try:
        persistence: dict[str, Any] = await asyncio.wait_for(redis.info("persistence"), PING_TIMEOUT)
    except (RedisError, OSError, TimeoutError) as exc:
        return unavailable(exc) or f"redis: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    if persistence.get("aof_enabled") and persistence.get("aof_last_write_status", "ok") != "ok":
        return "redis cannot persist to disk: its last append-only file write failed (disk full?)"
    if persistence.get("rdb_last_bgsave_status", "ok") != "ok":
        return "redis cannot persist to disk: its last snapshot (BGSAVE) failed (disk full?)"
    return None
