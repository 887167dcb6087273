"""The followers' counters in Redis (``Keys.ingest_stats``, shown by /api/stats), written every few seconds.

Stats are a picture of now, rewritten whole each round: while Redis is away a round is skipped (the
outage is logged once, by the role's ``outage.Outage``) and the next round writes fresher numbers.
A role never stops because its stats could not be written.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis

from mixer.ingest.outage import AWAY, Outage
from mixer.keys import Keys
from mixer.streams import raise_if_cancelling


async def write_stats(redis: aioredis.Redis, keys: Keys, counters: Mapping[str, Counter[str]]) -> bool:
    """Store each follower's counters as JSON; False (nothing written, nothing raised) while Redis is away."""
    if not counters:
        return True
    mapping: dict[Any, Any] = {name: json.dumps(dict(c)) for name, c in counters.items()}
    outage = Outage.of(redis)
    try:
        await redis.hset(keys.ingest_stats, mapping=mapping)
    except AWAY as exc:
        raise_if_cancelling()
        outage.failed(exc, "writing the followers' stats")
        return False
    outage.answered()
    return True
