"""Bearer-token checks for the moderation API and the webhook, with brute-force throttling per address.

``check_bearer`` is the one place a token is compared: the header is compared as bytes (a non-UTF-8 byte in it is
a wrong token, not an encoding error). ``AuthThrottle`` counts wrong tokens per address (IPv6 by its /64, which
one host usually holds whole): after ``failures`` in a ``window`` the address is refused with 429 and
``Retry-After`` until that window ends, right token or not, so guessing goes at ``failures`` a window at most.
The table is in memory and bounded (the least recently seen address is forgotten first); each address's failures
are logged at WARNING at most once a window, with their count. Nothing here touches Redis.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

log = logging.getLogger(__name__)

FAILURES = 10  # wrong tokens an address may send per window; the next is refused
WINDOW_SECONDS = 60.0
MAX_ADDRESSES = 10_000  # addresses remembered at once: the table's bound


@dataclass
class _Seen:
    start: float  # when this address's window began (its first failure in it)
    failures: int = 0  # wrong tokens in the window
    logged_at: float = -math.inf  # when its last warning was written
    unlogged: int = 0  # wrong tokens since that warning
    refused: int = 0  # requests refused with 429 since that warning


def address_key(remote: str | None) -> str:
    """Whom a request counts against: its IPv4 address, or its IPv6 address's /64."""
    try:
        ip = ipaddress.ip_address(remote or "")
    except ValueError:
        return remote or "?"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class AuthThrottle:
    """Wrong tokens per address over a fixed window; bounded memory; clock injectable for tests."""

    def __init__(
        self,
        failures: int = FAILURES,
        window: float = WINDOW_SECONDS,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures, self.window, self.max_addresses = failures, window, max_addresses
        self._clock = clock
        self._seen: OrderedDict[str, _Seen] = OrderedDict()
        self.counters: Counter[str] = Counter()  # failed, refused

    def __len__(self) -> int:
        return len(self._seen)

    def retry_after(self, address: str) -> int | None:
        """Seconds ``address`` must wait before its next attempt counts, or None when it may try now."""
        seen = self._current(address)
        if seen is None or seen.failures < self.failures:
            return None
        seen.refused += 1
        self.counters["refused"] += 1
        return max(1, math.ceil(seen.start + self.window - self._clock()))

    def failed(self, address: str, where: str) -> None:
        """Count a wrong token from ``address`` (on route ``where``); logged at most once a window per address."""
        now = self._clock()
        seen = self._current(address)
        if seen is None:
            seen = self._seen[address] = _Seen(start=now)
            while len(self._seen) > self.max_addresses:
                self._seen.popitem(last=False)
        self._seen.move_to_end(address)
        seen.failures += 1
        seen.unlogged += 1
        self.counters["failed"] += 1
        if now - seen.logged_at >= self.window:
            log.warning(
                "wrong token on %s from %s: %d wrong, %d refused (429) since the last warning for it",
                where, address, seen.unlogged, seen.refused,
            )  # fmt: skip
            seen.logged_at, seen.unlogged, seen.refused = now, 0, 0

    def succeeded(self, address: str) -> None:
        """A right token: the address's wrong ones are forgotten (a moderator who mistyped is not held back)."""
        seen = self._seen.get(address)
        if seen is not None and seen.failures < self.failures:
            seen.failures = 0

    def _current(self, address: str) -> _Seen | None:
        seen = self._seen.get(address)
        if seen is not None and self._clock() - seen.start >= self.window:
            seen.start, seen.failures = self._clock(), 0  # a new window; its log timer carries on
        return seen


def bearer_matches(header: str, token: str) -> bool:
    """Whether an ``Authorization`` header value is ``Bearer <token>`` (the scheme in any case, RFC 9110), the token
    compared in constant time as bytes."""
    scheme, _, credentials = header.partition(" ")
    # aiohttp decodes header bytes as UTF-8 with surrogateescape: encode them back the same way, never failing.
    matches = hmac.compare_digest(credentials.encode("utf-8", "surrogateescape"), token.encode())
    return matches and scheme.lower() == "bearer"


def check_bearer(request: web.Request, token: str, throttle: AuthThrottle) -> None:
    """Return when the request carries ``token``; else 401, or 429 with ``Retry-After`` while its address is
    throttled (checked first: a throttled address learns nothing of its guesses)."""
    address = address_key(request.remote)
    wait = throttle.retry_after(address)
    if wait is not None:
        raise web.HTTPTooManyRequests(
            text=f"too many wrong tokens from this address: try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    header = request.headers.get("Authorization", "")
    if not bearer_matches(header, token):
        throttle.failed(address, request.path)
        reason = "this bearer token is not the one configured" if header else "a bearer token is required"
        raise web.HTTPUnauthorized(
            text=f"{reason} (Authorization: Bearer <token>)", headers={"WWW-Authenticate": "Bearer"}
        )
    throttle.succeeded(address)
