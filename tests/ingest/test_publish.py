"""Publisher: what followers publish, with their cursors and what they remember across restarts."""

from __future__ import annotations

import redis.asyncio as aioredis

from mixer.ingest.publish import CursorStore, Publisher
from mixer.keys import Keys


async def test_a_followers_recall_keeps_its_last_size_to_twice_size_entries_across_restarts(
    redis: aioredis.Redis, keys: Keys
) -> None:
    publisher = Publisher(redis, keys, ["smbiz"], maxlen=100)
    recall = publisher.recall("x", 3)
    for n in range(8):  # a batch each: three fill "new", the fourth turns it into "old"
        await publisher.publish([], cursor=("x", str(n)), recall=(recall, {f"k{n}": f"v{n}"}))
    assert await CursorStore(redis, keys).get("x") == "7"  # written with them
    await publisher.publish([], recall=(recall, {"k5": "again"}))
    again = publisher.recall("x", 3)  # a restarted follower
    assert await again.load() == {"k3": "v3", "k4": "v4", "k5": "again", "k6": "v6", "k7": "v7"}
    await publisher.publish([], recall=(again, {"k9": "v9"}))  # it knows "new" is full: it turns over
    assert await publisher.recall("x", 3).load() == {"k5": "again", "k6": "v6", "k7": "v7", "k9": "v9"}
    assert await redis.hlen(keys.ingest_recall("x", "new")) == 1
