"""Mastodon: the parser over real statuses and streaming events, the follower against a fake instance.

The statuses come from halcy/Mastodon.py's cassettes (tests/fixtures/mastodon/ORIGIN.md).
Follower tests serve them from an aiohttp.web "instance" on 127.0.0.1 that speaks the
REST timeline (min_id/since_id paging, rate-limit headers), the streaming websocket and
server-sent events; to make real statuses belong to the followed chat, the fake tags each
one #hoot (its ``tags`` list; nothing else is changed).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis

from mixer.backoff import Backoff
from mixer.codec import FIELD, RETRACT_FIELD, unpack_post
from mixer.ingest.hashtags import ChatMatcher
from mixer.ingest.publish import CursorStore, Publisher
from mixer.ingest.sources.mastodon import id_order, parse_event, parse_status
from mixer.ingest.sources.mastodon_follow import MastodonSource
from mixer.ingest.sources.mastodon_html import html_to_text
from mixer.ingest.sources.mastodon_stream import SseDecoder, parse_ws_message
from mixer.keys import Keys
from mixer.models import Edit, Ignored, Post, Retraction
from mixer.streams import read_range
from tests.fake_mastodon import STATUSES, FakeMastodon, iso_in, key_of, serving_mastodon
from tests.helpers import FIXTURES as FIXTURES_DIR
from tests.helpers import eventually

FIXTURES = FIXTURES_DIR / "mastodon"
NOW = 1_800_000_000_000
HOST = "localhost:3000"
ALL = ChatMatcher(None)
HOOT = ChatMatcher(["hoot"])


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def extracted_events() -> list[dict[str, Any]]:
    lines = (FIXTURES / "streaming_events_extracted.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def posts(events: list[Any]) -> list[Post]:
    assert all(isinstance(e, Post) for e in events)
    return events


# The parser, over the real statuses.


def test_hashtag_timeline_status_becomes_a_post_in_its_tags_chat() -> None:
    [status] = load("test_hashtag_tl.02.json")
    [post] = posts(parse_status(status, HOOT, NOW))
    assert post.key == "mastodon:http://localhost:3000/ap/users/117020566092212359/statuses/117020593741189701"
    assert post.source == "mastodon"
    assert post.chats == ("hoot",)
    assert post.text == "#hoot (hashtag toot)"
    assert post.url == "http://localhost:3000/@mastodonpy_test_2/117020593741189701"
    assert post.author.handle == "mastodonpy_test_2@localhost:3000"
    assert post.author.name == "mastodonpy_test_2"  # no display name: the username
    assert post.author.avatar == "http://localhost:3000/avatars/original/missing.png"
    assert post.created == 1_785_592_555_867  # 2026-08-01T13:55:55.867Z
    assert post.at == NOW
    assert post.lang == "ja"
    assert post.reply_to is None and post.boost_of is None and post.media == ()


def test_a_status_in_no_configured_chat_has_no_chats() -> None:
    [post] = posts(parse_status(load("test_status_card.01.json"), HOOT, NOW))
    assert post.chats == ()


def test_display_name_is_the_authors_name() -> None:
    [post] = posts(parse_status(load("test_status_card.01.json"), ALL, NOW))
    assert post.author.name == "John Lennon"
    assert post.author.handle == "mastodonpy_test@localhost:3000"


def test_mentions_and_entities_become_plain_text() -> None:
    [post] = posts(parse_status(load("test_stream_user_direct.05.json"), ALL, NOW))
    assert post.text == "@mastodonpy_test beep beep I'm a jeep"  # h-card mention + &#39;


def test_invisible_link_parts_are_dropped_and_an_ellipsis_shows_a_shortened_link() -> None:
    [post] = posts(parse_status(load("test_status_card.01.json"), ALL, NOW))
    assert post.text == "example.org/"  # "http://" is an invisible span
    quote = load("test_status_post_with_quote.01.json")
    quote["quote"] = None  # a server without quote objects: the "RE:" paragraph is the reader's only hint
    quoting = posts(parse_status(quote, ALL, NOW))[-1]
    assert quoting.text == "RE: localhost:3000/@mastodonpy_tes\u2026\n\nyoooooooo" and quoting.quote_of is None


def test_html_to_text_breaks_lines_and_paragraphs_and_never_keeps_markup() -> None:
    assert html_to_text("<p>one<br>two<br/>three</p><p>four</p>") == "one\ntwo\nthree\n\nfour"
    assert html_to_text('<p>a &lt;script&gt; &amp; <b class="x">bold</b></p>') == "a <script> & bold"
    assert html_to_text("<p>x</p><script>alert(1)</script><ul><li>i</li><li>ii</li></ul>") == "x\n\ni\nii"
    assert html_to_text("<p>spaced\n   out</p>") == "spaced out"
    assert html_to_text("<pre>  keep\n  lines</pre>") == "keep\nlines"


def test_reblog_yields_the_original_and_a_boost_pointing_at_it() -> None:
    original, boost = posts(parse_status(load("test_status_reblog_unreblog.01.json"), ALL, NOW))
    assert original.key == "mastodon:http://localhost:3000/ap/users/117020565966271181/statuses/117020586019094258"
    assert original.text == "Toot!" and original.boost_of is None
    assert boost.key == (
        "mastodon:http://localhost:3000/ap/users/117020565966271181/statuses/117020586027094262/activity"
    )
    assert boost.boost_of == original.key
    assert boost.text == original.text and boost.lang == "en"
    assert boost.created == 1_785_592_438_160  # when boosted, not when posted
    assert boost.url == "http://localhost:3000/users/mastodonpy_test/statuses/117020586027094262/activity"


def test_unreblogged_status_is_just_the_original() -> None:
    [post] = posts(parse_status(load("test_status_reblog_unreblog.02.json"), ALL, NOW))
    assert post.boost_of is None and post.text == "Toot!"


def test_quote_yields_the_quoted_post_and_the_quoting_post() -> None:
    quoted, quoting = posts(parse_status(load("test_status_post_with_quote.01.json"), ALL, NOW))
    assert quoted.key.endswith("/statuses/117020582917124092") and quoted.text == "Toot!"
    assert quoting.key.endswith("/statuses/117020582925004921")
    assert quoting.boost_of is None


def test_a_quote_post_keeps_its_quote_and_drops_the_re_line_the_screens_replace() -> None:
    quoted, quoting = posts(parse_status(load("test_status_post_with_quote.01.json"), ALL, NOW))
    assert quoting.quote_of == quoted.key
    assert quoting.quote_url == "http://localhost:3000/@mastodonpy_test/117020582917124092" == quoted.url
    assert quoting.text == "yoooooooo"  # Mastodon's web UI hides the "RE:" line when it shows the quote
    assert quoting.to_dict()["quote_of"] == quoted.key and "quote_of" not in quoted.to_dict()


def test_a_quote_whose_quoted_status_is_not_shown_is_just_the_quoting_post() -> None:
    status = load("test_status_post_with_quote.01.json")
    status["quote"] = {"state": "deleted", "quoted_status": None}
    [post] = posts(parse_status(status, ALL, NOW))
    assert post.key.endswith("/statuses/117020582925004921")
    assert post.quote_of is None and post.text.startswith("RE: ")  # nothing to link to: the text keeps its hint


def test_reply_points_at_its_parent_by_local_id_or_by_uri_when_known() -> None:
    parent = load("test_status_reply.00.json")
    [reply] = posts(parse_status(load("test_status_reply.02.json"), ALL, NOW))
    assert reply.reply_to == "mastodon-id:localhost:3000:117020583245459824"
    known = {parent["id"]: parent["uri"]}
    [reply] = posts(parse_status(load("test_status_reply.02.json"), ALL, NOW, known_uris=known))
    assert reply.reply_to == "mastodon:" + parent["uri"]


def test_an_edited_status_keeps_its_key_with_the_new_text() -> None:
    [before] = posts(parse_status(load("test_status_edit.00.json"), ALL, NOW))
    [after] = posts(parse_status(load("test_status_edit.02.json"), ALL, NOW))
    assert before.key == after.key
    assert before.text.endswith("VS Code")
    assert after.text == "the best editor? why, of course it is the KDE Advanced Text Editor, Kate"


def test_a_deleted_status_response_uses_its_source_text() -> None:
    [post] = posts(parse_status(load("test_status_card.02.json"), ALL, NOW))  # content null, text = source
    assert post.text == "http://example.org/"


def test_content_warning_is_prefixed_to_the_text() -> None:
    status = load("test_stream_user_local.04.json")
    status["spoiler_text"] = "spoilers <3"
    [post] = posts(parse_status(status, ALL, NOW))
    assert post.text == "CW: spoilers <3\n\nit's cool guy"


def test_remote_accounts_keep_their_acct_and_local_ones_get_the_instance_host() -> None:
    status = load("test_stream_user_local.04.json")
    [local] = posts(parse_status(status, ALL, NOW, instance="mastodon.example"))
    assert local.author.handle == "mastodonpy_test@mastodon.example"
    status["account"]["acct"] = "someone@remote.example"
    [remote] = posts(parse_status(status, ALL, NOW, instance="mastodon.example"))
    assert remote.author.handle == "someone@remote.example"


def test_hashtags_come_from_the_text_when_tags_are_missing() -> None:
    [status] = load("test_hashtag_tl.02.json")
    del status["tags"]
    [post] = posts(parse_status(status, HOOT, NOW))
    assert post.chats == ("hoot",)


def test_media_attachments_become_media_urls() -> None:
    status = load("test_stream_user_local.04.json")
    status["media_attachments"] = [
        {"type": "image", "url": "https://files.example/a.png", "preview_url": "https://files.example/a_s.png"},
        {"type": "video", "url": None, "preview_url": "https://files.example/b_s.png"},
        {"type": "unknown", "url": None, "preview_url": None, "remote_url": "https://remote.example/c"},
    ]
    [post] = posts(parse_status(status, ALL, NOW))
    assert post.media == ("https://files.example/a.png", "https://files.example/b_s.png", "https://remote.example/c")


def test_direct_and_private_statuses_are_ignored() -> None:
    with pytest.raises(Ignored) as caught:
        parse_status(load("test_stream_direct.04.json"), ALL, NOW)
    assert caught.value.reason == "visibility_direct"
    status = load("test_stream_user_local.04.json")
    status["visibility"] = "private"
    with pytest.raises(Ignored, match="visibility_private"):
        parse_status(status, ALL, NOW)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda s: s.pop("uri"), "uri"),
        (lambda s: s.update(created_at="yesterday"), "created_at"),
        (lambda s: s.update(created_at="2026-08-02T05:25:16"), "time zone"),
        (lambda s: s.update(account="admin"), "account"),
        (lambda s: s.update(content=["<p>x</p>"]), "content"),
        (lambda s: s.update(content="\ud800"), "surrogate"),
    ],
)
def test_malformed_statuses_raise_value_error_naming_the_field(change: Callable[[Any], Any], reason: str) -> None:
    status = load("test_stream_user_local.04.json")
    change(status)
    with pytest.raises(ValueError, match=reason):
        parse_status(status, ALL, NOW)


def test_the_ten_real_streaming_events_map_to_posts_edits_retractions_or_ignored() -> None:
    outcomes = []
    for record in extracted_events():
        try:
            [event] = parse_event(record["event"], record["data"], ALL, NOW, instance=HOST)
            outcomes.append(type(event).__name__)
        except Ignored as exc:
            outcomes.append(exc.reason)
    assert outcomes == [
        "event_conversation",
        "event_conversation",
        "Post",
        "event_notification",
        "visibility_direct",  # an `update` of a direct message, on the user stream
        "event_notification",
        "Edit",
        "Retraction",
        "Post",
        "event_conversation",
    ]


def test_status_update_is_an_edit_of_the_same_key() -> None:
    records = extracted_events()
    [created] = posts(parse_event("update", records[2]["data"], ALL, NOW))
    [edit] = parse_event("status.update", records[6]["data"], ALL, NOW)
    assert isinstance(edit, Edit)
    assert edit.post.key == created.key
    assert (created.text, edit.post.text) == ("only real cars respond.", "only real animals respond.")


def test_delete_is_a_retraction_by_uri_when_known_else_by_instance_and_id() -> None:
    records = extracted_events()
    status = json.loads(records[2]["data"])
    assert records[7]["event"] == "delete" and records[7]["data"] == status["id"]
    [by_id] = parse_event("delete", records[7]["data"], ALL, NOW, instance=HOST)
    assert by_id == Retraction("mastodon-id:localhost:3000:117024236332527350", "mastodon")
    [by_uri] = parse_event("delete", records[7]["payload"], ALL, NOW, known_uris={status["id"]: status["uri"]})
    assert by_uri == Retraction("mastodon:" + status["uri"], "mastodon")
    with pytest.raises(Ignored, match="delete_unknown_instance"):
        parse_event("delete", records[7]["data"], ALL, NOW)
    with pytest.raises(ValueError, match="status id"):
        parse_event("delete", "<not an id>", ALL, NOW, instance=HOST)


def test_statuses_parsed_with_seen_uris_are_remembered_so_their_deletes_retract_by_uri() -> None:
    seen: dict[str, str] = {}
    boost = load("test_status_reblog_unreblog.01.json")
    original, boosted = posts(parse_status(boost, ALL, NOW, known_uris=seen, seen_uris=seen))
    quote = load("test_status_post_with_quote.01.json")
    _, quoting = posts(parse_event("update", json.dumps(quote), ALL, NOW, known_uris=seen, seen_uris=seen))
    assert seen == {
        boost["id"]: boost["uri"],
        boost["reblog"]["id"]: boost["reblog"]["uri"],
        quote["id"]: quote["uri"],
        quote["quote"]["quoted_status"]["id"]: quote["quote"]["quoted_status"]["uri"],
    }
    deleted = [parse_event("delete", s["id"], ALL, NOW, known_uris=seen) for s in (boost, boost["reblog"], quote)]
    assert deleted == [[Retraction(p.key, "mastodon")] for p in (boosted, original, quoting)]
    with pytest.raises(Ignored, match="delete_of_unseen_status"):  # a reader's memory without it: not "instance"
        parse_event("delete", "117000000000000000", ALL, NOW, known_uris=seen)


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ("filters_changed", "event_filters_changed"),
        ("announcement.reaction", "event_announcement_reaction"),
        ("encrypted_message", "event_encrypted_message"),
    ],
)
def test_other_events_are_ignored_by_name(event: str, reason: str) -> None:
    with pytest.raises(Ignored) as caught:
        parse_event(event, None, ALL, NOW)
    assert caught.value.reason == reason


def test_an_update_with_a_truncated_payload_is_malformed() -> None:
    data = extracted_events()[2]["data"]
    with pytest.raises(ValueError, match="not JSON"):
        parse_event("update", data[: len(data) // 2], ALL, NOW)


def test_sse_bodies_decode_to_the_extracted_events_in_any_chunking() -> None:
    expected = [(r["event"], r["data"]) for r in extracted_events()]
    bodies = [
        "test_stream_user_direct.11.sse",
        "test_stream_user_direct.12.sse",
        "test_stream_user_local.05.sse",
        "test_stream_direct.06.sse",
    ]
    for size in (1, 7, 1 << 20):
        decoded = []
        for name in bodies:
            raw, decoder = (FIXTURES / name).read_bytes(), SseDecoder()
            for start in range(0, len(raw), size):
                decoded += decoder.feed(raw[start : start + size])
            decoded += decoder.feed(b"\n")  # a body may end without its final blank line
        assert decoded == expected


def test_sse_decoder_drops_an_oversized_event_and_keeps_the_next() -> None:
    decoder = SseDecoder(max_event_bytes=100)
    out = decoder.feed(b":thump\nevent: update\ndata: " + b"x" * 150)
    out += decoder.feed(b"y" * 50 + b"\n\nevent: delete\r\ndata: 1\r\n\r\n")
    assert out == [("delete", "1")]
    assert decoder.oversized == 1


def test_websocket_messages_carry_the_stream_tag_event_and_payload() -> None:
    message = json.dumps({"stream": ["hashtag", "Hoot"], "event": "delete", "payload": "123"})
    assert parse_ws_message(message) == ("hoot", "delete", "123")
    assert parse_ws_message('{"stream":["user"],"event":"filters_changed"}') == (None, "filters_changed", "null")
    with pytest.raises(Ignored, match="stream_error"):
        parse_ws_message('{"error":"Missing access token","status":401}')
    for bad in ('{"stream":["hashtag","hoot"],"event":"upd', "[]", '{"payload":"1"}'):
        with pytest.raises(ValueError):
            parse_ws_message(bad)


def test_status_ids_order_numerically() -> None:
    ids = ["117024236332527350", "99", "117020593741189701", "100"]
    assert sorted(ids, key=id_order) == ["99", "100", "117020593741189701", "117024236332527350"]


# The follower, against a fake instance serving the real statuses.


@pytest.fixture
async def fake() -> AsyncIterator[FakeMastodon]:
    async with serving_mastodon() as server:
        yield server


def source(redis: aioredis.Redis, keys: Keys, fake: FakeMastodon, **options: Any) -> MastodonSource:
    publisher = Publisher(redis, keys, ["hoot"], maxlen=10_000)
    options.setdefault("backoff", Backoff(base=0.01, cap=0.05, jitter=0))
    options.setdefault("poll_seconds", 0.02)
    return MastodonSource(publisher, CursorStore(redis, keys), HOOT, instance=fake.url, tags=["#Hoot"], **options)


@contextlib.asynccontextmanager
async def following(follower: MastodonSource) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(follower.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert task.cancelled()  # cancellation always propagates out of run()


async def published(redis: aioredis.Redis, keys: Keys, count: int, timeout: float = 5.0) -> list[str]:
    """The keys of the posts in the #hoot stream, once there are ``count`` (or at the deadline)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        entries = await read_range(redis, keys.chat("hoot"), "0-0")
        found = [unpack_post(eid, raw).key for eid, raw, kind in entries if kind == FIELD]
        if len(found) >= count or loop.time() > deadline:
            return found
        last = entries[-1][0] if entries else "0-0"
        await redis.xread({keys.chat("hoot"): last}, block=50)  # wakes on the next entry


