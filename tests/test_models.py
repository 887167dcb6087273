"""The Post: the contract dict and msgpack round trips (quote_of, quote_url), and the size caps of from_dict."""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

import pytest

from mixer import models
from mixer.codec import loads, pack_post, unpack_post
from mixer.models import ELLIPSIS, LIMITS, Post

POST: dict[str, Any] = {
    "key": "x:1440715975020584960",
    "source": "x",
    "chats": ["brexit"],
    "author": {"handle": "someone", "name": "Some One", "avatar": "https://pbs.twimg.com/a.jpg"},
    "text": "And @AngelaRayner & #NicolaSturgeon blame #Brexit..",
    "url": "https://twitter.com/someone/status/1440715975020584960",
    "created": 1_632_300_000_000,
    "at": 1_632_300_000_500,
}
QUOTE = {"quote_of": "x:1440660748275834882", "quote_url": "https://twitter.com/other/status/1440660748275834882"}


def test_a_quote_survives_the_contract_dict_json_and_msgpack() -> None:
    post = Post.from_dict({**POST, **QUOTE})
    assert (post.quote_of, post.quote_url) == (QUOTE["quote_of"], QUOTE["quote_url"])
    assert Post.from_dict(loads(json.dumps(post.to_dict()))) == post
    assert unpack_post("", pack_post(post)) == post
    assert {k: post.to_dict()[k] for k in QUOTE} == QUOTE


def test_a_post_without_a_quote_has_no_quote_fields_in_its_contract_dict() -> None:
    data = Post.from_dict(POST).to_dict()
    assert "quote_of" not in data and "quote_url" not in data


def test_a_quote_field_of_the_wrong_type_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="'quote_of' must be a string"):
        Post.from_dict({**POST, "quote_of": 5})


def test_a_50_mb_text_is_cut_to_the_text_limit_ending_in_an_ellipsis_counted_and_logged(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted: Counter[str] = Counter()
    monkeypatch.setattr(models, "trimmed", counted)  # the process-wide counter, fresh for this test
    with caplog.at_level(logging.WARNING, logger="mixer.models"):
        post = Post.from_dict({**POST, "text": "z" * 50_000_000})
        for _ in range(3):
            Post.from_dict({**POST, "text": "z" * 10_001})
    assert len(post.text) == LIMITS.text == 10_000 and post.text == "z" * 9_999 + ELLIPSIS
    assert counted == {"text_cut": 4}
    assert "post x:1440715975020584960: text cut from 50,000,000 to 10,000 characters" in caplog.text
    assert len(caplog.records) == 3  # the 1st, 2nd and 4th cut: a flood of them cannot flood the log


def test_names_and_handles_are_cut_and_links_too_long_are_dropped_not_cut() -> None:
    long_url = "https://example.test/" + "a" * LIMITS.url
    post = Post.from_dict(
        {
            **POST,
            "author": {"handle": "h" * 1000, "name": "n" * 1000, "avatar": long_url},
            "url": long_url,
            "media": [long_url, *(f"https://example.test/{n}.jpg" for n in range(40))],
            "chats": [f"chat{n}" for n in range(100)],
            "quote_url": long_url,
            "reply_to": "x:" + "1" * LIMITS.key,
        }
    )
    assert post.author.handle == "h" * (LIMITS.handle - 1) + ELLIPSIS
    assert post.author.name == "n" * (LIMITS.name - 1) + ELLIPSIS
    assert post.author.avatar is None and post.url == "" and post.quote_url is None and post.reply_to is None
    assert post.media == tuple(f"https://example.test/{n}.jpg" for n in range(LIMITS.media))
    assert post.chats == tuple(f"chat{n}" for n in range(LIMITS.chats))
    assert len(json.dumps(post.to_dict())) < 20_000


def test_a_post_within_every_limit_is_kept_exactly() -> None:
    data = {**POST, "text": "t" * LIMITS.text, "author": {"handle": "h" * LIMITS.handle, "name": "n" * LIMITS.name}}
    post = Post.from_dict(data)
    assert post.text == data["text"] and post.author.handle == "h" * LIMITS.handle
    assert post.author.name == "n" * LIMITS.name


def test_a_key_too_long_to_be_an_identity_refuses_the_post() -> None:
    with pytest.raises(ValueError, match="'key' is 5,002 characters"):
        Post.from_dict({**POST, "key": "x:" + "9" * 5000})
