"""The Mastodon follower under trouble of its own making or the instance's: a bug in one step is logged with its
traceback and retried, never the end of the follower (nor of `mixer ingest`); a tag whose timeline hangs does not
hold up the other tags. Against the fake instance serving the real statuses (tests/fake_mastodon.py)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from mixer.backoff import Backoff
from mixer.ingest.hashtags import ChatMatcher
from mixer.ingest.publish import CursorStore, Publisher
from mixer.ingest.sources import mastodon_follow
from mixer.ingest.sources.mastodon_follow import MastodonSource
from mixer.keys import Keys
from tests.fake_mastodon import STATUSES, FakeMastodon, key_of, serving_mastodon
from tests.helpers import eventually
from tests.ingest.sources.test_mastodon import following, published

LOGGER = "mixer.ingest.sources.mastodon_follow"


@pytest.fixture
async def fake() -> AsyncIterator[FakeMastodon]:
    async with serving_mastodon() as server:
        yield server


def source(redis: aioredis.Redis, keys: Keys, fake: FakeMastodon, tags: list[str], **options: Any) -> MastodonSource:
    publisher = Publisher(redis, keys, ["hoot"], maxlen=10_000)
    options.setdefault("backoff", Backoff(base=0.01, cap=0.05, jitter=0))
    options.setdefault("poll_seconds", 0.02)
    return MastodonSource(
        publisher, CursorStore(redis, keys), ChatMatcher(["hoot"]), instance=fake.url, tags=tags, **options
    )


@pytest.fixture
def buggy_once(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The follower's status parser fails once with an error no parser should raise (a bug); the ids it failed on."""
    failed: list[str] = []
    real = mastodon_follow.parse_status

    def parse_status(data: Any, *args: Any, **kwargs: Any) -> Any:
        if not failed:
            failed.append(data["id"])
            raise AttributeError("'NoneType' object has no attribute 'get'")
        return real(data, *args, **kwargs)

    monkeypatch.setattr(mastodon_follow, "parse_status", parse_status)
    return failed


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.exc_info]


async def test_a_bug_while_polling_is_logged_with_its_traceback_and_the_tag_is_polled_again_losing_nothing(
    redis: aioredis.Redis, keys: Keys, fake: FakeMastodon, buggy_once: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    fake.timeline = STATUSES[:3]
    follower = source(redis, keys, fake, ["hoot"])
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        async with following(follower) as task:
            assert await published(redis, keys, 3) == [key_of(s) for s in STATUSES[:3]]
            assert not task.done()
    [record] = tracebacks(caplog)
    assert record.exc_info is not None and record.exc_info[0] is AttributeError  # the traceback, once
    assert record.getMessage().endswith(f"unexpected failure polling #hoot on {fake.url}")
    assert buggy_once == [STATUSES[0]["id"]] and follower.counters["reconnects"] == 1


async def test_a_bug_while_streaming_is_logged_with_its_traceback_and_the_stream_reconnects(
    redis: aioredis.Redis, keys: Keys, fake: FakeMastodon, buggy_once: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    s1, s2 = STATUSES[:2]
    follower = source(redis, keys, fake, ["hoot"], token="t0ken")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        async with following(follower) as task:
            await asyncio.wait_for(fake.subscribed.wait(), 5)
            fake.timeline.append(s1)  # the backfill of the next connection finds it
            await fake.push("update", json.dumps(s1))  # the bug strikes on it
            assert await published(redis, keys, 1) == [key_of(s1)]
            await asyncio.wait_for(fake.subscribed.wait(), 5)
            await fake.post(s2)
            assert await published(redis, keys, 2) == [key_of(s1), key_of(s2)]
            assert not task.done()
    [record] = tracebacks(caplog)
    assert record.exc_info is not None and record.exc_info[0] is AttributeError
    lost = "lost (unexpected AttributeError); reconnecting in 0.01s"
    assert any(r.getMessage().endswith(lost) for r in caplog.records)
    assert fake.connections["ws"] == 2 and follower.counters["reconnects"] >= 1


async def test_a_tag_whose_timeline_hangs_does_not_hold_up_the_other_tags_polls(
    redis: aioredis.Redis, keys: Keys, fake: FakeMastodon
) -> None:
    fake.timeline = STATUSES[:2]
    fake.hanging = {"slow"}  # listed first: polled one after the other, #hoot would wait the whole request timeout
    follower = source(redis, keys, fake, ["slow", "hoot"], request_timeout=30)
    async with following(follower):
        assert await published(redis, keys, 2) == [key_of(s) for s in STATUSES[:2]]
        fake.timeline.append(STATUSES[2])
        assert await published(redis, keys, 3) == [key_of(s) for s in STATUSES[:3]]
        assert fake.asked["slow"] == fake.waiting["slow"] == 1  # its first request is still unanswered
    assert follower.counters["reconnects"] == 0


async def test_a_tag_whose_backfill_hangs_does_not_hold_up_the_other_tags_backfill_when_streaming(
    redis: aioredis.Redis, keys: Keys, fake: FakeMastodon
) -> None:
    fake.timeline = STATUSES[:2]
    fake.hanging = {"slow"}
    follower = source(redis, keys, fake, ["slow", "hoot"], token="t0ken", request_timeout=30)
    async with following(follower):
        assert await published(redis, keys, 2) == [key_of(s) for s in STATUSES[:2]]
        assert fake.waiting["slow"] == 1


async def test_tags_are_polled_a_bounded_number_at_a_time(
    redis: aioredis.Redis, keys: Keys, fake: FakeMastodon
) -> None:
    fake.hanging = {"a", "b", "c"}
    follower = source(redis, keys, fake, ["a", "b", "c", "hoot"], max_requests=2, request_timeout=30)
    fake.timeline = STATUSES[:1]
    async with following(follower):
        await eventually(lambda: sum(fake.waiting.values()) == 2)
        assert await published(redis, keys, 1, timeout=0.3) == []  # both slots are held by hanging tags
    assert sum(fake.asked.values()) == 2


async def test_a_status_fetched_for_two_tags_at_once_is_published_once(
    redis: aioredis.Redis, keys: Keys, fake: FakeMastodon
) -> None:
    fake.timeline = STATUSES[:3]  # the fake answers every tag's timeline with them: each carries both tags
    follower = source(redis, keys, fake, ["hoot", "owl"])
    async with following(follower):
        assert await published(redis, keys, 3) == [key_of(s) for s in STATUSES[:3]]
        await eventually(lambda: fake.asked["hoot"] >= 2 and fake.asked["owl"] >= 2)
    assert await published(redis, keys, 4, timeout=0) == [key_of(s) for s in STATUSES[:3]]
    assert follower.counters["published"] == 3 and follower.counters["duplicates"] == 3