async def test_polling_publishes_oldest_first_and_the_next_poll_fetches_only_newer(
    redis: aioredis.Redis, keys: Keys, fake: FakeMastodon
) -> None:
    fake.timeline = STATUSES[:3]
    follower = source(redis, keys, fake)
    async with following(follower):
        assert await published(redis, keys, 3) == [key_of(s) for s in STATUSES[:3]]
        fake.timeline.append(STATUSES[3])
        assert await published(redis, keys, 4) == [key_of(s) for s in STATUSES[:4]]
        await eventually(lambda: fake.requests[-1][1].get("min_id") == STATUSES[3]["id"])
    assert "min_id" not in fake.requests[0][1]
    assert fake.requests[1][1] == {"limit": "40", "min_id": STATUSES[2]["id"]}
    assert await published(redis, keys, 5, timeout=0) == [key_of(s) for s in STATUSES[:4]]  # nothing repeated
    assert await CursorStore(redis, keys).get(follower.cursor_name("hoot")) == STATUSES[3]["id"]
    assert follower.counters["published"] == 4 and follower.counters["malformed"] == 0


async def test_a_gap_longer_than_a_page_is_fetched_page_by_page_with_nothing_skipped(
    redis: aioredis.Redis, keys: Keys, fake: FakeMastodon
) -> None:
    base = STATUSES[0]
    clones = []
    for n in range(1, 91):  # the real status under 90 new ids, as a busy chat would post them
        clone = copy.deepcopy(base)
        clone["id"] = str(int(base["id"]) + n)
        clone["uri"] = f"{base['uri']}-{n}"
        clones.append(clone)
    fake.timeline = [base]
    follower = source(redis, keys, fake)
    async with following(follower):
        assert await published(redis, keys, 1) == [key_of(base)]
        fake.timeline += clones
        keys_seen = await published(redis, keys, 91)
    assert keys_seen == [key_of(base)] + [key_of(c) for c in clones]
    assert [q.get("min_id") for _, q in fake.requests[1:4]] == [base["id"], clones[39]["id"], clones[79]["id"]]


