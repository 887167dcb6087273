"""``/metrics`` numbers: counters as exact integers, gauges as exact floats, junk in Redis skipped."""

from __future__ import annotations

import json
import math

import aiohttp
import pytest
import redis.asyncio as aioredis

from mixer.fanout.appkeys import HUB
from mixer.fanout.metrics import sample_value
from mixer.keys import Keys
from tests.servers import running_app, settings_for


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (123456789, "123456789"),
        (2**63 + 1, "9223372036854775809"),
        (0, "0"),
        (True, "1"),
        (0.1, "0.1"),
        (1e-7, "1e-07"),
        (123456789.5, "123456789.5"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
    ],
)
def test_a_sample_is_written_exactly(value: float, text: str) -> None:
    assert sample_value(value) == text
    if math.isfinite(value):  # read back exactly
        assert (int(text) if isinstance(value, int) else float(text)) == value


async def test_a_large_counter_is_an_exact_integer_in_metrics(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    stats = {"mastodon": json.dumps({"published": 123456789}), "junk": "not json", "list": "[1, 2]"}
    await redis.hset(keys.ingest_stats, mapping=stats)  # type: ignore[arg-type]
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        srv.app[HUB].counters["bytes_sent"] = 123456789
        async with http.get(srv.url + "/metrics") as resp:
            assert resp.status == 200
            body = await resp.text()
    lines = body.splitlines()
    assert 'mixer_bytes_sent_total{profile="full"} 123456789' in lines
    assert 'mixer_ingest_total{source="mastodon",counter="published"} 123456789' in lines
    assert "e+" not in body  # no counter in exponent notation
    [rtt] = [line for line in lines if line.startswith("mixer_redis_rtt_seconds ")]
    assert float(rtt.split()[1]) > 0
