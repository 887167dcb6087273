"""The live followers `mixer ingest` starts: which chats each follows, and what is said of one that follows none."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from mixer.ingest.follow import build_sources, follow_sources
from mixer.ingest.publish import CursorStore, Publisher
from mixer.ingest.sources.bluesky_follow import BlueskySource
from mixer.ingest.sources.mastodon_follow import MastodonSource
from mixer.ingest.sources.x_stream import XSource
from mixer.keys import Keys
from mixer.runtime import ingest_line
from mixer.settings import ChatSettings, Settings
from tests.helpers import eventually


def test_each_live_follower_follows_the_chats_whose_sources_name_it(redis: aioredis.Redis, keys: Keys) -> None:
    chats = (
        ChatSettings("smbiz", "smbiz", "#ffffff"),
        ChatSettings("edchat", "edchat", "#ffffff", sources=("mastodon",)),
        ChatSettings("journchat", "journchat", "#ffffff", sources=("x", "mastodon")),
    )
    settings = Settings(
        chats=chats, mastodon_instances=("https://a.example",), bluesky_enabled=True, x_bearer_token="t" * 20
    )
    publisher = Publisher(redis, keys, settings.chat_tags, 100)
    mastodon, bluesky, x = build_sources(settings, publisher, CursorStore(redis, keys))
    assert isinstance(mastodon, MastodonSource) and mastodon.tags == ("smbiz", "edchat", "journchat")
    assert isinstance(bluesky, BlueskySource) and bluesky._matcher.tags == {"smbiz"}
    assert isinstance(x, XSource) and x._tags == ("smbiz", "journchat") and x._matcher.tags == {"smbiz", "journchat"}
    only_mastodon = Settings(chats=chats[1:2], mastodon_instances=("https://a.example",), bluesky_enabled=True)
    assert [type(s) for s in build_sources(only_mastodon, publisher, CursorStore(redis, keys))] == [MastodonSource]


async def test_a_follower_no_chat_names_is_said_once_and_not_claimed_followed(
    redis_url: str, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    chats = (ChatSettings("edchat", "edchat", "#ffffff", sources=("mastodon",)),)
    settings = Settings(chats=chats, bluesky_enabled=True, key_prefix=keys.prefix)
    assert settings.live_sources == ("bluesky",) and settings.tags_for("bluesky") == ()
    line = ingest_line(settings, redis_url, [], 1.0, True)
    assert "following" not in line and "bluesky configured, but no chat's sources name it" in line, line
    both = Settings(chats=chats, bluesky_enabled=True, mastodon_instances=("https://a.example",))
    assert "following https://a.example; bluesky configured" in ingest_line(both, redis_url, [], 1.0, True)

    caplog.set_level("INFO", logger="mixer")
    task = asyncio.create_task(follow_sources(settings, redis_url))
    await eventually(lambda: any("ingest:" in r.getMessage() for r in caplog.records))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)  # the followers are built and logged before its first await
    said = [r.getMessage() for r in caplog.records if "ingest:" in r.getMessage()]
    assert said == ["ingest: bluesky is configured, but no chat's sources name it: it follows nothing"], said