async def test_a_reply_polled_in_the_same_page_as_its_parent_names_the_parent_by_key(
    redis: aioredis.Redis, keys: Keys, fake: FakeMastodon
) -> None:
    parent, reply = (
        next(s for s in STATUSES if s["id"] == load(name)["id"])
        for name in ("test_status_reply.00.json", "test_status_reply.02.json")
    )
    fake.timeline = [parent, reply]  # a busy chat: the answer is in the page that brings the question
    follower = source(redis, keys, fake)
    async with following(follower):
        assert await published(redis, keys, 2) == [key_of(parent), key_of(reply)]
    entries = await read_range(redis, keys.chat("hoot"), "0-0")
    assert unpack_post(entries[1][0], entries[1][1]).reply_to == key_of(parent)  # not mastodon-id:<host>:<id>


async def test_http_429_waits_until_the_rate_limit_reset(redis: aioredis.Redis, keys: Keys, fake: FakeMastodon) -> None:
    fake.timeline = STATUSES[:2]
    reset = iso_in(0.4)
    fake.scripted = [(429, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset})]
    follower = source(redis, keys, fake)
    async with following(follower):
        assert await published(redis, keys, 2) == [key_of(s) for s in STATUSES[:2]]
    (_, _), (retried_at, _) = fake.requests[:2]
    assert retried_at >= datetime.fromisoformat(reset).timestamp() - 0.01  # the backoff alone: after 0.01 s
    assert follower.counters["rate_limited"] == 1


