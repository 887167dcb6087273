"""Riding out a Redis outage: which errors mean "Redis is away", and one log line when it goes and comes back.

``Outage`` is one role's view of its Redis (one per client object, shared by everything that writes
through that client: the Publisher, the cursor store, the stats write), so an outage is one WARNING
when the first call fails and one INFO with how long it lasted when a call succeeds again, never a
line per retry. ``ride_out`` repeats one Redis call with capped backoff until it succeeds; it never
gives up (a role waits for its Redis as long as it takes) and ``CancelledError`` always propagates.
Errors that are not about reaching Redis (a wrong type, a script error) are raised at once: retrying
cannot fix them. What a caller holds while it waits, and how much, is the caller's business
(``publish.Publisher`` bounds it).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mixer.backoff import Backoff
from mixer.streams import raise_if_cancelling

log = logging.getLogger(__name__)

T = TypeVar("T")

# Redis is away, restarting (BusyLoadingError is a ConnectionError) or unreachable: worth waiting for. REDIS_AWAY
# where other network calls share the ``try`` (an OSError there may be another server's).
REDIS_AWAY = (RedisConnectionError, RedisTimeoutError)
AWAY = (*REDIS_AWAY, OSError)


def where(redis: aioredis.Redis) -> str:
    """The Redis a client talks to, as ``redis://host:port/db`` or ``unix://path``: never its password."""
    kwargs = redis.connection_pool.connection_kwargs
    db = kwargs.get("db", 0)
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={db}"
    return f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{db}"


class Outage:
    """Whether one role's Redis is away now, how often and for how long it was; logs each outage twice."""

    def __init__(self, role: str, where: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.role = role
        self.where = where
        self._clock = clock
        self.since: float | None = None  # clock time the current outage began; None while Redis answers
        self.outages = 0  # outages seen (each logged once)
        self.failures = 0  # calls that failed because Redis was away (retries included)
        self.seconds = 0.0  # time spent in finished outages

    @classmethod
    def of(cls, redis: aioredis.Redis, role: str = "ingest") -> Outage:
        """The tracker of ``redis`` (made on first use, named after the first role that asks)."""
        outage = _TRACKERS.get(redis)
        if outage is None:
            outage = _TRACKERS[redis] = cls(role, where(redis))
        return outage

    @property
    def away(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException, doing: str) -> None:
        """A call failed because Redis is away: WARNING once, at the first failure of an outage."""
        self.failures += 1
        if self.since is None:
            self.since = self._clock()
            self.outages += 1
            log.warning(
                "%s: Redis at %s went away while %s (%s: %s); holding what is unpublished and retrying with backoff",
                self.role,
                self.where,
                doing,
                type(exc).__name__,
                exc,
            )

    def answered(self) -> None:
        """A call succeeded: INFO once, with how long Redis was away, when an outage just ended."""
        if self.since is not None:
            lasted = self._clock() - self.since
            self.seconds += lasted
            self.since = None
            log.info("%s: Redis at %s is back after %.1f s away", self.role, self.where, lasted)


_TRACKERS: weakref.WeakKeyDictionary[aioredis.Redis, Outage] = weakref.WeakKeyDictionary()  # client -> its tracker


def backoff() -> Backoff:
    """The retry policy while Redis is away: 0.1 s doubling to at most 2 s (a restart is seconds, not minutes)."""
    return Backoff(base=0.1, cap=2.0)


async def ride_out(call: Callable[[], Awaitable[T]], outage: Outage, doing: str, policy: Backoff | None = None) -> T:
    """``call()``'s result, retried with capped backoff for as long as Redis is away; other errors raise."""
    policy = policy or backoff()
    while True:
        try:
            result = await call()
        except AWAY as exc:
            raise_if_cancelling()
            outage.failed(exc, doing)
            await asyncio.sleep(policy.next())
            continue
        raise_if_cancelling()
        outage.answered()
        return result
