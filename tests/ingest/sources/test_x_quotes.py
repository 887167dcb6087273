"""X quotes keep their quoted post (``quote_of``, ``quote_url``), and v2 authors missing from ``includes`` are
marked unresolved: the v1.1 and v2 parsers over real payloads (tests/fixtures/x-v1, x-v2 and their ORIGIN.md)."""

from __future__ import annotations

import json
from typing import Any

from mixer.ingest.hashtags import ChatMatcher
from mixer.ingest.sources.x_v1 import parse_v1
from mixer.ingest.sources.x_v2 import parse_v2
from mixer.models import Post
from tests.helpers import FIXTURES

EVERY_TAG = ChatMatcher(None)
NOW = 1_800_000_000_000


def v2_messages(name: str) -> list[dict[str, Any]]:
    lines = (FIXTURES / "x-v2" / name).read_bytes().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def v1(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "x-v1" / "original" / name).read_text())
    return data


def posts(events: list[Any]) -> list[Post]:
    return [e for e in events if isinstance(e, Post)]


def test_every_quote_tweet_of_a_real_v2_search_keeps_its_quoted_post_key_and_url() -> None:
    [message] = v2_messages("brexit.jsonl")
    refs = [(t["id"], r) for t in message["data"] for r in t.get("referenced_tweets", [])]
    quoting = {tweet_id: ref["id"] for tweet_id, ref in refs if ref["type"] == "quoted"}
    assert len(quoting) == 11  # (and the 12th: quoted_edit.jsonl below)
    parsed = posts(parse_v2(message, ChatMatcher(["brexit"]), NOW))
    by_key = {p.key: p for p in parsed}
    order = [p.key for p in parsed]
    for tweet_id, quoted_id in quoting.items():
        post, quoted = by_key[f"x:{tweet_id}"], by_key[f"x:{quoted_id}"]
        assert post.quote_of == quoted.key
        assert post.quote_url == quoted.url and post.quote_url.endswith(f"/status/{quoted_id}")
        assert order.index(quoted.key) < order.index(post.key)  # the quoted post comes first
        assert post.to_dict()["quote_of"] == quoted.key


def test_a_v2_quote_of_an_edited_tweet_links_to_the_first_version_key() -> None:
    [message] = v2_messages("quoted_edit.jsonl")
    quoted, quoting = posts(parse_v2(message, EVERY_TAG, NOW))
    assert quoting.quote_of == quoted.key == "x:1576994746135764992"
    assert quoting.quote_url == "https://twitter.com/wongmjane/status/1576994746135764992"


def test_a_v2_quote_whose_quoted_tweet_is_not_included_still_names_it_from_its_link() -> None:
    [message] = v2_messages("brexit.jsonl")
    tweet = next(t for t in message["data"] if t["id"] == "1440715332310630403")  # quotes 1440527117482020869
    message = {"data": [tweet], "includes": {"users": message["includes"]["users"]}}  # no includes.tweets
    [post] = posts(parse_v2(message, EVERY_TAG, NOW))
    assert post.quote_of == "x:1440527117482020869"
    assert post.quote_url is not None and post.quote_url.endswith("/status/1440527117482020869")


def test_v1_quotes_keep_the_quoted_status_key_and_url() -> None:
    quoted, quoting = posts(parse_v1(v1("classic_no_hidden/quote.json"), EVERY_TAG, NOW))
    assert quoting.quote_of == quoted.key == "x:761667947089715200"
    assert quoting.quote_url == "https://twitter.com/beckybitz/status/761667947089715200"
    quoted, quoting = posts(parse_v1(v1("lt140_hidden/quoted_w_replies.json"), EVERY_TAG, NOW))
    assert (quoting.quote_of, quoting.quote_url) == (quoted.key, quoted.url)
    assert quoted.quote_of is None


def test_a_v1_quote_without_its_quoted_status_object_names_it_by_id_and_permalink() -> None:
    status = v1("classic_no_hidden/quote.json")
    del status["quoted_status"]  # as a stream sends it when the quoted status is unavailable
    [post] = posts(parse_v1(status, EVERY_TAG, NOW))
    assert post.quote_of == "x:761667947089715200"
    assert post.quote_url == "https://twitter.com/beckybitz/status/761667947089715200"  # its t.co link's target


def test_a_retweet_of_a_quote_carries_the_quote_of_the_original() -> None:
    [message] = v2_messages("brexit.jsonl")
    parsed = posts(parse_v2(message, EVERY_TAG, NOW))
    retweets = [p for p in parsed if p.boost_of and p.quote_of]
    assert retweets  # brexit.jsonl has retweets of quote tweets
    by_key = {p.key: p for p in parsed}
    for retweet in retweets:
        original = by_key[str(retweet.boost_of)]
        assert (retweet.quote_of, retweet.quote_url) == (original.quote_of, original.quote_url)


def test_a_v2_tweet_without_the_author_expansion_is_marked_unresolved_not_given_an_invented_handle() -> None:
    [message] = v2_messages("two_tweets.jsonl")
    del message["includes"]["users"]  # the same response requested without expansions=author_id
    first, second = posts(parse_v2(message, EVERY_TAG, NOW))
    assert first.author.handle == "id:1380086327023169540" and second.author.handle == "id:1379899464345923590"
    assert first.author.name == "" and first.author.avatar is None
    assert first.url == "https://twitter.com/i/web/status/1391677057810288641"
    for tweet in [*message["data"], *message["includes"].get("tweets", [])]:
        del tweet["author_id"]  # not even the author's id: still no invented handle
    assert {p.author.handle for p in posts(parse_v2(message, EVERY_TAG, NOW))} == {"id:?"}