async def test_http_429_from_a_proxy_waits_its_retry_after(
    redis: aioredis.Redis, keys: Keys, fake: FakeMastodon
) -> None:
    fake.timeline = STATUSES[:2]
    fake.scripted = [(429, {"Retry-After": "1"})]  # no X-RateLimit-Reset: a CDN in front of the instance said no
    follower = source(redis, keys, fake)
    async with following(follower):
        assert await published(redis, keys, 2) == [key_of(s) for s in STATUSES[:2]]
    (refused_at, _), (retried_at, _) = fake.requests[:2]
    assert retried_at - refused_at >= 0.95  # the backoff alone: after 0.01 s
    assert follower.counters["rate_limited"] == 1


async def test_remaining_zero_defers_the_next_request_until_the_reset(
    redis: aioredis.Redis, keys: Keys, fake: FakeMastodon
) -> None:
    fake.timeline = STATUSES[:2]
    reset = iso_in(0.4)
    fake.scripted = [(200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset})]
    follower = source(redis, keys, fake)
    async with following(follower):
        assert await published(redis, keys, 2) == [key_of(s) for s in STATUSES[:2]]
        await eventually(lambda: len(fake.requests) >= 2)
    assert fake.requests[1][0] >= datetime.fromisoformat(reset).timestamp() - 0.01  # poll_seconds alone: 0.02 s
    assert follower.counters["rate_limit_waits"] == 1


