"""Wrong bearer tokens are throttled per address on the moderation API and the webhook (issue 16, item 7)."""

from __future__ import annotations

import logging

import aiohttp
import pytest
import redis.asyncio as aioredis

from mixer.fanout.throttle import AuthThrottle, address_key
from mixer.keys import Keys
from tests.helpers import FakeClock
from tests.servers import running_app, settings_for

MOD_TOKEN = "m" * 32
HOOK_TOKEN = "w" * 32


def session_from(address: str) -> aiohttp.ClientSession:
    """A client whose connections leave from ``address`` (any 127.x.y.z reaches 127.0.0.1 on Linux)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


async def test_the_eleventh_wrong_token_in_a_minute_is_refused_and_other_addresses_still_get_in(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    settings = settings_for(keys.prefix, moderation_token=MOD_TOKEN, webhook_token=HOOK_TOKEN)
    wrong = {"Authorization": "Bearer guess"}
    async with running_app(settings, redis_url) as srv, session_from("127.0.0.1") as attacker:
        for n in range(10):  # the webhook and the moderation API count together
            path = "/api/posts" if n % 2 else "/api/mod/rules"
            async with attacker.request("POST" if n % 2 else "GET", srv.url + path, headers=wrong) as resp:
                assert resp.status == 401, n
        async with attacker.get(srv.url + "/api/mod/rules", headers=wrong) as resp:
            assert resp.status == 429
            assert 0 < int(resp.headers["Retry-After"]) <= 60
            assert "too many wrong tokens" in await resp.text()
        right = {"Authorization": f"Bearer {MOD_TOKEN}"}
        async with attacker.get(srv.url + "/api/mod/rules", headers=right) as resp:
            assert resp.status == 429  # a throttled address learns nothing, not even from the right token
        async with session_from("127.0.0.2") as moderator:
            async with moderator.get(srv.url + "/api/mod/rules", headers=right) as resp:
                assert resp.status == 200
            async with moderator.post(
                srv.url + "/api/posts", json=[], headers={"Authorization": f"Bearer {HOOK_TOKEN}"}
            ) as resp:
                assert resp.status != 429
        async with attacker.get(srv.url + "/api/stats") as resp:
            assert (await resp.json())["auth"] == {"failed": 10, "refused": 2}


def test_a_window_later_an_address_may_try_again() -> None:
    clock = FakeClock()
    throttle = AuthThrottle(failures=3, window=60, clock=clock)
    for _ in range(3):
        assert throttle.retry_after("10.0.0.1") is None
        throttle.failed("10.0.0.1", "/api/mod/rules")
    assert throttle.retry_after("10.0.0.1") == 60
    clock.now += 45
    assert throttle.retry_after("10.0.0.1") == 15
    assert throttle.retry_after("10.0.0.2") is None
    clock.now += 15
    assert throttle.retry_after("10.0.0.1") is None


def test_a_right_token_forgets_the_wrong_ones_before_the_limit() -> None:
    throttle = AuthThrottle(failures=3, clock=FakeClock())
    throttle.failed("10.0.0.1", "/api/mod/rules")
    throttle.failed("10.0.0.1", "/api/mod/rules")
    throttle.succeeded("10.0.0.1")
    throttle.failed("10.0.0.1", "/api/mod/rules")
    assert throttle.retry_after("10.0.0.1") is None


def test_the_table_of_addresses_is_bounded() -> None:
    throttle = AuthThrottle(max_addresses=100, clock=FakeClock())
    for n in range(1_000):
        throttle.failed(f"10.0.{n // 256}.{n % 256}", "/api/posts")
    assert len(throttle) == 100


def test_failures_are_logged_once_a_minute_per_address_with_their_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    throttle = AuthThrottle(failures=10, window=60, clock=clock)
    caplog.set_level(logging.WARNING, logger="mixer.fanout.throttle")
    for _ in range(200):
        if throttle.retry_after("10.0.0.1") is None:
            throttle.failed("10.0.0.1", "/api/posts")
    clock.now += 61
    throttle.failed("10.0.0.1", "/api/posts")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "10.0.0.1: 1 wrong, 0 refused" in lines[0]
    assert "10.0.0.1: 10 wrong, 190 refused" in lines[1]  # the 9 after the first line, this one, and the refused


def test_an_ipv6_host_counts_as_its_64_and_a_mapped_ipv4_as_itself() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key(None) == "?"
