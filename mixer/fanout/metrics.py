"""``/metrics``: the fan-out server's figures in the Prometheus text format (version 0.0.4).

Gauges and counters from the hubs (connections, frames, bytes, posts sent and skipped,
lag frames, cut-offs, per profile), per-chat rates, the webhook, the followers' counters
that ``mixer ingest`` stores in Redis, the Redis round-trip time measured at scrape, and whether a merge stage
leads and how old the feed's newest entry is (a stalled wall is seen in the metrics, not only on the screen).
Nothing here keeps state of its own.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping

import redis.asyncio as aioredis

from mixer.fanout.hub import Hub
from mixer.keys import Keys
from mixer.streams import id_ms, text

HUB_COUNTERS = {
    "frames_sent": "websocket/SSE writes of a batch to one client",
    "frames_zero_copy": "of those, frames sent by sendfile from one shared in-memory copy (big frames)",
    "frames_encoded": "messages encoded (once per filter group and format)",
    "bytes_sent": "bytes written to clients",
    "posts_sent": "posts delivered to clients",
    "posts_skipped": "posts not sent to a client whose backlog was full (reported to it by a lag frame)",
    "lag_frames": "lag frames sent",
    "cut_off": "clients closed because their backlog stayed full",
    "write_errors": "clients dropped because a write to them failed unexpectedly (logged)",
    "entries_unencodable": "feed entries skipped because they could not be encoded (logged)",
}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


Sample = tuple[Mapping[str, str], int | float]


def sample_value(value: int | float) -> str:
    """``value`` exactly as Prometheus parses it: an integer as all its digits (a counter of 123456789 is never
    ``1.23457e+08``, which would make ``rate()`` see steps), a float as its shortest round-trip ``repr``."""
    if isinstance(value, int):
        return str(int(value))  # bool too: 0 or 1
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _lines(name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> list[str]:
    out = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        tags = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        out.append(f"{name}{{{tags}}} {sample_value(value)}" if tags else f"{name} {sample_value(value)}")
    return out


async def render(hubs: Mapping[str, Hub], redis: aioredis.Redis, keys: Keys, webhook: Mapping[str, int]) -> str:
    """The whole exposition; Redis figures are left out (and ``mixer_redis_up`` is 0) when Redis does not answer."""
    out = _lines(
        "mixer_connections", "gauge", "open client connections", [({"profile": p}, len(h)) for p, h in hubs.items()]
    )
    for counter, help_text in HUB_COUNTERS.items():
        samples = [({"profile": p}, h.counters[counter]) for p, h in hubs.items()]
        out += _lines(f"mixer_{counter}_total", "counter", help_text, samples)
    full = hubs.get("full")
    if full is not None:
        now = time.monotonic()
        rates = full.rates.per_minute(now)
        chats = sorted(set(full.rates.totals) | set(rates))
        out += _lines(
            "mixer_chat_posts_per_minute", "gauge", "posts per chat over the last minute",
            [({"chat": c}, rates[c]) for c in chats],
        )  # fmt: skip
        out += _lines(
            "mixer_chat_posts_total", "counter", "posts per chat since start",
            [({"chat": c}, full.rates.totals[c]) for c in chats],
        )  # fmt: skip
    out += _lines(
        "mixer_webhook_total",
        "counter",
        "webhook records by outcome",
        [({"outcome": k}, v) for k, v in webhook.items()],
    )
    try:
        started = time.perf_counter()
        await redis.ping()
        rtt = time.perf_counter() - started
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.ingest_stats)
            pipe.exists(keys.merge_lease)
            pipe.xrevrange(keys.feed, count=1)
            pipe.time()
            stored, leader, newest, (seconds, micros) = await pipe.execute()
    except Exception:  # a scrape must answer even when Redis does not
        return "\n".join(out + _lines("mixer_redis_up", "gauge", "1 when Redis answered this scrape", [({}, 0)])) + "\n"
    out += _lines("mixer_redis_up", "gauge", "1 when Redis answered this scrape", [({}, 1)])
    out += _lines("mixer_redis_rtt_seconds", "gauge", "Redis PING round trip at this scrape", [({}, rtt)])
    out += _lines(
        "mixer_merge_leader", "gauge", "1 when a merge stage holds the lease: the feed is being written", [({}, leader)]
    )
    if newest:  # by Redis's clock, both ends: no skew between this host and the merge stage's
        age = max(0.0, int(seconds) + int(micros) / 1e6 - id_ms(text(newest[0][0])) / 1000)
        help_text = "seconds since the newest feed entry was written (grows while nothing is merged)"
        out += _lines("mixer_feed_newest_age_seconds", "gauge", help_text, [({}, age)])
    ingest: list[Sample] = []
    for name, raw in stored.items():
        try:
            counters = json.loads(raw)
        except ValueError:  # not what mixer ingest writes: a scrape still answers
            continue
        for counter, value in counters.items() if isinstance(counters, dict) else ():
            if isinstance(value, int | float) and not isinstance(value, bool):
                ingest.append(({"source": text(name), "counter": str(counter)}, value))
    out += _lines("mixer_ingest_total", "counter", "live follower counters, as mixer ingest last stored them", ingest)
    return "\n".join(out) + "\n"