async def test_an_unreadable_remaining_header_is_ignored_and_polling_goes_on(
    redis: aioredis.Redis, keys: Keys, fake: FakeMastodon
) -> None:
    # "²" passes str.isdigit() but not int(): a header like it once ended the follower, and with it `mixer ingest`
    fake.timeline = STATUSES[:2]
    fake.scripted = [(200, {"X-RateLimit-Remaining": "\u00b2"})]
    follower = source(redis, keys, fake)
    async with following(follower):
        assert await published(redis, keys, 2) == [key_of(s) for s in STATUSES[:2]]
        fake.timeline.append(STATUSES[2])
        assert await published(redis, keys, 3) == [key_of(s) for s in STATUSES[:3]]
    assert follower.counters["rate_limit_waits"] == 0


async def test_a_timeline_that_never_answers_is_logged_as_a_timeout_and_polling_goes_on(
    redis: aioredis.Redis, keys: Keys, fake: FakeMastodon, caplog: pytest.LogCaptureFixture
) -> None:
    fake.timeline = STATUSES[:2]
    fake.held = 1
    follower = source(redis, keys, fake, request_timeout=0.2)
    with caplog.at_level(logging.WARNING, logger="mixer.ingest.sources.mastodon_follow"):
        async with following(follower):
            assert await published(redis, keys, 2) == [key_of(s) for s in STATUSES[:2]]
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].endswith("/api/v1/timelines/tag/hoot: no complete answer within 0.2 s")
    assert follower.counters["reconnects"] == 1


