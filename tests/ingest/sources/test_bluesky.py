"""Bluesky: the Jetstream parser over the real golden events (and posts built from them), and
the follower against a fake Jetstream websocket server on 127.0.0.1 with a real Redis."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
import msgpack
import pytest
import redis.asyncio as aioredis

from mixer.backoff import Backoff
from mixer.codec import EDIT_FIELD, FIELD, RETRACT_FIELD, unpack_post
from mixer.ingest.hashtags import ChatMatcher
from mixer.ingest.publish import CursorStore, Publisher
from mixer.ingest.sources.bluesky import parse_jetstream
from mixer.ingest.sources.bluesky_follow import SESSION_TIMEOUT, BlueskySource
from mixer.keys import Keys
from mixer.models import Edit, Ignored, Post, Retraction
from mixer.streams import read_range
from tests.fake_jetstream import (
    BASE_US,
    GOLDEN,
    GOLDEN_POST,
    POSTER,
    FakeJetstream,
    Plan,
    post_event,
    serving_jetstream,
)
from tests.helpers import eventually

CHATS = ("smbiz", "edchat")
MATCHER = ChatMatcher(CHATS)
NOW = 1_779_719_100_000
ROUND_ROBIN_TAGS: tuple[list[str], ...] = (["smbiz"], ["edchat"], ["smbiz", "edchat"], [])


def delete_event(rkey: str, time_us: int, did: str = POSTER) -> dict[str, Any]:
    """The golden delete, re-aimed at a post."""
    event = copy.deepcopy(GOLDEN[5])
    event.update(did=did, time_us=time_us)
    event["commit"].update(collection="app.bsky.feed.post", rkey=rkey)
    return event


def key_of(rkey: str) -> str:
    return f"bluesky:at://{POSTER}/app.bsky.feed.post/{rkey}"


def only(events: list[Any]) -> Any:
    assert len(events) == 1
    return events[0]


# --- parser: the golden events ----------------------------------------------------------


def test_golden_reply_post_becomes_a_post_keyed_by_its_at_uri_with_reply_to() -> None:
    post = only(parse_jetstream(GOLDEN_POST, MATCHER, NOW))
    assert isinstance(post, Post)
    assert post.key == key_of("3mmoojp4cd223")
    assert post.source == "bluesky"
    assert post.text == "Try RSV for a good time !!"
    assert post.author.handle == POSTER and post.author.name == "" and post.author.avatar is None
    assert post.url == f"https://bsky.app/profile/{POSTER}/post/3mmoojp4cd223"
    assert post.created == int(datetime(2026, 5, 25, 14, 23, 28, 757000, tzinfo=UTC).timestamp() * 1000)
    assert post.at == NOW
    assert post.lang == "en"
    assert post.reply_to == "bluesky:at://did:plc:j76trmiofvaxxpvx2vnb2vwf/app.bsky.feed.post/3mmojbrjwbs26"
    assert post.chats == () and post.media == ()
    assert post.boost_of is None


@pytest.mark.parametrize(
    ("index", "reason"),
    [
        (0, "collection_like"),
        (2, "collection_repost"),  # a repost names only its subject: there is no post to show
        (3, "collection_follow"),
        (4, "collection_profile"),
        (5, "collection_other"),  # a delete of a third-party record (org.hypercerts...)
        (6, "collection_other"),  # an update of a third-party record (place.stream...)
        (9, "collection_block"),
        (7, "kind_identity"),
        (8, "kind_account"),
    ],
)
def test_golden_events_that_are_not_posts_are_ignored_with_their_reason(index: int, reason: str) -> None:
    with pytest.raises(Ignored) as caught:
        parse_jetstream(GOLDEN[index], MATCHER, NOW)
    assert caught.value.reason == reason


def test_every_golden_event_is_one_post_or_ignored_never_malformed() -> None:
    posts, ignored = 0, 0
    for event in GOLDEN:
        try:
            posts += len(parse_jetstream(event, ChatMatcher(None), NOW))
        except Ignored:
            ignored += 1
    assert (posts, ignored) == (1, 9)


def test_delete_of_a_post_is_a_retraction_of_its_key() -> None:
    retraction = only(parse_jetstream(delete_event("3mmontn3gnc2e", 1), MATCHER, NOW))
    assert retraction == Retraction(key_of("3mmontn3gnc2e"), "bluesky")


# --- parser: posts built from the golden post ---------------------------------------------


def test_facet_tags_select_the_configured_chats_in_text_order() -> None:
    event = post_event("3aaa", "Morning all!", ["SMBiz", "other", "edchat"])
    assert only(parse_jetstream(event, MATCHER, NOW)).chats == ("smbiz", "edchat")
    assert only(parse_jetstream(event, ChatMatcher(None), NOW)).chats == ("smbiz", "other", "edchat")


def test_outline_tags_select_chats_without_appearing_in_the_text() -> None:
    event = post_event("3aab", "A question for tonight", outline=["EdChat", "#smbiz"])
    post = only(parse_jetstream(event, MATCHER, NOW))
    assert post.chats == ("edchat", "smbiz")
    assert "#" not in post.text


def test_hashtag_written_in_text_without_a_facet_is_not_a_tag_on_bluesky() -> None:
    event = post_event("3aac", "typed by hand #smbiz")
    assert only(parse_jetstream(event, MATCHER, NOW)).chats == ()


def test_non_latin_and_fullwidth_tags_match_after_normalisation() -> None:
    matcher = ChatMatcher(["教育チャット", "ελληνικά", "smbiz"])
    fullwidth = "ＳＭＢＩＺ"  # noqa: RUF001  # fullwidth on purpose: NFKC makes it "SMBIZ"
    event = post_event("3aad", "こんにちは", ["教育チャット", "ΕΛΛΗΝΙΚΆ", fullwidth])
    assert only(parse_jetstream(event, matcher, NOW)).chats == ("教育チャット", "ελληνικά", "smbiz")


def test_image_embeds_become_cdn_image_urls() -> None:
    cids = [
        "bafkreieajxclqzwk2mczx7hxmoboqpuiveqlbm35gsda5xlaqfmlryu4ri",
        "bafkreicd6csmqjikxnkuwxu4sjre6gqy6pcts7cwab7lg4kixca2k2nfd4",
    ]
    images = {
        "$type": "app.bsky.embed.images",
        "images": [
            {"alt": "", "image": {"$type": "blob", "ref": {"$link": cid}, "mimeType": "image/jpeg", "size": 720303}}
            for cid in cids
        ],
    }
    expected = tuple(f"https://cdn.bsky.app/img/feed_fullsize/plain/{POSTER}/{cid}@jpeg" for cid in cids)
    assert only(parse_jetstream(post_event("3aae", embed=images), MATCHER, NOW)).media == expected
    quote_with_media = {
        "$type": "app.bsky.embed.recordWithMedia",
        "media": images,
        "record": {"$type": "app.bsky.embed.record", "record": GOLDEN[2]["commit"]["record"]["subject"]},
    }
    assert only(parse_jetstream(post_event("3aaf", embed=quote_with_media), MATCHER, NOW)).media == expected


def test_image_ref_that_is_not_a_cid_is_left_out() -> None:
    images = {"$type": "app.bsky.embed.images", "images": [{"image": {"ref": {"$link": "../../evil?x=1"}}}]}
    assert only(parse_jetstream(post_event("3aag", embed=images), MATCHER, NOW)).media == ()


def test_quote_embed_yields_only_the_quoting_post() -> None:
    subject = GOLDEN[2]["commit"]["record"]["subject"]  # a real post reference (from the golden repost)
    quote = {"$type": "app.bsky.embed.record", "record": subject}
    post = only(parse_jetstream(post_event("3aah", "so true", ["smbiz"], embed=quote), MATCHER, NOW))
    assert post.key == key_of("3aah") and post.chats == ("smbiz",) and post.media == ()
    did, _, rkey = subject["uri"].removeprefix("at://").partition("/app.bsky.feed.post/")
    assert post.quote_of == f"bluesky:{subject['uri']}"  # the quoted post's key, as its own Post would have
    assert post.quote_url == f"https://bsky.app/profile/{did}/post/{rkey}"
    with_media = {"$type": "app.bsky.embed.recordWithMedia", "media": {}, "record": quote}
    quoting = only(parse_jetstream(post_event("3aaj", embed=with_media), MATCHER, NOW))
    assert quoting.quote_of == post.quote_of
    feed = {"$type": "app.bsky.embed.record", "record": {"uri": "at://did:plc:abc/app.bsky.feed.generator/x"}}
    assert only(parse_jetstream(post_event("3aak", embed=feed), MATCHER, NOW)).quote_of is None  # not a post


def test_update_of_a_post_is_an_edit_with_the_same_key() -> None:
    edit = only(parse_jetstream(post_event("3aai", "fixed typo", ["edchat"], operation="update"), MATCHER, NOW))
    assert isinstance(edit, Edit)
    assert edit.post.key == key_of("3aai") and edit.post.text == "fixed typo #edchat"
    assert edit.post.chats == ("edchat",)


@pytest.mark.parametrize("created_at", [None, "yesterday", "0001-01-01T00:00:00Z"])
def test_created_falls_back_to_time_us_when_created_at_is_missing_or_unusable(created_at: str | None) -> None:
    event = post_event("3aaj", time_us=1_779_719_012_345_678)
    event["commit"]["record"]["createdAt"] = created_at
    assert only(parse_jetstream(event, MATCHER, NOW)).created == 1_779_719_012_345


def test_created_at_later_than_jetstream_saw_the_post_is_clamped_to_time_us() -> None:
    event = post_event("3aam", time_us=1_779_719_012_345_678)
    event["commit"]["record"]["createdAt"] = "2099-01-01T00:00:00Z"
    assert only(parse_jetstream(event, MATCHER, NOW)).created == 1_779_719_012_345


def test_unknown_kind_operation_and_collection_are_ignored_with_bounded_reasons() -> None:
    cases = {
        "kind_sync": {**GOLDEN[7], "kind": "sync"},
        "kind_other": {**GOLDEN[7], "kind": "weird kind!"},
        "operation_resync": post_event("3aak", operation="resync"),
        "collection_postgate": {**GOLDEN[0], "commit": {**GOLDEN[0]["commit"], "collection": "app.bsky.feed.postgate"}},
    }
    for reason, event in cases.items():
        with pytest.raises(Ignored) as caught:
            parse_jetstream(event, MATCHER, NOW)
        assert caught.value.reason == reason


def _without(path: str) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def mutate(event: dict[str, Any]) -> None:
        node = event
        for name in parents:
            node = node[name]
        del node[last]

    return mutate


def _setting(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def mutate(event: dict[str, Any]) -> None:
        node = event
        for name in parents:
            node = node[name]
        node[last] = value

    return mutate


@pytest.mark.parametrize(
    "mutate",
    [
        _without("kind"),
        _without("did"),
        _setting("did", "did:plc:abc/../../x"),
        _without("commit"),
        _setting("commit.collection", 7),
        _setting("commit.rkey", "a/b"),
        _without("commit.record"),
        _setting("commit.record.text", ["not", "text"]),
        _setting("commit.record.text", "lone \ud800 surrogate"),
        _setting("commit.operation", None),
    ],
)
def test_malformed_events_raise_value_error(mutate: Callable[[dict[str, Any]], None]) -> None:
    event = post_event("3aal", "hi", ["smbiz"])
    mutate(event)
    with pytest.raises(ValueError):
        parse_jetstream(event, MATCHER, NOW)


def test_an_event_that_is_not_an_object_is_malformed() -> None:
    with pytest.raises(ValueError):
        parse_jetstream([GOLDEN_POST], MATCHER, NOW)  # type: ignore[arg-type]


# --- follower: a fake Jetstream on 127.0.0.1 ------------------------------------------------


def make_source(redis: aioredis.Redis, keys: Keys, endpoint: str, **options: Any) -> BlueskySource:
    publisher = Publisher(redis, keys, CHATS, maxlen=10_000)
    backoff = Backoff(base=0.01, cap=0.05, jitter=0.0)
    return BlueskySource(publisher, CursorStore(redis, keys), MATCHER, endpoint=endpoint, backoff=backoff, **options)


@asynccontextmanager
async def following(source: BlueskySource) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(source.run())
    try:
        yield task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def golden_timeline() -> list[tuple[int, str]]:
    """The golden events as Jetstream sends them: in time_us order."""
    return sorted((event["time_us"], json.dumps(event)) for event in GOLDEN)


def chat_posts(first: int, count: int) -> list[tuple[int, str]]:
    """Posts ``first``..``first+count-1``, 1 ms apart, tagged smbiz, edchat, both, none in turn."""
    return [
        (t, json.dumps(post_event(f"3gen{i:04d}", f"question {i}", ROUND_ROBIN_TAGS[i % 4], time_us=t)))
        for i in range(first, first + count)
        for t in [BASE_US + i * 1000]
    ]


def expected(first: int, count: int, chat: str) -> list[str]:
    return [key_of(f"3gen{i:04d}") for i in range(first, first + count) if chat in ROUND_ROBIN_TAGS[i % 4]]


async def stream(redis: aioredis.Redis, keys: Keys, chat: str) -> list[tuple[bytes, str]]:
    """(kind, post key) of every entry in a chat stream, oldest first."""
    out = []
    for entry_id, payload, kind in await read_range(redis, keys.chat(chat), "0-0", count=10_000):
        key = msgpack.unpackb(payload)["key"] if kind == RETRACT_FIELD else unpack_post(entry_id, payload).key
        out.append((kind, key))
    return out


async def post_keys(redis: aioredis.Redis, keys: Keys, chat: str) -> list[str]:
    return [key for kind, key in await stream(redis, keys, chat) if kind == FIELD]


def all_published(
    redis: aioredis.Redis, keys: Keys, first: int, count: int, source: BlueskySource | None = None, published: int = 0
) -> Callable[[], Awaitable[bool]]:
    """All those posts are in their chat streams (and ``source`` has counted ``published`` posts)."""

    async def check() -> bool:
        if source is not None and source.counters["published"] < published:
            return False
        for chat in CHATS:
            if len(await post_keys(redis, keys, chat)) < len(expected(first, count, chat)):
                return False
        return True

    return check


async def assert_each_post_once(redis: aioredis.Redis, keys: Keys, first: int, count: int) -> None:
    for chat in CHATS:
        assert await post_keys(redis, keys, chat) == expected(first, count, chat)


def replayed_between(messages: list[tuple[int, str]], low: int, high: int) -> int:
    return sum(1 for t, _ in messages if low <= t <= high)


async def test_follower_asks_for_posts_only_uncompressed_and_publishes_tagged_posts(
    redis: aioredis.Redis, keys: Keys
) -> None:
    fake = FakeJetstream(golden_timeline() + chat_posts(0, 8))
    async with serving_jetstream(fake) as endpoint:
        source = make_source(redis, keys, endpoint)
        async with following(source):
            await eventually(all_published(redis, keys, 0, 8, source, 6))
    await assert_each_post_once(redis, keys, 0, 8)
    assert fake.queries == [{"wantedCollections": "app.bsky.feed.post"}]  # no cursor yet, no compress
    assert "Socket-Encoding" not in fake.headers[0] and "Sec-WebSocket-Extensions" not in fake.headers[0]
    assert source.counters["received"] == 18
    assert source.counters["published"] == 6
    assert source.counters["skipped:no_chat"] == 3  # the golden reply and two untagged posts
    assert source.counters["reconnects"] == 0


async def test_dropped_connection_resumes_from_rewound_cursor_missing_and_repeating_nothing(
    redis: aioredis.Redis, keys: Keys
) -> None:
    messages = golden_timeline() + chat_posts(0, 40)
    fake = FakeJetstream(messages, plans=[Plan(cut_after=30)])
    async with serving_jetstream(fake) as endpoint:
        source = make_source(redis, keys, endpoint)
        async with following(source):
            await eventually(all_published(redis, keys, 0, 40, source, 30))
    await assert_each_post_once(redis, keys, 0, 40)
    last_seen = messages[29][0]
    assert fake.queries[1] == {"wantedCollections": "app.bsky.feed.post", "cursor": str(last_seen - 1_000_000)}
    replayed = replayed_between(messages, last_seen - 1_000_000, last_seen)
    assert source.counters["skipped:replayed"] == replayed > 20  # the rewound second is re-sent, and skipped
    assert source.counters["received"] == 50 + replayed
    assert source.counters["published"] == 30
    assert source.counters["reconnects"] == 1


async def test_truncated_message_is_counted_malformed_and_the_stream_goes_on(redis: aioredis.Redis, keys: Keys) -> None:
    messages = chat_posts(0, 8)
    time_us, raw = messages[3]
    messages.insert(4, (time_us, raw[: len(raw) // 2]))
    fake = FakeJetstream(messages)
    async with serving_jetstream(fake) as endpoint:
        source = make_source(redis, keys, endpoint)
        async with following(source):
            await eventually(all_published(redis, keys, 0, 8))
    await assert_each_post_once(redis, keys, 0, 8)
    assert source.counters["malformed"] == 1
    assert source.counters["reconnects"] == 0


async def test_unknown_kinds_and_collections_are_counted_as_skipped(redis: aioredis.Redis, keys: Keys) -> None:
    sync: dict[str, Any] = {
        "did": POSTER,
        "time_us": BASE_US - 3,
        "kind": "sync",
        "sync": {"did": POSTER, "rev": "3mmoojpaqkn2z"},
    }
    gate = copy.deepcopy(GOLDEN_POST)
    gate.update(time_us=BASE_US - 2)
    gate["commit"].update(collection="app.bsky.feed.postgate", record={"$type": "app.bsky.feed.postgate"})
    blog = copy.deepcopy(gate)
    blog.update(time_us=BASE_US - 1)
    blog["commit"]["collection"] = "com.whtwnd.blog.entry"
    extra = [(e["time_us"], json.dumps(e)) for e in (sync, gate, blog)]
    fake = FakeJetstream(golden_timeline() + extra + chat_posts(0, 4))
    async with serving_jetstream(fake) as endpoint:
        source = make_source(redis, keys, endpoint)
        async with following(source):
            await eventually(all_published(redis, keys, 0, 4))
    skipped = {name: n for name, n in source.counters.items() if name.startswith("skipped:")}
    assert skipped == {
        "skipped:kind_sync": 1,
        "skipped:kind_identity": 1,
        "skipped:kind_account": 1,
        "skipped:collection_like": 1,
        "skipped:collection_repost": 1,
        "skipped:collection_follow": 1,
        "skipped:collection_block": 1,
        "skipped:collection_profile": 1,
        "skipped:collection_postgate": 1,
        "skipped:collection_other": 3,  # org.hypercerts..., place.stream..., com.whtwnd...
        "skipped:no_chat": 2,  # the golden reply and the untagged post
    }
    assert source.counters["malformed"] == 0


async def test_restarted_follower_resumes_from_the_stored_cursor_without_repeats(
    redis: aioredis.Redis, keys: Keys
) -> None:
    messages = golden_timeline() + chat_posts(0, 20)
    fake = FakeJetstream(list(messages))
    cursors = CursorStore(redis, keys)
    last = str(messages[-1][0])  # an untagged post: stored by the cursor timer, not with a batch
    async with serving_jetstream(fake) as endpoint:
        first = make_source(redis, keys, endpoint, cursor_seconds=0.05)
        async with following(first):
            await eventually(all_published(redis, keys, 0, 20))

            async def stored_last() -> bool:
                return await cursors.get("bluesky") == last

            await eventually(stored_last)
        fake.messages.extend(chat_posts(20, 20))  # the network goes on while we are down
        second = make_source(redis, keys, endpoint)
        async with following(second):
            await eventually(all_published(redis, keys, 0, 40, second, 15))
    await assert_each_post_once(redis, keys, 0, 40)
    assert fake.queries[1] == {"wantedCollections": "app.bsky.feed.post", "cursor": str(int(last) - 1_000_000)}
    assert second.counters["skipped:replayed"] == replayed_between(messages, int(last) - 1_000_000, int(last))
    assert second.counters["published"] == 15
    stored = await cursors.get("bluesky")  # stored with the last published batch (or later, by the timer)
    assert stored is not None and int(stored) >= fake.messages[-2][0]


async def test_ignored_events_do_not_write_the_cursor_each_time_but_after_cursor_seconds(
    redis: aioredis.Redis, keys: Keys
) -> None:
    fake = FakeJetstream(golden_timeline())
    cursors = CursorStore(redis, keys)
    async with serving_jetstream(fake) as endpoint:
        lazy = make_source(redis, keys, endpoint, cursor_seconds=60.0)
        async with following(lazy):

            async def all_received() -> bool:
                return lazy.counters["received"] == 10

            await eventually(all_received)
            assert await cursors.get("bluesky") is None
        timely = make_source(redis, keys, endpoint, cursor_seconds=0.05)
        async with following(timely):

            async def stored() -> bool:
                return await cursors.get("bluesky") == str(max(e["time_us"] for e in GOLDEN))

            await eventually(stored)


async def test_silent_socket_is_treated_as_dead_and_reconnected(redis: aioredis.Redis, keys: Keys) -> None:
    messages = chat_posts(0, 30)
    fake = FakeJetstream(messages, plans=[Plan(silent_after=15)])
    async with serving_jetstream(fake) as endpoint:
        source = make_source(redis, keys, endpoint, receive_timeout=0.3)
        async with following(source):
            await eventually(all_published(redis, keys, 0, 30))
    await assert_each_post_once(redis, keys, 0, 30)
    assert source.counters["reconnects"] == 1
    assert fake.queries[1]["cursor"] == str(messages[14][0] - 1_000_000)
    assert fake.times[1] - fake.times[0] >= 0.3


async def test_http_429_is_retried_after_the_servers_retry_after(redis: aioredis.Redis, keys: Keys) -> None:
    fake = FakeJetstream(chat_posts(0, 4), plans=[Plan(status=429, headers={"Retry-After": "0.4"})])
    async with serving_jetstream(fake) as endpoint:
        source = make_source(redis, keys, endpoint)
        async with following(source):
            await eventually(all_published(redis, keys, 0, 4))
    await assert_each_post_once(redis, keys, 0, 4)
    assert source.counters["reconnects"] == 1
    assert fake.times[1] - fake.times[0] >= 0.4  # the backoff alone would have waited 0.01 s
    assert "cursor" not in fake.queries[1]


async def test_edit_and_delete_of_a_published_post_reach_its_chat_and_other_deletes_are_skipped(
    redis: aioredis.Redis, keys: Keys
) -> None:
    events = [
        post_event("3pub", "first", ["smbiz"], time_us=BASE_US),
        post_event("3quiet", "no tag", time_us=BASE_US + 1),
        post_event("3pub", "tag removed", time_us=BASE_US + 2, operation="update"),
        delete_event("3pub", BASE_US + 3),
        delete_event("3quiet", BASE_US + 4),
        delete_event("3never", BASE_US + 5),
    ]
    fake = FakeJetstream([(e["time_us"], json.dumps(e)) for e in events])
    async with serving_jetstream(fake) as endpoint:
        source = make_source(redis, keys, endpoint)
        async with following(source):

            async def retracted() -> bool:
                return len(await stream(redis, keys, "smbiz")) == 3

            await eventually(retracted)
    assert await stream(redis, keys, "smbiz") == [
        (FIELD, key_of("3pub")),
        (EDIT_FIELD, key_of("3pub")),
        (RETRACT_FIELD, key_of("3pub")),
    ]
    assert await stream(redis, keys, "edchat") == []
    assert source.counters["skipped:delete_unpublished"] == 2


async def test_a_restarted_follower_still_routes_the_delete_of_a_post_it_published_before(
    redis: aioredis.Redis, keys: Keys
) -> None:
    fake = FakeJetstream([(BASE_US, json.dumps(post_event("3pub", "first", ["edchat"], time_us=BASE_US)))])
    async with serving_jetstream(fake) as endpoint:
        async with following(make_source(redis, keys, endpoint)):
            await eventually(lambda: _has(redis, keys, "edchat", 1))
        later = BASE_US + 5_000_000  # past the rewind: not a replay
        fake.messages.append((later, json.dumps(delete_event("3pub", later))))
        second = make_source(redis, keys, endpoint)  # a new process: its memory comes from Redis
        async with following(second):
            await eventually(lambda: _has(redis, keys, "edchat", 2))
    assert await stream(redis, keys, "edchat") == [(FIELD, key_of("3pub")), (RETRACT_FIELD, key_of("3pub"))]
    assert await stream(redis, keys, "smbiz") == []  # to its chat only
    assert second.counters["skipped:delete_unpublished"] == 0


async def _has(redis: aioredis.Redis, keys: Keys, chat: str, entries: int) -> bool:
    return len(await stream(redis, keys, chat)) >= entries


def test_the_follower_session_has_connect_and_read_timeouts() -> None:
    assert SESSION_TIMEOUT.sock_connect and SESSION_TIMEOUT.sock_read and SESSION_TIMEOUT.total is None


async def test_a_server_that_accepts_and_never_answers_the_upgrade_is_given_up_by_the_session_timeout(
    redis: aioredis.Redis, keys: Keys
) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # holds the connection open, says nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    quick = aiohttp.ClientTimeout(total=None, sock_connect=1, sock_read=0.2)
    # the handshake's own bound is far away: only the session's read timeout can end the wait
    source = make_source(redis, keys, f"ws://127.0.0.1:{port}/subscribe", handshake_timeout=600, http_timeout=quick)
    try:
        async with following(source):
            await eventually(lambda: source.counters["reconnects"] >= 2, 10)
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
