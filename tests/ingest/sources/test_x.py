"""X: the v1.1 and v2 parsers over every real fixture file, and the filtered-stream follower against a
fake X API (aiohttp on 127.0.0.1) that serves the real stream messages, with a real Redis."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixer.backoff import Backoff
from mixer.codec import FIELD, unpack_post
from mixer.config import load_settings
from mixer.ingest.follow import build_sources
from mixer.ingest.hashtags import ChatMatcher
from mixer.ingest.publish import CursorStore, Publisher
from mixer.ingest.recorded import parse_line
from mixer.ingest.sources.x import load_json
from mixer.ingest.sources.x_stream import STREAM_PATH, XSource
from mixer.ingest.sources.x_v1 import parse_v1
from mixer.ingest.sources.x_v2 import parse_v2
from mixer.keys import Keys
from mixer.models import Edit, Event, Ignored, Post, Retraction
from tests.helpers import FIXTURES as FIXTURES_DIR
from tests.helpers import eventually
from tests.servers import serving

V1 = FIXTURES_DIR / "x-v1"
V2 = FIXTURES_DIR / "x-v2"
EVERY_TAG = ChatMatcher(None)
NOW = 1_800_000_000_000
MALFORMED_V1 = ("initial/compatibility_classic_13995.json", "original/classic_no_hidden/tweet.json")
PUPPY = (
    "this is a reply to 25 people with 140 characters of text for me to say what I want to say. "
    "& I still have room to attach a photo of a puppy!"
)
OWLS = (
    "It's neat to have owls and raccoons around until you realize that raccoons will eat the eggs from the owl's nest"
)
FAVORITE = "My favorite photographic subject, up closer than ever before. https://t.co/K958bKh9Sd"
HAWK = "Cooperâ€™s Hawk https://t.co/nppuOGne9X"  # upstream mojibake: its indices are off, so nothing is cut
RT = "RT @ygritteygritte: "
AD = "Twitter\u2019s new video ad actually explains what Twitter is for https://t.co/bjb5O9JW5L via @Recode"

# file -> [(key, boost_of, chats, text)] in the order the parser yields them (originals first)
EXPECTED_V1: dict[str, list[tuple[str, str | None, tuple[str, ...], str]]] = {
    "initial/compatibility_classic_hidden_13797.json": [
        ("x:703621193417379840", None, (), HAWK),
        (
            "x:708067963060916224",
            None,
            (),
            "@jeremycloud Who would win in a battle between a Barred Owl and a Cooper's Hawk? https://t.co/FamikDro2h",
        ),
    ],
    "initial/compatibility_extended_13996.json": [
        ("x:703621193417379840", None, (), HAWK),
        ("x:708067963060916224", None, (), "Who would win in a battle between a Barred Owl and a Cooper's Hawk?"),
    ],
    "initial/compatibilityplus_classic_13994.json": [
        ("x:704059336788606976", None, (), FAVORITE),
        (
            "x:714461850188926976",
            None,
            (),
            "@jeremycloud It's neat to have owls and raccoons around until you realize that raccoons will eat the "
            "eggs from the â€¦ https://t.co/OY7qmdJQnO",
        ),
    ],
    "initial/compatibilityplus_classic_hidden_13797.json": [
        ("x:704059336788606976", None, (), FAVORITE),
        ("x:714461850188926976", None, (), OWLS),
    ],
    "initial/compatibilityplus_extended_13997.json": [
        ("x:704059336788606976", None, (), FAVORITE),
        ("x:714461850188926976", None, (), OWLS),
    ],
    "initial/extended_classic_14002.json": [
        ("x:743472511740870657", None, ("myfirsttweet",), "Just setting up my Twitter. #myfirstTweet"),
    ],
    "initial/extended_classic_hidden_13761.json": [
        ("x:743479431658758145", None, (), "I'm really excited for this change!"),
    ],
    "initial/extended_extended_14001.json": [
        (
            "x:743496707711733760",
            None,
            (),
            "@twitterdev has more details about these changes at https://t.co/ZnXoRQy8mK.  "
            "Thanks for making @twitter more expressive!",
        ),
    ],
    "original/classic_no_hidden/mention.json": [
        (
            "x:760211303956832257",
            None,
            ("justthebeginning",),
            "Gnip 2.0 is here! So proud of the hard work of the whole @gnip team to get us to this milestone! "
            "#justthebeginning https://t.co/lJq7Fzt1Re",
        ),
    ],
    "original/classic_no_hidden/quote.json": [
        (
            "x:761667947089715200",
            None,
            (),
            "I wrote a little post for @thedigitalpm that highlights how I (and other @viget PMs) use @SlackHQ to be "
            "better DPMs! https://t.co/voaq1N4WMs",
        ),
        ("x:761709711112667136", None, ("unbiased",), "Killing it #unbiased https://t.co/U9WP5jvXoP"),
    ],
    "original/classic_no_hidden/retweet.json": [
        (
            "x:757659435292504064",
            None,
            (),
            AD,
        ),
        ("x:758013561356419072", "x:757659435292504064", (), "RT @joell: " + AD),
    ],
    "original/gt140_hidden_extended/attachment.json": [
        (
            "x:755822121331281920",
            None,
            (),
            "this is a tweet with 140 characters of display range text, which means that with an image attachment "
            "the full tweet text has >140 characters",
        ),
    ],
    "original/gt140_hidden_extended/quoted_w_attachment.json": [
        (
            "x:755822121331281920",
            None,
            (),
            "this is a tweet with 140 characters of display range text, which means that with an image attachment "
            "the full tweet text has >140 characters",
        ),
        ("x:758840203985289220", None, (), "this is a quote of a regular b140 tweet with an attachment"),
    ],
    "original/gt140_hidden_extended/quoted_w_replies_attachment.json": [
        ("x:758839565989720065", None, (), PUPPY),
        ("x:758839895745888256", None, (), "this is a quote tweet of a b140 reply with an image!"),
    ],
    "original/gt140_hidden_extended/replies.json": [
        (
            "x:758838116891242496",
            None,
            (),
            "this is a reply to 25 people, but I'm also using 140 characters for my actual reply text. now I have so "
            "much more room to reply say things!!",
        ),
    ],
    "original/gt140_hidden_extended/replies_attachment.json": [("x:758839565989720065", None, (), PUPPY)],
    "original/gt140_hidden_extended/retweet_w_replies_attachment.json": [
        ("x:758839565989720065", None, (), PUPPY),
        ("x:763459917910945792", "x:758839565989720065", (), RT + PUPPY),
    ],
    "original/lt140_hidden/attachment.json": [("x:755284472208031745", None, (), "image tweet with <140 ch")],
    "original/lt140_hidden/quoted_w_attachment.json": [
        ("x:758832852892921856", None, (), "<140 tweet with image"),
        ("x:758832904415748096", None, (), "this is a quote tweet of an image tweet"),
    ],
    "original/lt140_hidden/quoted_w_replies.json": [
        ("x:758833133185699840", None, (), "this cat is the best cat i've ever seen"),
        ("x:758833194632224768", None, (), "This is still the best cat"),
    ],
    "original/lt140_hidden/quoted_w_reply_attachment.json": [
        ("x:758833756551589888", None, (), "little eevee you inspire me"),
        ("x:758833866823966720", None, (), "i love eevee"),
    ],
    "original/lt140_hidden/quoted_w_reply_attachment_mention.json": [
        ("x:758834253987655681", None, (), "hodor cc @hodorlife"),
        ("x:758834578182123520", None, (), "quote tweet of a reply with an attachment and a mention"),
    ],
    "original/lt140_hidden/reply.json": [("x:758797113446641664", None, (), "so cool!")],
    "original/lt140_hidden/reply_attachment.json": [("x:758801453548916736", None, (), "spooky!")],
    "original/lt140_hidden/reply_attachment_mention.json": [
        ("x:758815976875896832", None, (), "this is a reply and also mentions @joydingtesting"),
    ],
    "original/lt140_hidden/retweet_w_attachment.json": [
        ("x:755284472208031745", None, (), "image tweet with <140 ch"),
        ("x:758831370512633856", "x:755284472208031745", (), RT + "image tweet with <140 ch"),
    ],
    "original/lt140_hidden/retweet_w_reply.json": [
        ("x:758797113446641664", None, (), "so cool!"),
        ("x:758831688721903616", "x:758797113446641664", (), RT + "so cool!"),
    ],
    "original/lt140_hidden/retweet_w_reply_attachment.json": [
        ("x:758801453548916736", None, (), "spooky!"),
        ("x:758831941189636098", "x:758801453548916736", (), RT + "spooky!"),
    ],
    "original/lt140_hidden/retweet_w_reply_attachment_mention.json": [
        ("x:758815976875896832", None, (), "this is a reply and also mentions @joydingtesting"),
        ("x:758832396334575617", "x:758815976875896832", (), RT + "this is a reply and also mentions @joydingtesting"),
    ],
}


def v1(name: str) -> dict[str, Any]:
    return load_json((V1 / name).read_bytes())


def v2_lines(name: str) -> list[bytes]:
    return (V2 / name).read_bytes().splitlines()


def v2(name: str, line: int = 0) -> dict[str, Any]:
    return load_json(v2_lines(name)[line])


def posts(events: list[Event]) -> list[Post]:
    assert all(isinstance(e, Post) for e in events)
    return [e for e in events if isinstance(e, Post)]


# --- v1.1 -------------------------------------------------------------------------------


def test_every_v1_fixture_is_either_expected_or_a_known_malformed_file() -> None:
    names = {str(p.relative_to(V1)) for p in V1.rglob("*.json")}
    assert names == set(EXPECTED_V1) | set(MALFORMED_V1)


@pytest.mark.parametrize("name", sorted(EXPECTED_V1))
def test_v1_fixture_yields_expected_keys_texts_chats_and_boosts_originals_first(name: str) -> None:
    got = posts(parse_v1(v1(name), EVERY_TAG, NOW))
    assert [(p.key, p.boost_of, p.chats, p.text) for p in got] == EXPECTED_V1[name]
    for post in got:
        assert post.source == "x" and post.at == NOW
        assert post.url == f"https://twitter.com/{post.author.handle}/status/{post.key[2:]}"


@pytest.mark.parametrize("name", MALFORMED_V1)
def test_v1_files_that_are_not_json_upstream_are_reported_malformed(name: str) -> None:
    with pytest.raises(ValueError, match="not JSON: Extra data"):
        load_json((V1 / name).read_bytes())


def test_v1_extended_tweet_gives_the_full_text_not_the_truncated_one() -> None:
    data = v1("original/gt140_hidden_extended/attachment.json")
    assert data["truncated"] is True and data["text"].endswith("https://t.co/ECfyrsRRTG")
    (post,) = posts(parse_v1(data, EVERY_TAG, NOW))
    assert post.text.endswith("the full tweet text has >140 characters")  # &gt; undone, media link cut
    assert post.media == ("https://pbs.twimg.com/media/Cn04NcZUIAAM0B0.jpg",)


def test_v1_reply_has_reply_to_author_lang_created_and_no_leading_mention() -> None:
    (post,) = posts(parse_v1(v1("original/lt140_hidden/reply_attachment.json"), EVERY_TAG, NOW))
    assert post.reply_to == "x:757126054012006401"
    assert post.text == "spooky!"  # display_text_range hides "@joyding " and the trailing gif link
    assert post.author.handle == "ygritteygritte" and post.author.name == "Ygritte"
    assert post.author.avatar == "https://pbs.twimg.com/profile_images/735370259566329856/3mxqMJEq_normal.jpg"
    assert post.media == ("https://pbs.twimg.com/tweet_video_thumb/CofN43YUkAUiBiP.jpg",)
    assert post.lang == "en"
    assert post.created == int(datetime(2016, 7, 28, 23, 8, 59, tzinfo=UTC).timestamp() * 1000)


def test_v1_timestamp_ms_is_preferred_to_created_at() -> None:
    data = v1("original/lt140_hidden/reply.json")
    data["timestamp_ms"] = "1469746304123"
    (post,) = posts(parse_v1(data, EVERY_TAG, NOW))
    assert post.created == 1469746304123


def test_v1_hashtags_come_from_the_extended_entities_when_present() -> None:
    data = v1("initial/compatibilityplus_classic_hidden_13797.json")
    data["entities"]["hashtags"] = [{"text": "truncated", "indices": [0, 10]}]
    data["extended_tweet"]["entities"]["hashtags"] = [{"text": "SmBiz", "indices": [0, 6]}]
    events = parse_v1(data, ChatMatcher(["smbiz", "truncated"]), NOW)
    assert posts(events)[-1].chats == ("smbiz",)


def test_v1_escapes_are_undone_exactly_once() -> None:
    data = v1("original/classic_no_hidden/mention.json")
    data["text"] = "a &amp;lt; b &lt;3 &amp; c &gt; d"
    (post,) = posts(parse_v1(data, EVERY_TAG, NOW))
    assert post.text == "a &lt; b <3 & c > d"


def test_v1_retweet_of_a_hashtag_puts_both_posts_in_the_chat() -> None:
    data = v1("original/lt140_hidden/retweet_w_reply.json")
    data["retweeted_status"]["text"] += " #SmBiz"
    data["retweeted_status"]["entities"]["hashtags"] = [{"text": "SmBiz", "indices": [18, 24]}]
    original, retweet = posts(parse_v1(data, ChatMatcher(["smbiz"]), NOW))
    assert original.chats == retweet.chats == ("smbiz",)
    assert retweet.boost_of == original.key and retweet.reply_to is None


def test_v1_stream_notices_are_retractions_or_ignored() -> None:
    delete = {"delete": {"status": {"id": 1234, "id_str": "1234", "user_id": 3}, "timestamp_ms": "1"}}
    assert parse_v1(delete, EVERY_TAG, NOW) == [Retraction("x:1234", "x")]
    for notice, reason in ({"limit": {"track": 5}}, "limit_notice"), ({"warning": {"code": "X"}}, "warning_notice"):
        with pytest.raises(Ignored) as caught:
            parse_v1(notice, EVERY_TAG, NOW)
        assert caught.value.reason == reason


# X's documented v1.1 notices, exactly as its "Streaming message types" page shows them
# (developer.x.com/en/docs/x-api/v1/tweets/filter-realtime/guides/streaming-message-types).
V1_NOTICES = {
    "scrub_geo_notice": b'{"scrub_geo":{"user_id":14090452,"user_id_str":"14090452","up_to_status_id":23260136625,'
    b'"up_to_status_id_str":"23260136625"}}',
    "status_withheld_notice": b'{"status_withheld":{"id":1234567890,"user_id":123456,'
    b'"withheld_in_countries":["DE", "AR"]}}',
    "user_withheld_notice": b'{"user_withheld":{"id":123456,"withheld_in_countries":["DE","AR"]}}',
    "disconnect_notice": b'{"disconnect":{"code": 4,"stream_name":"","reason":""}}',
}


@pytest.mark.parametrize("reason", V1_NOTICES)
def test_v1_geo_withheld_and_disconnect_notices_are_ignored_by_name_in_a_recording_too(reason: str) -> None:
    with pytest.raises(Ignored) as caught:
        parse_v1(load_json(V1_NOTICES[reason]), EVERY_TAG, NOW)
    assert caught.value.reason == reason
    with pytest.raises(Ignored) as caught:  # read from a recording: recognised as a notice, not "unrecognised"
        parse_line(V1_NOTICES[reason])
    assert caught.value.reason == reason


def test_v1_status_without_user_or_id_is_malformed() -> None:
    data = v1("original/lt140_hidden/reply.json")
    del data["user"]
    with pytest.raises(ValueError, match="user"):
        parse_v1(data, EVERY_TAG, NOW)
    with pytest.raises(ValueError, match="id"):
        parse_v1({"text": "hi", "user": {"screen_name": "a"}}, EVERY_TAG, NOW)


# --- v2 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in V2.glob("*.jsonl")))
def test_every_v2_line_parses_to_events_or_is_counted_as_ignored(name: str) -> None:
    outcomes = []
    for raw in v2_lines(name):
        if not raw.strip():
            outcomes.append("blank")
            continue
        try:
            events = parse_v2(load_json(raw), EVERY_TAG, NOW)
        except Ignored as exc:
            outcomes.append(exc.reason)
            continue
        except ValueError:
            outcomes.append("malformed")
            continue
        assert events
        outcomes.append("events")
    expected = {
        "streaming_output.jsonl": ["events"] * 4 + ["stream_error"] + ["events"] * 4,
        "streaming_output_with_error.jsonl": ["events"] * 7 + ["malformed"],
        "tweets_compliance.jsonl": ["blank", "events", "events"],
        "geo_tweets.jsonl": ["events", "events"],
    }
    assert outcomes == expected.get(name, ["events"])


def test_v2_brexit_search_expands_100_tweets_and_67_retweets_with_their_originals_first() -> None:
    message = v2("brexit.jsonl")
    includes = {t["id"] for t in message["includes"]["tweets"]}
    events = parse_v2(message, ChatMatcher(["brexit"]), NOW)
    got = posts(events)
    keys = [p.key for p in got]
    assert len(keys) == len(set(keys))  # an original retweeted many times is yielded once
    data_ids = [t["id"] for t in message["data"]]
    assert len(data_ids) == 100 and {f"x:{i}" for i in data_ids} <= set(keys)
    retweets = [p for p in got if p.boost_of]
    assert len(retweets) == 67
    position = {k: i for i, k in enumerate(keys)}
    for retweet in retweets:
        assert position[retweet.boost_of] < position[retweet.key]
        original = got[position[retweet.boost_of]]
        assert retweet.text == f"RT @{original.author.handle}: {original.text}"
    shared = {r["id"] for t in message["data"] for r in t.get("referenced_tweets", []) if r["type"] != "replied_to"}
    assert set(keys) == {f"x:{i}" for i in data_ids} | {f"x:{i}" for i in shared & includes}
    tagged = {
        f"x:{t['id']}"
        for t in message["data"] + message["includes"]["tweets"]
        if any(h["tag"].casefold() == "brexit" for h in t.get("entities", {}).get("hashtags", []))
    }
    in_chat = {p.key for p in got if p.chats == ("brexit",)}
    assert tagged & set(keys) <= in_chat
    assert {p.key for p in retweets if p.boost_of in tagged} <= in_chat  # a retweet is in its original's chats


def test_v2_kpop_non_latin_hashtags_become_chats_when_configured() -> None:
    message = v2("kpop.jsonl")
    got = posts(parse_v2(message, ChatMatcher(["잇츠라이브", "원호"]), NOW))
    post = next(p for p in got if p.key == "x:1440684519917424661")
    assert post.chats == ("원호", "잇츠라이브")
    expected = {
        f"x:{t['id']}"
        for t in message["data"] + message["includes"]["tweets"]
        if {"잇츠라이브", "원호"} & {h["tag"] for h in t.get("entities", {}).get("hashtags", [])}
    }
    retweets_of_tagged = {p.key for p in got if p.boost_of in expected}
    assert {p.key for p in got if p.chats} == (expected | retweets_of_tagged) & {p.key for p in got}
    assert not posts(parse_v2(message, ChatMatcher(["smbiz"]), NOW))[0].chats


def test_v2_retweet_yields_original_then_retweet_with_author_from_includes() -> None:
    original, retweet = posts(parse_v2(v2("two_tweets.jsonl"), ChatMatcher(["poiuytrewq"]), NOW))
    assert original.key == "x:1391677057810288641" and original.text == "#POIUYTREWQ"
    assert retweet.key == "x:1394735776701816833" and retweet.boost_of == original.key
    assert retweet.text == "RT @bibaigna96: #POIUYTREWQ"
    assert original.chats == retweet.chats == ("poiuytrewq",)
    assert retweet.author.handle == "LachiVeronica" and retweet.author.name == "Veronica Lachi"
    assert retweet.url == "https://twitter.com/LachiVeronica/status/1394735776701816833"


def test_v2_video_gives_its_preview_image_and_the_media_link_is_cut_from_the_text() -> None:
    (post,) = posts(parse_v2(v2("media_tweet.jsonl"), EVERY_TAG, NOW))
    assert post.text == "She's GOING with it! 🐍"
    assert post.media == ("https://pbs.twimg.com/ext_tw_video_thumb/1558552952549277696/pu/img/7VaQu-AvReI8RHkv.jpg",)
    assert post.created == int(datetime(2022, 8, 13, 20, 36, 51, tzinfo=UTC).timestamp() * 1000)


def test_v2_long_post_text_and_hashtags_come_from_its_note_tweet() -> None:
    message = v2("two_tweets.jsonl")
    tweet = message["includes"]["tweets"][0]  # the original the retweet repeats
    tweet["note_tweet"] = {
        "text": "x" * 290 + " #SmBiz",
        "entities": {"hashtags": [{"start": 291, "end": 297, "tag": "SmBiz"}]},
    }
    original = posts(parse_v2(message, ChatMatcher(["smbiz"]), NOW))[0]
    assert original.text == "x" * 290 + " #SmBiz" and original.chats == ("smbiz",)


def test_v2_edit_before_is_a_post_and_after_is_an_edit_of_the_first_id_key() -> None:
    (before,) = parse_v2(v2("edited_before.jsonl"), EVERY_TAG, NOW)
    assert isinstance(before, Post) and before.key == "x:1576994746135764992"
    assert before.media == ("https://pbs.twimg.com/media/FeKcHsVaUAEYpU_.jpg",)
    for name in ("edited_after.jsonl", "edited.jsonl"):
        (after,) = parse_v2(v2(name), EVERY_TAG, NOW)
        assert isinstance(after, Edit)
        assert after.post.key == before.key
        assert after.post.text == "hey :) https://t.co/rnwEIoNuqd"
        assert after.post.url == "https://twitter.com/wongmjane/status/1576994789110992896"
        assert after.post.created == before.created  # the post's time is its first version's
        assert after.post.lang is None  # X's "qst" is no language


def test_v2_quote_of_an_edited_tweet_points_at_the_first_version_key() -> None:
    quoted, quoting = posts(parse_v2(v2("quoted_edit.jsonl"), EVERY_TAG, NOW))
    assert quoted.key == "x:1576994746135764992"
    assert quoting.key == "x:1576995594388000768"
    assert quoting.reply_to == "x:1576994746135764992"  # it replied to the edit, whose post is the first id
    assert quoting.text == "Test"  # reply mention and quoted-tweet link are shown by X as context, not text


def test_v2_compliance_deletes_are_retractions_and_the_empty_first_line_is_skipped() -> None:
    lines = v2_lines("tweets_compliance.jsonl")
    assert lines[0] == b""
    events = [e for raw in lines if raw.strip() for e in parse_v2(load_json(raw), EVERY_TAG, NOW)]
    assert events == [Retraction("x:1170025343920402432", "x"), Retraction("x:1170147183095664640", "x")]
    stream = {"data": {"delete": {"tweet": {"id": "1170025343920402432", "author_id": "1"}, "event_at": "x"}}}
    assert parse_v2(stream, EVERY_TAG, NOW) == [Retraction("x:1170025343920402432", "x")]


def test_v2_matching_rule_tags_become_chats() -> None:
    messages = [load_json(raw) for raw in v2_lines("streaming_output.jsonl")]
    tweets = [m for m in messages if "data" in m]
    assert all(r["tag"] is None for m in tweets for r in m["matching_rules"])  # as twarc recorded them
    assert [posts(parse_v2(m, EVERY_TAG, NOW))[-1].chats for m in tweets][3] == ("dogsoftwitter", "dogs")
    dogs = ChatMatcher(["dogs"])
    assert [posts(parse_v2(m, dogs, NOW))[-1].chats for m in tweets].count(()) == 7
    for message in tweets:
        tagged = copy.deepcopy(message)
        tagged["matching_rules"] = [{"id": "1", "tag": "dogs"}, {"id": "2", "tag": "not-a-chat"}]
        *quoted, post = posts(parse_v2(tagged, dogs, NOW))
        assert post.chats == ("dogs",)
        assert all(q.chats == () for q in quoted)  # the quoted tweet did not match the rule


def test_v2_stream_error_truncated_line_and_unknown_message() -> None:
    with pytest.raises(Ignored, match="stream_error"):
        parse_v2(v2("streaming_output.jsonl", 4), EVERY_TAG, NOW)
    with pytest.raises(ValueError, match="not JSON"):
        load_json(v2_lines("streaming_output_with_error.jsonl")[-1])
    with pytest.raises(Ignored, match="unknown_message"):
        parse_v2({"meta": {"sent": "2021-04-01T15:52:31.000Z"}}, EVERY_TAG, NOW)
    with pytest.raises(ValueError, match="data"):
        parse_v2({"data": "a tweet"}, EVERY_TAG, NOW)
    with pytest.raises(ValueError, match="not a JSON object"):
        load_json(b"[1, 2]")


def test_v2_malformed_pieces_are_rejected_with_a_reason() -> None:
    message = v2("media_tweet.jsonl")
    for change, reason in [
        (lambda m: m["data"][0].pop("id"), "data.id"),
        (lambda m: m["data"][0].update(text=None), "text"),
        (lambda m: m["data"][0].update(created_at="yesterday"), "created_at"),
        (lambda m: m.update(includes={"users": "nobody"}), "includes"),
    ]:
        broken = copy.deepcopy(message)
        change(broken)
        with pytest.raises(ValueError, match=reason):
            parse_v2(broken, EVERY_TAG, NOW)
    with pytest.raises(ValueError, match=r"delete\.tweet\.id"):
        parse_v2({"data": {"delete": {"event_at": "2022-10-03T18:00:23.000Z"}}}, EVERY_TAG, NOW)
    odd = copy.deepcopy(message)
    odd["data"][0]["entities"]["urls"].append({"url": "", "media_key": "7_1"})  # must not loop forever
    assert posts(parse_v2(odd, EVERY_TAG, NOW))[0].text == "She's GOING with it! 🐍"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
SAMPLES = [("v1", v1(name)) for name in sorted(EXPECTED_V1)[::4]] + [
    ("v2", v2(name)) for name in ("two_tweets.jsonl", "quoted_edit.jsonl", "media_tweet.jsonl")
]


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        found += paths(child, (*prefix, key))
    return found


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), junk=JSON)
def test_any_damage_to_a_real_payload_is_a_post_or_a_clear_error_never_a_crash(data: st.DataObject, junk: Any) -> None:
    kind, sample = data.draw(st.sampled_from(SAMPLES))
    payload = copy.deepcopy(sample)
    path = data.draw(st.sampled_from(paths(payload)[1:]))
    holder = payload
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = junk
    try:
        events = (parse_v1 if kind == "v1" else parse_v2)(payload, EVERY_TAG, NOW)
    except (ValueError, Ignored):
        return
    for event in events:
        post = event.post if isinstance(event, Edit) else event
        if isinstance(post, Post):
            assert Post.from_dict(post.to_dict()) == post


# --- the follower, against a fake X API ---------------------------------------------------

CHAT = "dogs"
TOKEN = "test-token"
STREAM = v2_lines("streaming_output.jsonl")
UNIQUE_TWEETS = [
    "x:1377650090978992134",
    "x:1377650093109743620",
    "x:1377650277642338305",
    "x:1377650387579248643",
    "x:1377650459033280516",
    "x:1377650500687044618",
    "x:1377650529766154240",  # sent twice in the recording: published once
]


@dataclass
class Plan:
    """What one stream connection does: an HTTP error, or serve ``count`` lines, then cut/close/hold."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    lines: list[bytes] | None = None  # default: the fake's lines
    count: int | None = None  # serve only the first count lines
    cut: int = 0  # then this many bytes of the next line
    end: str = "hold"  # "hold": keep the connection open (silent), "close": drop it without a proper end
    keepalive: bool = True


