"""Ingest: publishing normalised Posts into their chats' Redis streams.

``Publisher.publish`` writes each post to the stream of every configured chat it
belongs to, in one pipeline round-trip per batch. A post that belongs to no configured
chat is counted and dropped. The merge stage, not this module, removes duplicates.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

import redis.asyncio as aioredis

from .codec import FIELD, pack_post
from .keys import Keys
from .models import Post

log = logging.getLogger(__name__)


class Publisher:
    """Writes posts to chat streams; at-least-once (a retried batch may repeat entries)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, chats: Iterable[str], maxlen: int) -> None:
        self._redis = redis
        self._keys = keys
        self._chats = frozenset(chats)
        self._maxlen = maxlen
        self.counters: Counter[str] = Counter()

    def route(self, post: Post) -> Post | None:
        """The post restricted to configured chats, or None when it belongs to none."""
        chats = tuple(c for c in post.chats if c in self._chats)
        if not chats:
            return None
        return post if chats == post.chats else post.with_chats(chats)

    async def publish(self, posts: Iterable[Post]) -> int:
        """Append each post to each of its configured chats' streams; returns posts published."""
        pipe = self._redis.pipeline(transaction=False)
        published = 0
        for post in posts:
            routed = self.route(post)
            if routed is None:
                self.counters["skipped_no_chat"] += 1
                continue
            packed = pack_post(routed)
            for chat in routed.chats:
                pipe.xadd(self._keys.chat(chat), {FIELD: packed}, maxlen=self._maxlen, approximate=True)
            published += 1
        if published:
            await pipe.execute()
        self.counters["published"] += published
        return published