async def test_server_errors_and_non_json_pages_back_off_and_retry_without_loss(
    redis: aioredis.Redis, keys: Keys, fake: FakeMastodon
) -> None:
    fake.timeline = STATUSES[:2]
    fake.scripted = [(503, {}), (502, {})]
    follower = source(redis, keys, fake)
    async with following(follower):
        assert await published(redis, keys, 2) == [key_of(s) for s in STATUSES[:2]]
        fake.timeline.append(STATUSES[2])
        fake.scripted = [(200, {"X-Fake-Body": "<html>Down for maintenance</html>"})]
        assert await published(redis, keys, 3) == [key_of(s) for s in STATUSES[:3]]
    assert follower.counters["reconnects"] == 3 and follower.counters["malformed"] == 1


async def test_websocket_stream_reconnects_after_a_drop_and_the_backfill_fills_the_gap(
    redis: aioredis.Redis, keys: Keys, fake: FakeMastodon
) -> None:
    s1, s2, s3, s4, s5 = STATUSES[:5]
    fake.timeline = [s1, s2]
    follower = source(redis, keys, fake, token="t0ken")
    async with following(follower):
        await asyncio.wait_for(fake.subscribed.wait(), 5)
        assert await published(redis, keys, 2) == [key_of(s1), key_of(s2)]
        await fake.post(s3)
        assert await published(redis, keys, 3) == [key_of(s) for s in (s1, s2, s3)]
        await fake.push("frobnicate", "{}")
        await eventually(lambda: follower.counters["skipped:other"] == 1)  # an unlisted event: one fixed label
        fake.timeline.append(s4)  # posted while the connection is down: only the backfill can find it
        fake.on_subscribe = [("update", json.dumps(s4))]  # ... and streamed again on resubscription
        await fake.drop()
        await asyncio.wait_for(fake.subscribed.wait(), 5)
        await fake.post(s5)
        assert await published(redis, keys, 5) == [key_of(s) for s in (s1, s2, s3, s4, s5)]
        await eventually(lambda: follower.counters["duplicates"] >= 1)
    assert await published(redis, keys, 6, timeout=0) == [key_of(s) for s in (s1, s2, s3, s4, s5)]
    assert follower.counters["reconnects"] >= 1
    assert fake.connections == {"ws": 2}
    assert await CursorStore(redis, keys).get(follower.cursor_name("hoot")) == s5["id"]