@dataclass
class FakeX:
    """Rules endpoints and a chunked filtered stream, as X serves them (auth by bearer token)."""

    lines: list[bytes]
    plans: list[Plan] = field(default_factory=list)
    rules: dict[str, dict[str, str]] = field(default_factory=dict)
    rule_requests: list[tuple[str, Any]] = field(default_factory=list)
    connected_at: list[float] = field(default_factory=list)
    queries: list[dict[str, str]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    next_id: int = 1000

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/2/tweets/search/stream/rules", self.get_rules)
        app.router.add_post("/2/tweets/search/stream/rules", self.post_rules)
        app.router.add_get(STREAM_PATH, self.stream)
        return app

    def authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {TOKEN}"

    async def get_rules(self, request: web.Request) -> web.Response:
        if not self.authorised(request):
            return web.json_response({"title": "Unauthorized"}, status=401)
        self.rule_requests.append(("GET", None))
        data = [{"id": rid, **rule} for rid, rule in self.rules.items()]
        return web.json_response({"data": data, "meta": {"result_count": len(data)}} if data else {"meta": {}})

    async def post_rules(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.rule_requests.append(("POST", body))
        for rid in body.get("delete", {}).get("ids", []):
            self.rules.pop(rid)
        for rule in body.get("add", []):
            self.next_id += 1
            self.rules[str(self.next_id)] = {"value": rule["value"], "tag": rule["tag"]}
        return web.json_response({"meta": {"summary": {}}}, status=201 if "add" in body else 200)

    def wire(self, raw: bytes) -> bytes:
        """A recorded line as X would send it to us: our rules in matching_rules, no twarc annotations."""
        try:
            message = json.loads(raw)
        except ValueError:
            return raw  # a truncated line goes out as recorded
        message.pop("__twarc", None)
        if "data" in message:
            message["matching_rules"] = [{"id": rid, "tag": rule["tag"]} for rid, rule in self.rules.items()]
        return json.dumps(message).encode()

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self.connected_at.append(time.time())
        self.queries.append(dict(request.query))
        if not self.authorised(request):
            return web.json_response({"title": "Unauthorized"}, status=401)
        plan = self.plans.pop(0) if self.plans else Plan()
        if plan.status != 200:
            return web.json_response({"title": "Too Many Requests"}, status=plan.status, headers=plan.headers)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        lines = [self.wire(raw) for raw in (plan.lines if plan.lines is not None else self.lines)]
        for line in lines[: plan.count]:
            if plan.keepalive:
                await response.write(b"\r\n")
            await response.write(line + b"\r\n")
        if plan.cut and plan.count is not None:
            await response.write(lines[plan.count][: plan.cut])
        if plan.end == "close":
            assert request.transport is not None
            request.transport.close()  # a network drop: no chunked terminator
            return response
        with suppress(ConnectionError):  # the follower went away
            while not self.release.is_set():
                if plan.keepalive:
                    await response.write(b"\r\n")  # X sends one every ~20 s
                with suppress(TimeoutError):
                    await asyncio.wait_for(self.release.wait(), 0.05)
        return response


@asynccontextmanager
async def fake_x(fake: FakeX) -> AsyncIterator[str]:
    async with serving(fake.app(), shutdown_timeout=0.5) as url:
        try:
            yield url
        finally:
            fake.release.set()  # streams held open must end before the server can


def quick() -> Backoff:
    return Backoff(base=0.01, factor=1.0, cap=0.05, jitter=0.0)


def never() -> Backoff:
    """A backoff a test must not take (it would outlast the test)."""
    return Backoff(base=120.0, cap=120.0, jitter=0.0)


def source(redis: aioredis.Redis, keys: Keys, api: str, **options: Any) -> XSource:
    publisher = Publisher(redis, keys, [CHAT], maxlen=10_000)
    settings: dict[str, Any] = {"backoff": quick(), "network_backoff": quick(), "rate_limit_backoff": quick()}
    settings.update(options)
    return XSource(
        publisher,
        CursorStore(redis, keys),
        ChatMatcher([CHAT]),
        bearer_token=TOKEN,
        tags=["#Dogs"],
        api=api,
        **settings,
    )


@asynccontextmanager
async def running(follower: XSource) -> AsyncIterator[XSource]:
    task = asyncio.create_task(follower.run())
    try:
        yield follower
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def chat_keys(redis: aioredis.Redis, keys: Keys) -> list[str]:
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(keys.chat(CHAT))  # type: ignore[assignment]
    return [unpack_post(eid.decode(), fields[FIELD]).key for eid, fields in entries]


async def until_published(redis: aioredis.Redis, keys: Keys, count: int) -> list[str]:
    async def enough() -> bool:
        return len(await chat_keys(redis, keys)) >= count

    await eventually(enough)
    return await chat_keys(redis, keys)


async def test_follower_publishes_each_stream_tweet_once_in_order_and_counts_the_rest(
    redis: aioredis.Redis, keys: Keys
) -> None:
    fake = FakeX(STREAM)
    async with fake_x(fake) as api, running(source(redis, keys, api)) as follower:
        assert await until_published(redis, keys, 7) == UNIQUE_TWEETS
        await eventually(lambda: follower.counters["received"] == 9)
    assert follower.counters["published"] == 7
    assert follower.counters["skipped:duplicate"] == 1  # the recording holds one tweet twice
    assert follower.counters["skipped:stream_error"] == 1  # the operational-disconnect message
    assert follower.counters["keepalives"] >= 9 and follower.counters["malformed"] == 0
    assert await CursorStore(redis, keys).get("x") == "1377650529766154240"
    query = fake.queries[0]
    assert "edit_history_tweet_ids" in query["tweet.fields"] and "backfill_minutes" not in query
    assert query["expansions"] == "author_id,referenced_tweets.id,attachments.media_keys"


async def test_rules_foreign_ones_are_deleted_ours_added_exactly_once_across_restarts(
    redis: aioredis.Redis, keys: Keys
) -> None:
    fake = FakeX(
        STREAM[:1], rules={"1": {"value": "cats", "tag": "cats"}, "2": {"value": "#dogs -is:retweet", "tag": "dogs"}}
    )
    async with fake_x(fake) as api:
        async with running(source(redis, keys, api, backfill_minutes=2)):
            await until_published(redis, keys, 1)
        async with running(source(redis, keys, api)) as second:
            await eventually(lambda: second.counters["connections"] == 1)
    assert list(fake.rules.values()) == [{"value": "#dogs", "tag": "dogs"}]
    assert fake.rule_requests == [
        ("GET", None),
        ("POST", {"delete": {"ids": ["1", "2"]}}),
        ("POST", {"add": [{"value": "#dogs", "tag": "dogs"}]}),
        ("GET", None),  # the restarted follower finds its rule and changes nothing
    ]
    assert fake.queries[0]["backfill_minutes"] == "2" and "backfill_minutes" not in fake.queries[1]


async def test_backfill_minutes_from_the_config_reach_the_stream_request(
    redis: aioredis.Redis, keys: Keys, tmp_path: Path
) -> None:
    fake = FakeX(STREAM[:1])
    config = tmp_path / "mixer.toml"
    publisher = Publisher(redis, keys, [CHAT], maxlen=10_000)
    async with fake_x(fake) as api:
        for connections, minutes in ((1, 3), (2, 0)):
            config.write_text(f'[[chats]]\ntag = "{CHAT}"\n[x]\napi = "{api}"\nbackfill_minutes = {minutes}\n')
            [follower] = build_sources(
                load_settings(config, {"MIXER_X_BEARER_TOKEN": TOKEN}), publisher, CursorStore(redis, keys)
            )
            assert isinstance(follower, XSource)
            async with running(follower):
                await eventually(lambda: len(fake.queries) == connections)  # noqa: B023 (awaited in this iteration)
    assert fake.queries[0]["backfill_minutes"] == "3" and "backfill_minutes" not in fake.queries[1]


async def test_connection_dropped_mid_message_reconnects_and_misses_or_repeats_nothing(
    redis: aioredis.Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    # The second connection replays the whole recording (as backfill would): the cursor drops what was published.
    caplog.set_level(logging.INFO, logger="mixer.ingest.sources.x_stream")
    fake = FakeX(STREAM, plans=[Plan(count=3, cut=100, end="close")])
    async with fake_x(fake) as api, running(source(redis, keys, api, network_backoff=quick(), backoff=never())) as f:
        assert await until_published(redis, keys, 7) == UNIQUE_TWEETS
        await eventually(lambda: f.counters["received"] == 3 + 9)
    assert f.counters["reconnects"] == 1 and len(fake.connected_at) == 2
    connected = [r.getMessage().split("; ")[1] for r in caplog.records if "x: connected to" in r.getMessage()]
    assert connected[0] == "no tweet published yet" and connected[1].startswith("resuming after tweet id 1")
    assert f.counters["malformed"] == 1  # the half message the drop cut
    assert f.counters["skipped:duplicate"] == 3 + 1
    assert await chat_keys(redis, keys) == UNIQUE_TWEETS


async def test_truncated_line_is_counted_malformed_and_the_rest_published(redis: aioredis.Redis, keys: Keys) -> None:
    fake = FakeX(v2_lines("streaming_output_with_error.jsonl"))
    async with fake_x(fake) as api, running(source(redis, keys, api)) as follower:
        assert await until_published(redis, keys, 7) == UNIQUE_TWEETS
        await eventually(lambda: follower.counters["malformed"] == 1)
    assert follower.counters["published"] == 7 and follower.counters["reconnects"] == 0


async def test_http_429_waits_until_x_rate_limit_reset_then_follows(redis: aioredis.Redis, keys: Keys) -> None:
    reset = int(time.time()) + 1
    plan = Plan(status=429, headers={"x-rate-limit-reset": str(reset), "x-rate-limit-remaining": "0"})
    fake = FakeX(STREAM, plans=[plan])
    async with fake_x(fake) as api:
        follower = source(redis, keys, api, rate_limit_backoff=never(), backoff=never(), network_backoff=never())
        async with running(follower):
            assert await until_published(redis, keys, 7) == UNIQUE_TWEETS
    assert fake.connected_at[1] >= reset - 0.05  # it came back when X said, not after the 120 s backoff
    assert follower.counters["reconnects"] == 1


async def test_http_429_with_an_unreadable_reset_backs_off_and_follows(redis: aioredis.Redis, keys: Keys) -> None:
    # "²" passes str.isdigit() but not int(): a header like it once ended the follower, and with it `mixer ingest`
    fake = FakeX(STREAM, plans=[Plan(status=429, headers={"x-rate-limit-reset": "\u00b2"})])
    async with fake_x(fake) as api:
        follower = source(redis, keys, api, backoff=never(), network_backoff=never())
        async with running(follower):
            assert await until_published(redis, keys, 7) == UNIQUE_TWEETS
    assert follower.counters["reconnects"] == 1


async def test_http_error_backs_off_with_the_http_backoff_then_follows(redis: aioredis.Redis, keys: Keys) -> None:
    fake = FakeX(STREAM, plans=[Plan(status=503), Plan(status=500)])
    async with fake_x(fake) as api, running(source(redis, keys, api, network_backoff=never())) as follower:
        assert await until_published(redis, keys, 7) == UNIQUE_TWEETS
    assert follower.counters["reconnects"] == 2


async def test_unknown_message_and_error_message_are_counted_and_skipped(redis: aioredis.Redis, keys: Keys) -> None:
    unknown = json.dumps({"notice": {"kind": "something X adds one day"}}).encode()
    fake = FakeX([*STREAM[:2], unknown, *STREAM[2:]])
    async with fake_x(fake) as api, running(source(redis, keys, api)) as follower:
        assert await until_published(redis, keys, 7) == UNIQUE_TWEETS
        await eventually(lambda: follower.counters["received"] == 10)
    assert follower.counters["skipped:unknown_message"] == 1
    assert follower.counters["skipped:stream_error"] == 1
    assert follower.counters["malformed"] == 0


async def test_stalled_stream_is_dropped_and_followed_again(redis: aioredis.Redis, keys: Keys) -> None:
    fake = FakeX(STREAM, plans=[Plan(count=2, keepalive=False)])  # then silence: not even keep-alives
    async with fake_x(fake) as api:
        follower = source(redis, keys, api, stall_seconds=0.5, backoff=never())
        async with running(follower):
            assert await until_published(redis, keys, 7) == UNIQUE_TWEETS
    assert follower.counters["stalls"] == 1 and follower.counters["reconnects"] == 1


async def test_restarted_follower_resumes_after_its_stored_cursor(redis: aioredis.Redis, keys: Keys) -> None:
    fake = FakeX(STREAM, plans=[Plan(count=4)])  # the first follower sees 4 messages, then the stream is quiet
    async with fake_x(fake) as api:
        async with running(source(redis, keys, api)):
            assert await until_published(redis, keys, 4) == UNIQUE_TWEETS[:4]
        assert await CursorStore(redis, keys).get("x") == UNIQUE_TWEETS[3][2:]
        async with running(source(redis, keys, api)) as second:  # a new instance: nothing in memory
            assert await until_published(redis, keys, 7) == UNIQUE_TWEETS
            await eventually(lambda: second.counters["received"] == 9)
    assert second.counters["skipped:duplicate"] == 4 + 1
    assert await chat_keys(redis, keys) == UNIQUE_TWEETS


async def test_skip_reasons_from_payload_names_are_a_fixed_set_unknown_ones_counted_as_other(
    redis: aioredis.Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mixer.ingest.skips")
    names = [f"made_up_event_{i}" for i in range(30)]  # every one a valid identifier an attacker could send
    lines = [json.dumps({"data": {name: {"id": "1"}}}).encode() for name in names]
    lines.append(json.dumps({"data": {"user_suspend": {"id": "1"}}}).encode())  # a real compliance event
    async with fake_x(FakeX(lines)) as api, running(source(redis, keys, api)) as follower:
        await eventually(lambda: follower.counters["received"] == 31)
    skipped = {k: n for k, n in follower.counters.items() if k.startswith("skipped:")}
    assert skipped == {"skipped:other": 30, "skipped:compliance_user_suspend": 1}
    logged = [r.getMessage() for r in caplog.records if r.name == "mixer.ingest.skips"]
    assert any("made_up_event_0" in m and follower.stream_url in m for m in logged)
