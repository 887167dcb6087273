"""Health keys for the roles that serve no HTTP (`mixer ingest`, `mixer merge`), in the style of arq's health check.

While a role runs, ``beat`` rewrites its key (``Keys.health``: per role and per host, so each container or pod has its
own) every ``EVERY`` seconds with a TTL of ``TTL``; `mixer ingest --check` / `mixer merge --check` (``check``) read the
key's remaining TTL, so the age of the last beat is measured by Redis's clock alone (no clock skew between
containers), and exit 0 if it is at most ``STALE_AFTER`` seconds old, else 1, printing one line either way. A merge
process that stands by (another holds the lease) beats too: it is healthy, ready to take over. What lives elsewhere:
the roles themselves (``mixer.runner`` starts ``beat`` beside them); the fan-out's probe is HTTP (``/readyz``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

from redis.exceptions import RedisError

from mixer import connect
from mixer.backoff import Backoff
from mixer.keys import Keys
from mixer.redact import redact

log = logging.getLogger(__name__)

EVERY = 5.0  # seconds between beats
TTL = 60  # seconds a beat's key lives: long enough that --check can tell "stale" (a stuck role) from "never ran"
STALE_AFTER = 15.0  # a beat older than this (three missed) fails the check


async def beat(redis_url: str, keys: Keys, role: str, every: float = EVERY) -> None:
    """Rewrite this host's ``role`` health key every ``every`` seconds until cancelled. Redis errors never stop it:
    each is logged and retried with capped backoff, so the key is fresh again within one beat of Redis answering."""
    key, value = keys.health(role, socket.gethostname()), f"pid {os.getpid()}"
    redis = connect.client(redis_url, keys.feed, socket_timeout=5, socket_connect_timeout=5)
    backoff = Backoff(base=1.0, cap=every)
    failing_since: float | None = None  # an outage is one WARNING when it starts and one INFO when it ends
    try:
        while True:
            try:
                await redis.set(key, value, ex=TTL)
            except (RedisError, OSError) as exc:
                delay = backoff.next()
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("%s health: cannot write %s (%s); retrying every %.0f s or sooner", role, key,
                                redact(str(exc)), every)  # fmt: skip
                else:
                    log.debug("%s health: cannot write %s (%s); retrying in %.1f s", role, key, redact(str(exc)), delay)
                await asyncio.sleep(delay)
                continue
            if failing_since is not None:
                log.info("%s health: %s written again after %.1f s", role, key, time.monotonic() - failing_since)
                failing_since = None
            backoff.reset()
            await asyncio.sleep(every)
    finally:
        await redis.aclose()


async def check(redis_url: str, keys: Keys, role: str, stale_after: float = STALE_AFTER) -> tuple[int, str]:
    """The exit code (0 fresh, 1 stale, absent or Redis unreachable) and one line saying why, for this host's
    ``role``."""
    host = socket.gethostname()
    key = keys.health(role, host)
    redis = connect.client(redis_url, keys.feed, socket_timeout=5, socket_connect_timeout=5)
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            value, ttl = await pipe.execute()
    except (RedisError, OSError) as exc:
        return 1, f"mixer {role} on {host}: unhealthy: Redis does not answer ({redact(str(exc))})"
    finally:
        await redis.aclose()
    if value is None or ttl < 0:
        return 1, f"mixer {role} on {host}: unhealthy: no heartbeat in Redis ({key})"
    age = TTL - ttl / 1000
    what = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    if age > stale_after:
        return 1, f"mixer {role} on {host}: unhealthy: last heartbeat ({what}) {age:.0f} s ago"
    return 0, f"mixer {role} on {host}: healthy: last heartbeat ({what}) {age:.1f} s ago"
