"""A Redis lease: one key naming the single holder allowed to do a piece of work (the merge stage).

``Lease`` takes the key with ``SET NX PX``, and extends or deletes it with Lua scripts
that act only while the key still holds this holder's id, so no holder can renew or
release another's lease. ``Lease.hold(work)`` waits for the lease, runs ``work`` while
renewing it, and cancels ``work`` as soon as the lease may be lost: a renewal refused,
or no successful renewal for ``ttl - margin`` seconds on the local monotonic clock,
counted from the moment that renewal was sent. Redis expires the key no sooner than
``ttl`` after it received that renewal, so the work has stopped ``margin`` seconds
before any other holder can take over. What runs under the lease (the merge stage)
is wired in ``runner``; the key name lives in ``keys``. ``fenced`` runs the work's own
writes as a transaction that WATCHes the lease key and first checks it still names the
holder, so a holder paused past its lease cannot land a write after another took over.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import socket
from collections import Counter
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError

from mixer.streams import raise_if_cancelling, text

log = logging.getLogger(__name__)

Fence = tuple[str, str]  # (lease key, holder id) a fenced write requires


class LeaseLost(RuntimeError):
    """A fenced write found the lease no longer names this holder: nothing was written."""


async def fenced(redis: aioredis.Redis, fence: Fence | None, fill: Callable[[Pipeline], None], tries: int = 5) -> None:
    """Run the commands ``fill`` queues as one MULTI; with a fence, only while the lease names its holder.

    WATCH on the lease key aborts the transaction if the key changes between the check and
    EXEC; a change that leaves it ours (our own renewal) is retried. Raises LeaseLost, having
    written nothing, once the key names someone else or nobody.
    """
    if fence is None:
        async with redis.pipeline(transaction=True) as tx:
            fill(tx)
            await tx.execute()
        return
    key, holder = fence
    for _ in range(tries):
        async with redis.pipeline(transaction=True) as tx:
            try:
                await tx.watch(key)
                current = await tx.get(key)
                if current is None or text(current) != holder:
                    raise LeaseLost(f"the lease {key} now names {text(current) if current else 'nobody'}, not {holder}")
                tx.multi()  # type: ignore[no-untyped-call]
                fill(tx)
                await tx.execute()
                return
            except WatchError as exc:
                # redis-py reports a connection lost while watching as a WatchError: that is an outage (the caller
                # reconnects and retries from its cursors), not a change of the lease
                if "occurred while watching" in str(exc):
                    raise RedisConnectionError(f"connection lost while fencing on {key}") from exc
                continue  # the key changed under us, most likely our own renewal: check again
    raise LeaseLost(f"the lease {key} kept changing during {tries} tries")


# Extend / delete only while the key still names us: a holder whose lease expired and was
# taken by another must never prolong or remove the new holder's lease.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def new_holder_id() -> str:
    """An id unique to this process and call, "host:pid:random", so the key itself says who leads."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Lease:
    """One holder at a time: ours from a successful acquire/renew until ``ttl - margin`` later, locally."""

    def __init__(
        self,
        redis: aioredis.Redis,
        key: str,
        holder_id: str,
        ttl: float = 5.0,
        renew_every: float = 1.0,
        *,
        margin: float | None = None,
    ) -> None:
        margin = ttl / 5 if margin is None else margin
        if not 0 < margin < ttl or not 0 < renew_every < ttl - margin:
            raise ValueError(f"a lease needs 0 < renew_every ({renew_every}) < ttl ({ttl}) - margin ({margin})")
        self._redis = redis  # its own connection (or a pool): never shared with a blocking read
        self.key = key
        self.holder_id = holder_id
        self.ttl = ttl
        self.renew_every = renew_every
        self.margin = margin
        self.counters: Counter[str] = Counter()
        self._ttl_ms = max(1, round(ttl * 1000))
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._valid_until = -math.inf  # loop time after which we must act as if the lease were gone
        self._maybe_ours = False  # a release is owed (it may still name us in Redis)

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    @property
    def held(self) -> bool:
        """True while the last successful acquire/renew was sent less than ``ttl - margin`` ago."""
        return self._now() < self._valid_until

    async def acquire(self) -> bool:
        """Take the lease if it is free (or still ours); True means no one else can hold it for ``ttl``."""
        sent = self._now()
        self._maybe_ours = True  # even a reply we never see may have made it ours
        if await self._redis.set(self.key, self.holder_id, nx=True, px=self._ttl_ms):
            self._valid_until = sent + self.ttl - self.margin
            return True
        return await self._extend(sent)  # ours already: a SET whose reply was lost, or a re-acquire

    async def renew(self) -> bool:
        """Extend the lease to ``ttl`` from now only if it still names us; False means it is not ours."""
        return await self._extend(self._now())

    async def _extend(self, sent: float) -> bool:
        if await self._renew(keys=[self.key], args=[self.holder_id, self._ttl_ms]):
            self._valid_until = sent + self.ttl - self.margin
            return True
        self._valid_until = -math.inf
        return False

    async def release(self) -> bool:
        """Delete the lease only if it still names us (never another holder's); True if it was ours."""
        self._valid_until = -math.inf  # stop claiming it before asking
        released = bool(await self._release(keys=[self.key], args=[self.holder_id]))
        self._maybe_ours = False
        return released

    async def holder(self) -> str | None:
        """The id holding the lease now, or None when it is free."""
        value = await self._redis.get(self.key)
        return None if value is None else text(value)

    async def hold(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` only while the lease is ours; it is cancelled (and awaited) before the lease can pass on.

        Waits for the lease (trying every ``renew_every``), runs ``work`` while renewing,
        and after a loss waits again and runs a fresh ``work()``. Returns when ``work``
        returns, raises what it raises; cancellation propagates. The lease is released on
        the way out.
        """
        try:
            while True:
                standby = self._now()
                previous = await self._wait_for_lease()
                acquired = self._now()
                self.counters["acquired"] += 1
                takeover = previous not in (None, self.holder_id)
                again = self.counters["acquired"] > 1  # after a loss, whose line said this process stood by
                log.log(  # a takeover or a comeback is news; a first start is routine
                    logging.INFO if takeover or again else logging.DEBUG,
                    "lease %s acquired%s by %s after %.1f s standing by%s",
                    self.key,
                    " again" if again else "",
                    self.holder_id,
                    acquired - standby,
                    f" (taking over from {previous})" if takeover else "",
                )
                task = asyncio.ensure_future(work())
                try:
                    lost = await self._renew_until_done_or_lost(task)
                finally:
                    await _stop(task)
                if lost is None:
                    task.result()  # work's own exception, if it raised
                    return
                self.counters["lost"] += 1
                log.warning(
                    "lease %s lost by %s after %.1f s: %s; work stopped, standing by",
                    self.key,
                    self.holder_id,
                    self._now() - acquired,
                    lost,
                )
                await self._release_quietly()
        finally:
            await self._release_quietly()

    async def _wait_for_lease(self) -> str | None:
        """Try to acquire every ``renew_every`` until it works, logging who holds it meanwhile; returns who did."""
        known: str | None = None
        failing = False
        while True:
            try:
                async with asyncio.timeout(self.ttl - self.margin):
                    acquired = await self.acquire()
                    raise_if_cancelling()  # Python 3.11's wait_for, inside redis-py, can swallow a cancel
                    if acquired:
                        return known
                    holder = await self.holder()
                    raise_if_cancelling()
            except (RedisError, OSError) as exc:  # OSError covers TimeoutError
                raise_if_cancelling()  # redis-py may turn a cancel into a connection error
                if not failing:
                    log.warning("lease %s: redis error (%s); %s keeps trying", self.key, _describe(exc), self.holder_id)
                failing = True
            else:
                if failing:
                    log.info("lease %s: redis answers again", self.key)
                    failing = False
                if holder is not None and holder != known:
                    log.info("lease %s held by %s; %s standing by", self.key, holder, self.holder_id)
                known = holder
            await asyncio.sleep(self.renew_every)

    async def _renew_until_done_or_lost(self, task: asyncio.Future[None]) -> str | None:
        """Renew every ``renew_every`` while ``task`` runs; None once it ends, else why the lease may be lost."""
        last_error: BaseException | None = None
        while True:
            left = self._valid_until - self._now()
            if left <= 0:
                why = _describe(last_error) if last_error is not None else "none"
                return f"no successful renewal for {self.ttl - self.margin:.1f} s (last error: {why})"
            done, _ = await asyncio.wait([task], timeout=min(self.renew_every, left))
            if done:
                return None
            left = self._valid_until - self._now()
            if left <= 0:
                continue
            try:
                async with asyncio.timeout(left):  # a hung renewal must not outlast what we may still claim
                    ours = await self.renew()
                    raise_if_cancelling()
            except (RedisError, OSError) as exc:
                raise_if_cancelling()
                self.counters["renew_errors"] += 1
                last_error = exc
                log.warning(
                    "lease %s: renewal by %s failed (%s); work stops in %.1f s unless one succeeds",
                    self.key,
                    self.holder_id,
                    _describe(exc),
                    max(0.0, self._valid_until - self._now()),
                )
                continue
            if not ours:
                return f"renewal refused, held by {await self._holder_or_unknown()}"
            if last_error is not None:
                log.info("lease %s: renewed again by %s", self.key, self.holder_id)
                last_error = None

    async def _holder_or_unknown(self) -> str:
        try:
            async with asyncio.timeout(self.margin):
                holder = await self.holder()
                raise_if_cancelling()
                return holder or "nobody"
        except (RedisError, OSError):
            raise_if_cancelling()
            return "unknown"

    async def _release_quietly(self) -> None:
        """Release if it may still name us; an unreachable Redis just lets it expire."""
        if not self._maybe_ours:
            return
        try:
            async with asyncio.timeout(self.margin):
                if await self.release():
                    log.debug("lease %s released by %s", self.key, self.holder_id)
        except (RedisError, OSError) as exc:
            log.warning(
                "lease %s: release by %s failed (%s); it expires within %.1f s",
                self.key,
                self.holder_id,
                _describe(exc),
                self.ttl,
            )


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def _stop(task: asyncio.Future[None]) -> None:
    """Cancel ``task`` and return only once it has ended: nothing it does may outlive the lease."""
    if task.done():
        return
    task.cancel()
    interrupted = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:  # we are being cancelled too: still wait, then pass it on
            interrupted = True
    if not task.cancelled() and task.exception() is not None:
        log.warning("lease: work ended with %r while being stopped", task.exception())
    if interrupted:
        raise asyncio.CancelledError
