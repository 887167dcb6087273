"""The live followers that `mixer run` and `mixer ingest` start: which ones the settings ask for, and running them.

``build_sources`` makes one follower per configured Mastodon instance, one for Bluesky and one for X, each following
the chats whose ``sources`` name it (every chat without ``sources``); a follower that would follow no chat is not
made, and that is said once in the log. ``follow_sources`` runs them until cancelled and fails as soon as one of them
stops; their counters go to Redis (``Keys.ingest_stats``, shown by /api/stats) every few seconds, a write that Redis
refuses never stopping a follower. What lives elsewhere: each platform's follower (``sources/``), writing the chat
streams (``publish``), and running this beside the other parts of a process (``mixer.runner``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging

from mixer import connect
from mixer.ingest.publish import CursorStore, Publisher, follow_gate
from mixer.ingest.sources import Source
from mixer.ingest.stats import write_stats
from mixer.keys import Keys
from mixer.settings import Settings
from mixer.tasks import stop_task

log = logging.getLogger(__name__)


def build_sources(settings: Settings, publisher: Publisher, cursors: CursorStore) -> list[Source]:
    """The live followers the settings ask for, one per Mastodon instance, Bluesky, X; each follows the chats whose
    ``sources`` name it (every chat without ``sources``), and one that would follow no chat is not started."""
    from mixer.ingest.hashtags import ChatMatcher

    def chats_of(source: str) -> tuple[str, ...]:
        """The chats ``source`` follows; none when it is not configured."""
        configured = source in settings.live_sources
        tags = settings.tags_for(source) if configured else ()
        if configured and not tags:
            log.info("ingest: %s is configured, but no chat's sources name it: it follows nothing", source)
        return tags

    sources: list[Source] = []
    if tags := chats_of("mastodon"):
        from mixer.ingest.sources.mastodon_follow import MastodonSource

        for instance in settings.mastodon_instances:
            sources.append(
                MastodonSource(
                    publisher,
                    cursors,
                    ChatMatcher(tags),
                    instance=instance,
                    tags=tags,
                    token=settings.mastodon_token or None,
                    poll_seconds=settings.mastodon_poll_seconds,
                )
            )
    if tags := chats_of("bluesky"):
        from mixer.ingest.sources.bluesky_follow import BlueskySource

        sources.append(
            BlueskySource(
                publisher,
                cursors,
                ChatMatcher(tags),
                endpoint=settings.bluesky_endpoint,
                appview=settings.bluesky_appview if settings.bluesky_profiles else None,
                profile_ttl=settings.bluesky_profile_ttl_seconds,
            )
        )
    if tags := chats_of("x"):
        from mixer.ingest.sources.x_stream import XSource

        sources.append(
            XSource(
                publisher,
                cursors,
                ChatMatcher(tags),
                bearer_token=settings.x_bearer_token,
                tags=tags,
                api=settings.x_api,
                backfill_minutes=settings.x_backfill_minutes,
            )
        )
    return sources


async def follow_sources(settings: Settings, redis_url: str, stats_every: float = 5.0, log_every: int = 12) -> None:
    """Run every configured follower until cancelled; their counters go to Redis every ``stats_every`` seconds
    (shown by /api/stats) and to the log every ``log_every`` of those."""
    keys = Keys(settings.key_prefix)
    redis = connect.client(redis_url, keys.feed, socket_timeout=10)
    publisher = Publisher(redis, keys, settings.chat_tags, settings.chat_maxlen, active=follow_gate(settings))
    sources = build_sources(settings, publisher, CursorStore(redis, keys))
    if not settings.live_sources:
        log.info("ingest: no live sources configured ([mastodon], [bluesky], [x] in the config)")
    tasks = [asyncio.create_task(source.run(), name=source.name) for source in sources]
    try:
        for rounds in itertools.count(1):
            if tasks:
                done, _ = await asyncio.wait(tasks, timeout=stats_every)
            else:
                done = set()
                await asyncio.sleep(stats_every)
            for task in done:
                raise RuntimeError(f"follower {task.get_name()} stopped") from task.exception()
            # skipped (logged once per outage) while Redis is away: a follower never stops for its stats
            await write_stats(redis, keys, {source.name: source.counters for source in sources})
            if rounds % log_every == 0:
                for source in sources:
                    log.info("ingest %s: %s", source.name, dict(source.counters))
    finally:
        for task in tasks:
            await stop_task(task)
        await publisher.aclose()
        await redis.aclose()
