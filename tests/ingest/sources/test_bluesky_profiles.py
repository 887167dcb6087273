"""Bluesky profiles: the pure batcher and answer reader, and the resolver beside the follower against a fake
AppView (aiohttp on 127.0.0.1) and a fake Jetstream, with a real Redis: a did becomes a handle, a name, an avatar."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from mixer.backoff import Backoff
from mixer.codec import EDIT_FIELD, FIELD, unpack_post
from mixer.config import load_settings, render_settings
from mixer.ingest.follow import build_sources
from mixer.ingest.hashtags import ChatMatcher
from mixer.ingest.publish import CursorStore, Publisher
from mixer.ingest.sources.bluesky_appview import MAX_ACTORS, ProfileBatcher, parse_profiles
from mixer.ingest.sources.bluesky_follow import BlueskySource
from mixer.ingest.sources.bluesky_profiles import ProfileResolver
from mixer.keys import Keys
from mixer.merge.stage import MergeStage
from mixer.models import Author, Post
from mixer.settings import ChatSettings, Settings
from mixer.streams import read_range
from tests.fake_jetstream import BASE_US, FakeJetstream, post_event, serving_jetstream
from tests.helpers import FakeClock, eventually, feed_entries
from tests.servers import serving

CHATS = ("smbiz", "edchat")
MATCHER = ChatMatcher(CHATS)
ALICE = "did:plc:alice0000000000000000000"
AVATAR = f"https://cdn.bsky.app/img/avatar/plain/{ALICE}/bafkreiavatar@jpeg"
ALICE_PROFILE = {"did": ALICE, "handle": "alice.bsky.social", "displayName": "Alice Example", "avatar": AVATAR}
ALICE_AUTHOR = {"handle": "alice.bsky.social", "name": "Alice Example", "avatar": AVATAR}


def did(n: int) -> str:
    return f"did:plc:author{n:04d}"


def profile(n: int) -> dict[str, Any]:
    return {"did": did(n), "handle": f"author{n}.bsky.social", "displayName": f"Author {n}"}


def message(author: str, rkey: str, time_us: int, tags: tuple[str, ...] = ("smbiz",)) -> tuple[int, str]:
    """A Jetstream post event by ``author`` as the fake Jetstream sends it."""
    event = post_event(rkey, f"hello from {author}", tags, time_us=time_us)
    event["did"] = author
    return time_us, json.dumps(event)


# --- pure: the batcher and the answers ------------------------------------------------------


def test_batches_hold_at_most_25_dids_oldest_first_and_the_rest_waits_for_the_linger() -> None:
    batcher = ProfileBatcher(linger=0.5)
    for n in range(30):
        batcher.want(did(n), now=100.0 + n / 1000)
    assert batcher.due(100.1) == [did(n) for n in range(MAX_ACTORS)]
    assert batcher.due(100.1) == []  # 5 left: they wait for others until the oldest has lingered
    assert batcher.next_due(100.1) == pytest.approx(0.425)
    assert batcher.due(100.525) == [did(n) for n in range(25, 30)]
    assert batcher.next_due(100.6) is None


def test_a_did_is_asked_once_however_often_it_is_wanted_even_while_it_is_being_asked() -> None:
    batcher = ProfileBatcher(linger=0.0)
    batcher.want(ALICE, 0.0)
    batcher.want(ALICE, 0.0)
    assert batcher.due(0.0) == [ALICE]
    batcher.want(ALICE, 1.0)  # a new post while the call runs: its answer serves it
    assert batcher.due(1.0) == [] and len(batcher) == 0
    batcher.done([ALICE])
    batcher.want(ALICE, 2.0)
    assert batcher.due(2.0) == [ALICE]


def test_a_failed_batch_goes_back_first_in_line_and_nothing_is_asked_before_the_backoff_is_over() -> None:
    batcher = ProfileBatcher(linger=0.0)
    batcher.want(did(1), 0.0)
    failed = batcher.due(0.0)
    batcher.want(did(2), 0.5)
    batcher.failed(failed, now=1.0, delay=2.0)
    assert batcher.due(2.9) == [] and batcher.next_due(2.9) == pytest.approx(0.1)
    assert batcher.due(3.0) == [did(1), did(2)]


def test_an_answer_gives_handle_name_and_avatar_and_leaves_out_what_cannot_be_shown() -> None:
    answer = {
        "profiles": [
            ALICE_PROFILE,
            {"did": did(1), "handle": "handle.invalid", "displayName": "  Bob \n Builder "},  # handle does not verify
            {"did": did(2), "handle": "carol.example", "avatar": "javascript:alert(1)"},
            {"handle": "no-did.example"},
            "not a profile",
        ]
    }
    assert parse_profiles(answer) == {
        ALICE: Author("alice.bsky.social", "Alice Example", AVATAR),
        did(1): Author(did(1), "Bob Builder", None),
        did(2): Author("carol.example", "", None),
    }
    for bad in ([], {"profiles": None}, "x"):
        with pytest.raises(ValueError):
            parse_profiles(bad)


# --- a fake AppView -------------------------------------------------------------------------


@dataclass
class Answer:
    """What the fake AppView answers to one call instead of the profiles."""

    status: int = 200
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # answer nothing until the test ends (a timeout)


@dataclass
class FakeAppView:
    """``app.bsky.actor.getProfiles`` over ``profiles``; records each call's actors and time; refuses > 25 actors."""

    profiles: dict[str, dict[str, Any]]
    answers: list[Answer] = field(default_factory=list)
    calls: list[list[str]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def get_profiles(self, request: web.Request) -> web.StreamResponse:
        actors = request.query.getall("actors", [])
        self.calls.append(actors)
        self.times.append(time.monotonic())
        if len(actors) > MAX_ACTORS:
            return web.json_response({"error": "InvalidRequest"}, status=400)
        answer = self.answers.pop(0) if self.answers else None
        if answer is not None and answer.hang:
            await self.release.wait()
        if answer is not None:
            return web.Response(status=answer.status, text=answer.body, headers=answer.headers)
        return web.json_response({"profiles": [self.profiles[a] for a in actors if a in self.profiles]})


@asynccontextmanager
async def appview(fake: FakeAppView) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/xrpc/app.bsky.actor.getProfiles", fake.get_profiles)
    async with serving(app) as url:
        try:
            yield url
        finally:
            fake.release.set()  # a request held open must end before the server can


def make_source(redis: aioredis.Redis, keys: Keys, endpoint: str, view: str | None, **options: Any) -> BlueskySource:
    fast = Backoff(base=0.01, cap=0.05, jitter=0.0)
    return BlueskySource(
        Publisher(redis, keys, CHATS, maxlen=10_000),
        CursorStore(redis, keys),
        MATCHER,
        endpoint=endpoint,
        backoff=fast,
        appview=view,
        profile_backoff=Backoff(base=0.01, cap=0.05, jitter=0.0),
        **options,
    )


@asynccontextmanager
async def following(source: BlueskySource) -> AsyncIterator[None]:
    task = asyncio.create_task(source.run())
    try:
        yield
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def entries(redis: aioredis.Redis, keys: Keys, chat: str = "smbiz") -> list[tuple[bytes, Post]]:
    """(kind, post) of every post and edit in a chat stream, oldest first."""
    return [(kind, unpack_post(i, raw)) for i, raw, kind in await read_range(redis, keys.chat(chat), "0-0", count=1000)]


async def has(redis: aioredis.Redis, keys: Keys, count: int, chat: str = "smbiz") -> bool:
    return len(await entries(redis, keys, chat)) >= count


# --- the follower with a resolver -----------------------------------------------------------


async def test_a_post_by_an_unknown_did_goes_out_at_once_and_an_edit_brings_its_profile_to_the_feed(
    redis: aioredis.Redis, keys: Keys
) -> None:
    fake = FakeAppView({ALICE: ALICE_PROFILE})
    async with serving_jetstream(FakeJetstream([message(ALICE, "3first", BASE_US)])) as endpoint, appview(fake) as view:
        source = make_source(redis, keys, endpoint, view, profile_ttl=3600)
        async with following(source):
            await eventually(lambda: has(redis, keys, 2))
            await eventually(lambda: source.counters["profiles:resolved"] == 1)  # and cached
    (first_kind, first), (edit_kind, edit) = await entries(redis, keys)
    assert first_kind == FIELD and first.author == Author(ALICE, "", None)  # never held back for the profile
    assert edit_kind == EDIT_FIELD and edit.key == first.key and edit.text == first.text
    assert edit.author.to_dict() == ALICE_AUTHOR
    assert fake.calls == [[ALICE]]
    assert json.loads(await redis.get(keys.bluesky_profile(ALICE))) == ALICE_AUTHOR
    assert 3_500 < await redis.pttl(keys.bluesky_profile(ALICE)) <= 3_600_000
    assert source.counters["profiles:edits"] == 1 and source.counters["profiles:resolved"] == 1

    clock = FakeClock()
    clock.now = time.time() + 5
    merge = MergeStage(redis, keys, CHATS, window=0, clock=clock)
    await merge.load_cursors()
    await merge.step(max_block=0.01)
    [(kind, shown), (update_kind, update)] = await feed_entries(redis, keys)
    assert (kind, update_kind) == ("p", "u") and shown["author"]["handle"] == ALICE
    assert update["author"] == ALICE_AUTHOR and update["id"] == shown["id"]  # the same card, now named
    assert "edited" not in update


async def test_the_next_post_by_a_resolved_did_comes_out_resolved_from_the_cache_without_a_call(
    redis: aioredis.Redis, keys: Keys
) -> None:
    fake = FakeAppView({ALICE: ALICE_PROFILE})
    jetstream = FakeJetstream([message(ALICE, "3first", BASE_US)])
    async with serving_jetstream(jetstream) as endpoint, appview(fake) as view:
        first = make_source(redis, keys, endpoint, view)
        async with following(first):
            await eventually(lambda: first.counters["profiles:resolved"] == 1)  # published and cached
        later = BASE_US + 5_000_000
        jetstream.messages.append(message(ALICE, "3second", later))
        second = make_source(redis, keys, endpoint, view)  # another process: the cache is in Redis
        async with following(second):
            await eventually(lambda: has(redis, keys, 3))
    kind, post = (await entries(redis, keys))[2]
    assert kind == FIELD and post.key.endswith("/3second") and post.author.to_dict() == ALICE_AUTHOR
    assert fake.calls == [[ALICE]]
    assert second.counters["profiles:from_cache"] == 1 and second.counters["profiles:calls"] == 0


async def test_dids_are_asked_at_most_25_per_call_and_each_once(redis: aioredis.Redis, keys: Keys) -> None:
    fake = FakeAppView({did(n): profile(n) for n in range(30)})
    messages = [message(did(n), f"3p{n:03d}", BASE_US + n) for n in range(30)]
    async with serving_jetstream(FakeJetstream(messages)) as endpoint, appview(fake) as view:
        source = make_source(redis, keys, endpoint, view, profile_linger=1.0)
        async with following(source):
            await eventually(lambda: has(redis, keys, 60))
    assert sorted(len(call) for call in fake.calls) == [5, 25]
    assert sorted(d for call in fake.calls for d in call) == sorted(did(n) for n in range(30))
    edits = [post for kind, post in await entries(redis, keys) if kind == EDIT_FIELD]
    assert sorted(p.author.handle for p in edits) == sorted(f"author{n}.bsky.social" for n in range(30))


async def test_appview_failures_never_hold_posts_back_and_are_retried_with_backoff_and_retry_after(
    redis: aioredis.Redis, keys: Keys
) -> None:
    fake = FakeAppView(
        {ALICE: ALICE_PROFILE},
        answers=[
            Answer(503, "down for maintenance"),
            Answer(429, "slow down", {"Retry-After": "1"}),
            Answer(200, '{"profiles": [{"did": '),  # truncated JSON
            Answer(200, '{"error": "not what you asked"}'),
        ],
    )
    async with serving_jetstream(FakeJetstream([message(ALICE, "3first", BASE_US)])) as endpoint, appview(fake) as view:
        source = make_source(redis, keys, endpoint, view)
        async with following(source):
            await eventually(lambda: has(redis, keys, 1))
            assert [kind for kind, _ in await entries(redis, keys)] == [FIELD]  # out before any profile
            await eventually(lambda: has(redis, keys, 2), timeout=10)
    assert (await entries(redis, keys))[1][1].author.to_dict() == ALICE_AUTHOR
    assert len(fake.calls) == 5 and source.counters["profiles:failures"] == 4
    assert fake.times[2] - fake.times[1] >= 0.95  # the 429's Retry-After, not the 0.01 s backoff


async def test_with_the_appview_down_posts_flow_with_their_dids(redis: aioredis.Redis, keys: Keys) -> None:
    fake = FakeAppView({})
    async with appview(fake) as view:
        pass  # a port where nothing listens any more
    messages = [message(did(n), f"3p{n}", BASE_US + n) for n in range(5)]
    async with serving_jetstream(FakeJetstream(messages)) as endpoint:
        source = make_source(redis, keys, endpoint, view)
        async with following(source):
            await eventually(lambda: has(redis, keys, 5))
            await eventually(lambda: source.counters["profiles:failures"] >= 2)
    assert [(kind, post.author.handle) for kind, post in await entries(redis, keys)] == [
        (FIELD, did(n)) for n in range(5)
    ]


async def test_switched_off_the_follower_asks_nothing_and_posts_keep_their_dids(
    redis: aioredis.Redis, keys: Keys
) -> None:
    fake = FakeAppView({ALICE: ALICE_PROFILE})
    async with serving_jetstream(FakeJetstream([message(ALICE, "3first", BASE_US)])) as endpoint, appview(fake):
        source = make_source(redis, keys, endpoint, None)
        async with following(source):
            await eventually(lambda: source.counters["published"] == 1)
    assert [(kind, post.author.handle) for kind, post in await entries(redis, keys)] == [(FIELD, ALICE)]
    assert fake.calls == [] and source.profiles is None


def test_the_settings_switch_and_appview_reach_the_follower(redis: aioredis.Redis, keys: Keys) -> None:
    publisher = Publisher(redis, keys, CHATS, maxlen=100)
    chats = tuple(ChatSettings(tag, tag, "#ffffff") for tag in CHATS)
    on = Settings(chats=chats, bluesky_enabled=True, bluesky_appview="http://127.0.0.1:9")
    [source] = build_sources(on, publisher, CursorStore(redis, keys))
    assert isinstance(source, BlueskySource) and source.profiles is not None
    without = Settings(chats=chats, bluesky_enabled=True, bluesky_profiles=False)
    [off] = build_sources(without, publisher, CursorStore(redis, keys))
    assert isinstance(off, BlueskySource) and off.profiles is None


def test_profile_settings_load_from_the_file_and_the_environment_and_are_printed(tmp_path: Path) -> None:
    path = tmp_path / "mixer.toml"
    path.write_text('[bluesky]\nprofiles = false\nappview = "https://appview.example/"\nprofile_ttl_seconds = 60\n')
    settings = load_settings(path, {})
    assert (settings.bluesky_profiles, settings.bluesky_appview) == (False, "https://appview.example")
    assert settings.bluesky_profile_ttl_seconds == 60.0
    env = {"MIXER_BLUESKY_PROFILES": "yes", "MIXER_BLUESKY_PROFILE_TTL_SECONDS": "120"}
    settings = load_settings(path, env)
    assert settings.bluesky_profiles is True and settings.bluesky_profile_ttl_seconds == 120.0
    rendered = render_settings(settings)
    assert 'profiles = true\nappview = "https://appview.example"\nprofile_ttl_seconds = 120.0' in rendered
    assert Settings().bluesky_profiles is True and Settings().bluesky_appview == "https://public.api.bsky.app"


# --- the resolver on its own: timeouts, refusals, deletes ------------------------------------


@asynccontextmanager
async def resolving(resolver: ProfileResolver) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(resolver.run(session))
        try:
            yield
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


def alice_post(rkey: str) -> Post:
    return Post.from_dict(
        {
            "key": f"bluesky:at://{ALICE}/app.bsky.feed.post/{rkey}",
            "source": "bluesky",
            "chats": ["smbiz"],
            "author": {"handle": ALICE, "name": ""},
            "text": "hello",
            "created": 1_700_000_000_000,
        }
    )


async def test_a_call_that_times_out_is_retried(redis: aioredis.Redis, keys: Keys) -> None:
    fake = FakeAppView({ALICE: ALICE_PROFILE}, answers=[Answer(hang=True)])
    counters: Counter[str] = Counter()
    async with appview(fake) as view:
        publisher = Publisher(redis, keys, CHATS, maxlen=100)
        fast = Backoff(base=0.01, cap=0.05, jitter=0.0)
        resolver = ProfileResolver(publisher, counters, appview=view, timeout=0.2, linger=0.0, backoff=fast)
        async with resolving(resolver):
            resolver.want([alice_post("3a")])
            await eventually(lambda: has(redis, keys, 1))
    [(kind, edit)] = await entries(redis, keys)
    assert kind == EDIT_FIELD and edit.author.to_dict() == ALICE_AUTHOR
    assert counters["profiles:failures"] == 1 and len(fake.calls) == 2


async def test_a_refused_call_leaves_its_dids_as_they_are_without_asking_again(
    redis: aioredis.Redis, keys: Keys
) -> None:
    fake = FakeAppView({ALICE: ALICE_PROFILE}, answers=[Answer(400, '{"error": "InvalidRequest"}')])
    counters: Counter[str] = Counter()
    async with appview(fake) as view:
        resolver = ProfileResolver(Publisher(redis, keys, CHATS, maxlen=100), counters, appview=view, linger=0.0)
        async with resolving(resolver):
            resolver.want([alice_post("3a")])
            await eventually(lambda: counters["profiles:refused"] == 1)
            events, missed = await resolver.resolve([alice_post("3b")])
    assert events == [alice_post("3b")] and missed == []  # known to be unresolvable for a while: not asked again
    assert await entries(redis, keys) == [] and len(fake.calls) == 1


async def test_a_post_deleted_before_its_profile_arrives_gets_no_edit(redis: aioredis.Redis, keys: Keys) -> None:
    fake = FakeAppView({ALICE: ALICE_PROFILE})
    counters: Counter[str] = Counter()
    async with appview(fake) as view:
        resolver = ProfileResolver(Publisher(redis, keys, CHATS, maxlen=100), counters, appview=view, linger=0.0)
        resolver.want([alice_post("3gone"), alice_post("3kept")])
        resolver.forget(alice_post("3gone").key)
        async with resolving(resolver):
            await eventually(lambda: has(redis, keys, 1))
            await eventually(lambda: counters["profiles:resolved"] == 1)
    assert [post.key for _, post in await entries(redis, keys)] == [alice_post("3kept").key]


def test_a_post_that_was_not_published_off_its_slot_is_not_waited_for(redis: aioredis.Redis, keys: Keys) -> None:
    publisher = Publisher(redis, keys, CHATS, maxlen=100, active=lambda chat: False)
    resolver = ProfileResolver(publisher, Counter(), appview="http://127.0.0.1:9")
    resolver.want([alice_post("3off")])
    assert len(resolver.batcher) == 0  # no AppView call for it, and no Edit that would show it after all
    assert publisher.counters["skipped_off_slot"] == 0  # the publish counted it; asking does not count it again
