"""Mastodon's REST API for the follower: GETs of JSON documents from one instance, within its rate limit.

``MastodonRest.get_json`` waits out ``X-RateLimit-Remaining: 0`` and HTTP 429 until the
advertised ``X-RateLimit-Reset`` (else a 429's ``Retry-After``; capped, so a skewed clock
cannot stall a follower), and raises ``SourceError`` for an answer the follower cannot use.
What to fetch (tag timelines, the instance document) and what the statuses mean is the
follower's (``mastodon_follow``) and the parser's (``mastodon``); the streaming API is in
``mastodon_stream``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from mixer.backoff import Backoff

log = logging.getLogger(__name__)


class SourceError(Exception):
    """An answer the follower cannot use (bad HTTP status, body that is not the expected JSON)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class MastodonRest:
    """GETs from one instance through the follower's session; never sends a request while the rate limit is spent."""

    def __init__(
        self,
        base: str,
        *,
        name: str,  # the follower's name, for the log lines
        counters: Counter[str],  # the follower's counters: rate_limited, rate_limit_waits, malformed
        backoff: Backoff,  # the follower's backoff: the wait after a 429 that gives no reset time
        max_rate_wait: float,  # never wait longer than this for a rate-limit reset (clock skew guard)
        clock: Callable[[], float],  # wall clock, to compare with the server's reset times
        timeout: float = 30.0,  # seconds for a whole answer; a server slower than this fails the request
    ) -> None:
        self.session: aiohttp.ClientSession | None = None  # set by the follower while it runs
        self._base = base
        self.name = name
        self.counters = counters
        self._backoff = backoff
        self._max_rate_wait = max_rate_wait
        self._clock = clock
        self._timeout = timeout
        self._not_before = 0.0  # wall time before which no request is sent (rate limit spent)

    async def get_list(self, path: str, params: dict[str, str]) -> list[Any]:
        """GET a list of statuses (a timeline page), as ``get_json``; SourceError when the document is not a list."""
        page = await self.get_json(path, params)
        if not isinstance(page, list):
            self.counters["malformed"] += 1
            raise SourceError(f"GET {path}: expected a list of statuses, got {type(page).__name__}")
        return page

    async def get_json(self, path: str, params: dict[str, str]) -> Any:
        """GET a JSON document, waiting out ``X-RateLimit-Remaining: 0`` and 429 until the advertised reset."""
        assert self.session is not None
        url = self._base + path
        while True:
            wait = self._not_before - self._clock()
            if wait > 0:
                log.info("%s: rate limit spent; waiting %.2fs before GET %s", self.name, wait, url)
                await asyncio.sleep(wait)
            try:
                async with self.session.get(url, params=params, timeout=aiohttp.ClientTimeout(self._timeout)) as resp:
                    reset = self._reset_delay(resp.headers)
                    remaining = resp.headers.get("X-RateLimit-Remaining", "").strip()
                    if resp.status == 429:
                        self.counters["rate_limited"] += 1
                        # Mastodon says when in X-RateLimit-Reset; a proxy or CDN in front of it in Retry-After
                        delay = reset if reset is not None else self._retry_after(resp.headers) or self._backoff.next()
                        log.warning("%s: HTTP 429 on GET %s; retrying in %.2fs", self.name, url, delay)
                        self._not_before = self._clock() + delay
                        continue
                    if remaining.isascii() and remaining.isdigit() and int(remaining) == 0:  # int() refuses "²"
                        self.counters["rate_limit_waits"] += 1
                        wait_for = reset if reset is not None else min(60.0, self._max_rate_wait)
                        self._not_before = self._clock() + wait_for
                    if resp.status != 200:
                        raise SourceError(f"GET {url}: HTTP {resp.status}", resp.status)
                    body = await resp.read()
            except TimeoutError:  # its message is empty: say what timed out, or the log line says nothing
                raise SourceError(f"GET {url}: no complete answer within {self._timeout:g} s") from None
            try:
                return json.loads(body)
            except ValueError as exc:
                self.counters["malformed"] += 1
                raise SourceError(f"GET {url}: body is not JSON ({exc}): {body[:80]!r}") from None

    def _retry_after(self, headers: Mapping[str, str]) -> float | None:
        """Seconds from ``Retry-After`` (seconds, or an HTTP date), capped; None when absent or unreadable."""
        raw = headers.get("Retry-After", "").strip()
        if raw.isascii() and raw.isdigit():
            return min(self._max_rate_wait, float(raw))
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        at = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()  # HTTP dates are GMT
        return min(self._max_rate_wait, max(0.0, at - self._clock()))

    def _reset_delay(self, headers: Mapping[str, str]) -> float | None:
        """Seconds until ``X-RateLimit-Reset`` (ISO time, or epoch seconds), capped; None when absent or unreadable."""
        raw = headers.get("X-RateLimit-Reset", "").strip()
        if not raw:
            return None
        now = self._clock()
        try:
            if raw.replace(".", "", 1).isdigit():  # not Mastodon's form: epoch seconds, or seconds from now
                at = float(raw) if float(raw) > 1e9 else now + float(raw)
            else:
                at = datetime.fromisoformat(raw).timestamp()
        except ValueError:
            return None
        return min(self._max_rate_wait, max(0.0, at - now))