async def test_sse_is_used_when_the_websocket_is_refused_and_a_dropped_stream_resumes(
    redis: aioredis.Redis, keys: Keys, fake: FakeMastodon
) -> None:
    fake.websocket = False
    s1, s2, s3, s4, s5 = STATUSES[5:10]
    fake.timeline = [s1, s2]
    follower = source(redis, keys, fake, token="t0ken")
    async with following(follower):
        await asyncio.wait_for(fake.subscribed.wait(), 5)
        assert await published(redis, keys, 2) == [key_of(s1), key_of(s2)]
        await fake.post(s3)
        assert await published(redis, keys, 3) == [key_of(s) for s in (s1, s2, s3)]
        truncated = json.dumps(s3)[:100]
        await fake.push("update", truncated)
        await eventually(lambda: follower.counters["malformed"] == 1)
        fake.timeline.append(s4)
        await fake.drop()  # ends with half an event
        await asyncio.wait_for(fake.subscribed.wait(), 5)
        await fake.post(s5)
        assert await published(redis, keys, 5) == [key_of(s) for s in (s1, s2, s3, s4, s5)]
    assert await published(redis, keys, 6, timeout=0) == [key_of(s) for s in (s1, s2, s3, s4, s5)]
    assert follower.counters["reconnects"] >= 1 and follower.counters["malformed"] == 1
    assert fake.connections == {"sse": 2}


