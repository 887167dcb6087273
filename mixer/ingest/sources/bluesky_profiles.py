"""Bluesky profiles: the handle, display name and avatar behind a post's did, from the AppView, cached in Redis.

Jetstream names an author by did only. ``ProfileResolver`` fills authors in without ever
holding a post back: ``resolve`` puts in the authors the Redis cache knows
(``Keys.bluesky_profile``) before a batch is published; ``want`` takes the published posts
whose did it did not know; ``run`` asks ``app.bsky.actor.getProfiles`` for their dids in
batches (``ProfileBatcher``), publishes an ``Edit`` of each waiting post with its author (the
card is updated on every screen) and caches every answer for ``ttl`` seconds. A failure
(timeout, 5xx, 429, a malformed answer, Redis) is counted, logged and retried after a capped
backoff (at least the ``Retry-After``); a did the AppView does not know stays the author.
Not here: the batcher and reading answers (``bluesky_appview``, pure), Jetstream parsing
(``bluesky``), the follower (``bluesky_follow``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp
from redis.exceptions import RedisError
from yarl import URL

from mixer.backoff import Backoff
from mixer.ingest.outage import REDIS_AWAY
from mixer.ingest.publish import Publisher
from mixer.ingest.sources.bluesky import SOURCE
from mixer.ingest.sources.bluesky_appview import (
    ProfileBatcher,
    cache_record,
    parse_profiles,
    read_cached,
    retry_after_seconds,
    with_author,
)
from mixer.models import Author, Edit, Event, Post
from mixer.streams import raise_if_cancelling

log = logging.getLogger(__name__)

DEFAULT_APPVIEW = "https://public.api.bsky.app"
MISSING_TTL = 600.0  # seconds a did the AppView did not know is not asked again (a new account may appear soon)
_MAX_ANSWER = 1 << 20  # bytes; 25 profiles are a few KB
_DID_OF_KEY = re.compile(r"^bluesky:at://([^/]+)/")


class Unavailable(Exception):
    """The AppView could not answer now (5xx, 429): ask again after ``retry_after`` seconds at least."""

    def __init__(self, reason: str, retry_after: float = 0.0) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Refused(Exception):
    """The AppView refused the request itself (4xx other than 429): asking again would not help."""


def _unresolved(event: Event) -> Post | None:
    """The post of a Bluesky post or edit whose author is still a did."""
    post = event.post if isinstance(event, Edit) else event
    if isinstance(post, Post) and post.source == SOURCE and post.author.handle.startswith("did:"):
        return post
    return None


class ProfileResolver:
    """Fills in Bluesky authors: from the cache before publishing, else by a later ``Edit``; never holds a post back."""

    def __init__(
        self,
        publisher: Publisher,
        counters: Counter[str],
        *,
        appview: str = DEFAULT_APPVIEW,
        ttl: float = 21_600.0,  # seconds a profile is cached
        linger: float = 0.25,  # seconds a did waits for others to share its call
        timeout: float = 10.0,  # seconds for one getProfiles call
        backoff: Backoff | None = None,
        max_waiting: int = 10_000,  # posts waiting for their author at most; more are published as they are
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.counters = counters  # the follower's: shown with its other counters
        self._publisher = publisher
        self._redis = publisher.redis
        self._keys = publisher.keys
        self._url = URL(appview.rstrip("/") + "/xrpc/app.bsky.actor.getProfiles")
        self._ttl_ms = int(ttl * 1000)
        self._timeout = timeout
        self._backoff = backoff or Backoff(base=1.0, cap=60.0)
        self._max_waiting = max_waiting
        self._clock = clock
        self.batcher = ProfileBatcher(linger)
        self._waiting: dict[str, dict[str, Post]] = {}  # did -> post key -> the post as published last
        self._count = 0  # posts in ``_waiting``
        self._wake = asyncio.Event()

    async def resolve(self, events: list[Event]) -> tuple[list[Event], list[Post]]:
        """``events`` with every author the cache knows filled in (one Redis read), and the posts it did not know."""
        dids = list(dict.fromkeys(post.author.handle for e in events if (post := _unresolved(e)) is not None))
        if not dids:
            return events, []
        try:
            stored: list[Any] = await self._redis.mget([self._keys.bluesky_profile(did) for did in dids])
            raise_if_cancelling()
        except RedisError as exc:  # the publish will meet the same trouble; the posts go out with their dids
            self.counters["profiles:cache_errors"] += 1
            if isinstance(exc, REDIS_AWAY):  # an outage: logged once for the role, not once per batch
                self._publisher.outage.failed(exc, "reading the Bluesky profile cache")
            else:
                log.warning("bluesky profiles: cannot read the cache (%s); asking the AppView", exc)
            stored = [None] * len(dids)
        known: dict[str, Author | None] = {}  # None: a did the AppView did not know
        for did, raw in zip(dids, stored, strict=True):
            with contextlib.suppress(ValueError):
                known[did] = read_cached(raw)
        out: list[Event] = []
        missed: list[Post] = []
        for event in events:
            post = _unresolved(event)
            if post is not None and post.author.handle not in known:
                missed.append(post)
            elif post is not None and (author := known[post.author.handle]) is not None:
                if (resolved := with_author(post, author)) is not None:
                    event = Edit(resolved) if isinstance(event, Edit) else resolved
                    self.counters["profiles:from_cache"] += 1
            out.append(event)
        return out, missed

    def want(self, posts: Iterable[Post]) -> None:
        """Remember published posts whose did missed the cache: each gets an ``Edit`` once its profile arrives."""
        now = self._clock()
        for post in posts:
            routed = self._publisher.route(post)  # as the streams got it; None: it was not published
            if routed is None:
                continue
            did = routed.author.handle
            if routed.key not in self._waiting.get(did, {}):
                if self._count >= self._max_waiting:
                    self.counters["profiles:not_waited"] += 1  # it keeps its did
                    continue
                self._count += 1
            self._waiting.setdefault(did, {})[routed.key] = routed
            self.batcher.want(did, now)
        self._wake.set()

    def forget(self, key: str) -> None:
        """A post was deleted: no ``Edit`` of it will follow."""
        match = _DID_OF_KEY.match(key)
        waiting = self._waiting.get(match.group(1)) if match else None
        if waiting is not None and waiting.pop(key, None) is not None:
            self._count -= 1

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Ask for wanted dids until cancelled; a failure is counted, logged and retried after a capped backoff."""
        while True:
            now = self._clock()
            dids = self.batcher.due(now)
            if dids:
                await self._ask(session, dids)
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.batcher.next_due(now)):
                    await self._wake.wait()

    async def _ask(self, session: aiohttp.ClientSession, dids: list[str]) -> None:
        """One getProfiles call and its delivery; on failure the dids go back in line after a capped backoff."""
        self.counters["profiles:calls"] += 1
        retry_after = 0.0
        try:
            unknown = "profiles:unknown"
            try:
                found = await self._fetch(session, dids)
            except Refused as exc:  # a request the AppView will never answer: these dids stay as they are
                log.warning("bluesky profiles: %s refused %d dids (%s); they stay dids", self._url, len(dids), exc)
                found, unknown = {}, "profiles:refused"
            await self._deliver(dids, found)
            self.counters[unknown] += len(dids) - len(found)
            self._backoff.reset()
            return
        except (
            REDIS_AWAY
        ) as exc:  # Redis away (publishing the edits or caching): the outage is logged once, not per retry
            self._publisher.outage.failed(exc, "caching Bluesky profiles")
            problem = ""
        except Unavailable as exc:
            problem, retry_after = str(exc), exc.retry_after
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, RedisError) as exc:
            problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except Exception as exc:  # a bug must not end the resolver: log it loudly and go on
            log.exception("bluesky profiles: unexpected failure asking %s", self._url)
            problem = f"unexpected {type(exc).__name__}"
        self.counters["profiles:failures"] += 1
        delay = max(self._backoff.next(), retry_after)
        self.batcher.failed(dids, self._clock(), delay)
        if problem:
            log.warning(
                "bluesky profiles: %s from %s (%d dids); retrying in %.2f s", problem, self._url, len(dids), delay
            )

    async def _fetch(self, session: aiohttp.ClientSession, dids: list[str]) -> dict[str, Author]:
        """The profiles of ``dids`` the AppView knows; raises Unavailable, Refused, ValueError or a network error."""
        url = self._url.with_query([("actors", did) for did in dids])
        async with asyncio.timeout(self._timeout):
            async with session.get(url, headers={"Accept": "application/json"}) as response:
                if response.status == 429 or response.status >= 500:
                    raise Unavailable(f"HTTP {response.status}", retry_after_seconds(response.headers))
                if response.status != 200:
                    raise Refused(f"HTTP {response.status}")
                body = bytearray()
                async for chunk in response.content.iter_chunked(1 << 16):
                    body += chunk
                    if len(body) > _MAX_ANSWER:
                        raise ValueError(f"an answer larger than {_MAX_ANSWER} bytes")
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise ValueError(f"malformed JSON ({exc}): {bytes(body[:120])!r}") from None
        found = parse_profiles(data)
        return {did: found[did] for did in dids if did in found}

    async def _deliver(self, dids: list[str], found: dict[str, Author]) -> None:
        """Publish an Edit of every post waiting for these dids, then cache the answers; at least once."""
        sent: dict[str, dict[str, Post]] = {did: dict(self._waiting.get(did, {})) for did in dids}
        edits: list[Event] = []
        for did, posts in sent.items():
            if (author := found.get(did)) is not None:
                edits += [Edit(p) for p in (with_author(post, author) for post in posts.values()) if p is not None]
        if edits:
            await self._publisher.publish(edits)
            raise_if_cancelling()
        pipe = self._redis.pipeline(transaction=False)
        for did in dids:
            author = found.get(did)
            ttl_ms = self._ttl_ms if author is not None else int(MISSING_TTL * 1000)
            pipe.set(self._keys.bluesky_profile(did), cache_record(author), px=ttl_ms)
        await pipe.execute()
        raise_if_cancelling()
        self.counters["profiles:resolved"] += len(found)
        self.counters["profiles:edits"] += len(edits)
        self.batcher.done(dids)
        now = self._clock()
        for did, posts in sent.items():
            waiting = self._waiting.get(did, {})
            for key, post in posts.items():
                if waiting.get(key) is post:
                    del waiting[key]
                    self._count -= 1
            if waiting:  # new versions or posts came while this call ran: their turn comes next
                self.batcher.want(did, now)
            else:
                self._waiting.pop(did, None)