async def test_a_streamed_delete_retracts_a_published_status_by_its_uri(
    redis: aioredis.Redis, keys: Keys, fake: FakeMastodon
) -> None:
    s1 = STATUSES[0]
    follower = source(redis, keys, fake, token="t0ken")
    async with following(follower):
        await asyncio.wait_for(fake.subscribed.wait(), 5)
        await fake.post(s1)
        assert await published(redis, keys, 1) == [key_of(s1)]
        await fake.push("delete", s1["id"])
        await fake.push("delete", "999")  # never seen here: keyed by instance and id
        await until_entries(redis, keys, 3)
    entries = await read_range(redis, keys.chat("hoot"), "0-0")
    retracted = [msgpack.unpackb(raw)["key"] for _, raw, kind in entries if kind == RETRACT_FIELD]
    assert retracted == [key_of(s1), f"mastodon-id:{follower.host}:999"]


async def until_entries(redis: aioredis.Redis, keys: Keys, count: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while len(await read_range(redis, keys.chat("hoot"), "0-0")) < count:
        assert loop.time() < deadline
        await redis.xread({keys.chat("hoot"): "$"}, block=50)


async def test_a_restarted_follower_resumes_from_the_stored_cursor_with_no_repeat(
    redis: aioredis.Redis, keys: Keys, fake: FakeMastodon
) -> None:
    fake.timeline = STATUSES[:3]
    async with following(source(redis, keys, fake)):
        assert await published(redis, keys, 3) == [key_of(s) for s in STATUSES[:3]]
    fake.timeline += STATUSES[3:6]
    fake.requests.clear()
    second = source(redis, keys, fake)
    async with following(second):
        assert await published(redis, keys, 6) == [key_of(s) for s in STATUSES[:6]]
        await eventually(lambda: second.counters["published"] == 3)
    assert fake.requests[0][1] == {"limit": "40", "min_id": STATUSES[2]["id"]}
    assert await published(redis, keys, 7, timeout=0) == [key_of(s) for s in STATUSES[:6]]


async def test_a_first_start_with_no_initial_backfill_publishes_only_new_statuses(
    redis: aioredis.Redis, keys: Keys, fake: FakeMastodon
) -> None:
    fake.timeline = STATUSES[:3]
    follower = source(redis, keys, fake, initial_backfill=0)
    async with following(follower):
        await eventually(lambda: len(fake.requests) >= 2)
        fake.timeline.append(STATUSES[3])
        assert await published(redis, keys, 1) == [key_of(STATUSES[3])]


async def test_a_restarted_follower_still_retracts_by_uri_a_status_it_published_before_the_restart(
    redis: aioredis.Redis, keys: Keys, fake: FakeMastodon
) -> None:
    s1 = STATUSES[0]
    first = source(redis, keys, fake, token="t0ken")
    async with following(first):
        await asyncio.wait_for(fake.subscribed.wait(), 5)
        await fake.post(s1)
        assert await published(redis, keys, 1) == [key_of(s1)]
    await fake.drop()
    second = source(redis, keys, fake, token="t0ken")  # a new process: its memory comes from Redis
    async with following(second):
        await asyncio.wait_for(fake.subscribed.wait(), 5)
        await fake.push("update", json.dumps(s1))  # streamed again: still a duplicate, not a second post
        await fake.push("delete", s1["id"])
        await until_entries(redis, keys, 2)
    entries = await read_range(redis, keys.chat("hoot"), "0-0")
    assert [(kind, msgpack.unpackb(raw)["key"] if kind == RETRACT_FIELD else None) for _, raw, kind in entries] == [
        (FIELD, None),
        (RETRACT_FIELD, key_of(s1)),  # by its uri, so the post it names is removed downstream
    ]
    assert second.counters["duplicates"] == 1
