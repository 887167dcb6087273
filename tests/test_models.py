"""The Post: the contract dict and msgpack round trips (quote_of, quote_url, attachments), and the size caps and
validation of from_dict."""

from __future__ import annotations

import copy
import gc
import json
import logging
import pickle
import typing
from collections import Counter
from typing import Any

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mixer import models
from mixer.codec import loads, pack, pack_post, unpack_post
from mixer.models import ELLIPSIS, LIMITS, Attachment, Edit, Post, Retraction, trimmed

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


# Attachments: the contract shape the wall and widget read, its validation, and its round trips.

PHOTO = {
    "kind": "image",
    "url": "https://pbs.twimg.com/media/E_5xtEhVIAInx_o.jpg",
    "preview": "https://pbs.twimg.com/media/E_5xtEhVIAInx_o.jpg?name=small",
    "alt": "A long email from Green Energy - please request full text if required.",
    "width": 854,
    "height": 1757,
}
BARE = {"kind": "video", "url": "https://files.example/v.mp4"}


def test_attachments_keep_the_contract_shape_through_json_and_msgpack_and_media_is_their_urls() -> None:
    post = Post.from_dict({**POST, "attachments": [PHOTO, BARE]})
    data = post.to_dict()
    assert data["attachments"] == [PHOTO, BARE]  # optional fields only when known, nothing else
    assert data["media"] == [PHOTO["url"], BARE["url"]]
    assert Post.from_dict(loads(json.dumps(data))) == post
    assert unpack_post("5-0", pack_post(post)) == post.replace(id="5-0")


def test_a_post_without_attachments_has_no_attachments_field_and_old_stored_posts_still_decode() -> None:
    stored = {k: v for k, v in {**POST, "media": ["https://pbs.twimg.com/m.jpg"]}.items() if k != "id"}
    post = unpack_post("7-0", msgpack.packb(stored, use_bin_type=True))  # as written before attachments existed
    assert post.media == ("https://pbs.twimg.com/m.jpg",) and post.attachments == ()
    assert "attachments" not in post.to_dict() and post.to_dict()["media"] == ["https://pbs.twimg.com/m.jpg"]


def test_attachments_override_a_different_media_list_and_a_post_built_in_code_gets_their_urls() -> None:
    post = Post.from_dict({**POST, "media": ["https://other.example/x.png"], "attachments": [BARE]})
    assert post.media == (BARE["url"],)
    built = Post.from_dict(POST).replace(attachments=(Attachment("image", "https://a.example/1.png"),))
    assert built.media == ("https://a.example/1.png",) and built.to_dict()["media"] == ["https://a.example/1.png"]


def test_an_attachment_that_is_not_http_is_dropped_and_a_bad_preview_loses_only_the_preview_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counted: Counter[str] = Counter()
    monkeypatch.setattr(models, "trimmed", counted)
    items = [
        {**BARE, "url": "javascript:alert(1)"},
        {**BARE, "url": "data:image/png;base64,AAAA"},
        {**BARE, "url": "//cdn.example/x.png"},
        {**PHOTO, "preview": "file:///etc/passwd"},
        {**BARE, "url": "https://e.example/" + "a" * LIMITS.url},
    ]
    post = Post.from_dict({**POST, "attachments": items, "media": ["https://kept.example/no.png"]})
    assert post.attachments == (Attachment("image", PHOTO["url"], None, PHOTO["alt"], 854, 1757),)
    assert counted == {"attachment_dropped": 4, "attachment_preview_dropped": 1}


def test_all_attachments_dropped_leaves_the_media_list_as_given() -> None:
    post = Post.from_dict(
        {**POST, "media": ["https://kept.example/a.png"], "attachments": [{**BARE, "url": "ftp://x"}]}
    )
    assert post.attachments == () and post.media == ("https://kept.example/a.png",)


def test_alt_text_is_trimmed_cut_to_1500_characters_and_blank_alt_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    counted: Counter[str] = Counter()
    monkeypatch.setattr(models, "trimmed", counted)
    items = [{**BARE, "alt": "  a dog \n"}, {**BARE, "alt": "   "}, {**BARE, "alt": "d" * 50_000}]
    first, blank, long = Post.from_dict({**POST, "attachments": items}).attachments
    assert (first.alt, blank.alt) == ("a dog", None)
    assert long.alt == "d" * (LIMITS.alt - 1) + ELLIPSIS and LIMITS.alt == 1_500
    assert counted == {"alt_cut": 1}


def test_more_attachments_than_the_limit_keep_the_first_ten_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    counted: Counter[str] = Counter()
    monkeypatch.setattr(models, "trimmed", counted)
    items = [{**BARE, "url": f"https://e.example/{n}.mp4"} for n in range(25)]
    post = Post.from_dict({**POST, "attachments": items})
    assert len(post.attachments) == LIMITS.attachments == 10 and post.attachments[-1].url == "https://e.example/9.mp4"
    assert counted == {"attachments_dropped": 1}


def test_an_unknown_kind_is_kept_as_unknown() -> None:
    (item,) = Post.from_dict({**POST, "attachments": [{**BARE, "kind": "hologram"}]}).attachments
    assert item.kind == "unknown"


@pytest.mark.parametrize(
    ("attachments", "reason"),
    [
        ("https://a.example/1.png", "'attachments' must be a list of objects"),
        (["https://a.example/1.png"], r"'attachments\[0\]' must be an object"),
        ([BARE, {"url": "https://a.example/1.png"}], r"'attachments\[1\].kind' must be a non-empty string"),
        ([{"kind": "image", "url": 5}], r"'attachments\[0\].url' must be a non-empty string"),
        ([{**BARE, "alt": ["x"]}], r"'attachments\[0\].alt' must be a string"),
        ([{**BARE, "alt": "\ud800"}], "'alt' holds a lone surrogate"),
        ([{**BARE, "width": "640"}], r"'attachments\[0\].width' must be a whole number of pixels"),
        ([{**BARE, "height": 0}], r"'attachments\[0\].height' must be a whole number of pixels"),
        ([{**BARE, "width": True}], r"'attachments\[0\].width' must be a whole number of pixels"),
        ([{**BARE, "preview": 3}], r"'attachments\[0\].preview' must be a string"),
    ],
)
def test_an_attachment_of_the_wrong_shape_refuses_the_post_naming_it(attachments: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Post.from_dict({**POST, "attachments": attachments})


_URL = st.builds(lambda host, path: f"https://{host}.example/{path}", st.from_regex(r"[a-z]{1,8}", fullmatch=True),
                 st.text("abc/._-~%", max_size=20))  # fmt: skip
_ATTACHMENT = st.fixed_dictionaries(
    {"kind": st.sampled_from(["image", "video", "gifv", "audio", "unknown"]), "url": _URL},
    optional={
        "preview": _URL,
        "alt": st.text(st.characters(codec="utf-8"), min_size=1, max_size=60).filter(lambda s: s == s.strip()),
        "width": st.integers(1, LIMITS.pixels),
        "height": st.integers(1, LIMITS.pixels),
    },
)


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(_ATTACHMENT, max_size=LIMITS.attachments))
def test_any_valid_attachments_round_trip_exactly_through_json_and_msgpack(items: list[dict[str, Any]]) -> None:
    post = Post.from_dict({**POST, "attachments": items})
    assert post.to_dict().get("attachments", []) == items
    assert Post.from_dict(loads(json.dumps(post.to_dict()))) == post
    assert unpack_post("1-0", pack_post(post)) == post.replace(id="1-0")


def test_replace_takes_exactly_the_posts_fields_with_their_types() -> None:
    """``PostChanges`` (what mypy checks ``Post.replace`` calls against) names every Post field, typed alike."""
    fields = typing.get_type_hints(Post)
    assert typing.get_type_hints(models.PostChanges) == fields
    assert list(models.PostChanges.__annotations__) == list(Post.__struct_fields__)  # in the same order, too


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(_ATTACHMENT, max_size=LIMITS.attachments), st.lists(st.sampled_from(["a", "b", "c"]), unique=True))
def test_replace_and_with_chats_are_the_post_built_anew_and_copies_and_pickles_are_equal(
    items: list[dict[str, Any]], chats: list[str]
) -> None:
    post = Post.from_dict({**POST, **QUOTE, "id": "7-0", "attachments": items})
    fields = {name: getattr(post, name) for name in Post.__struct_fields__}
    assert Post(*fields.values()) == Post(**fields) == post and hash(Post(**fields)) == hash(post)
    assert (
        post.with_chats(tuple(chats)) == post.replace(chats=tuple(chats)) == Post(**{**fields, "chats": tuple(chats)})
    )
    plain = Post.from_dict({**POST, "media": ["https://other.example/x.png"]})
    built = Post(**{**{name: getattr(plain, name) for name in Post.__struct_fields__}, "attachments": post.attachments})
    assert plain.replace(attachments=post.attachments) == built  # media: the attachments' URLs, as any Post's
    assert built.media == (tuple(a.url for a in post.attachments) or plain.media)
    events = (post, post.author, *post.attachments, Edit(post), Retraction(post.key, post.source, post.chats))
    for event in events:
        for twin in (copy.copy(event), copy.deepcopy(event), pickle.loads(pickle.dumps(event))):
            assert twin == event and hash(twin) == hash(event) and repr(twin) == repr(event)
        assert not gc.is_tracked(event)  # gc=False: nothing in them can hold a cycle


# Values each field may carry in a stored entry: fitting, at and past each limit, empty, of the wrong type, None.
_LONG = {"key": LIMITS.key, "source": LIMITS.source, "text": LIMITS.text, "url": LIMITS.url, "lang": LIMITS.lang}
_STR = st.sampled_from(
    ["", "a", "x:1", "Ünï", "#Tag", " tag ", "A b", "\u00df", "\U0001f44b", "https://e.com/a.jpg",
     "javascript:alert(1)", "HTTPS://E.COM/A.JPG", "data:text/html,x"]
)  # fmt: skip
_FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    name: st.one_of(_STR, st.sampled_from([None, 0, 1.5, True, [], {}, "k" * limit, "k" * (limit + 1)]))
    for name, limit in {
        **_LONG,
        "reply_to": LIMITS.key,
        "boost_of": LIMITS.key,
        "quote_of": LIMITS.key,
        "quote_url": LIMITS.url,
        "id": LIMITS.id,
    }.items()
}
_FIELD_VALUES["chats"] = st.lists(
    st.sampled_from(["a", "smbiz", "Ünï", "#Tag", "EdChat", "\u00df"]), max_size=4
) | st.lists(st.one_of(_STR, st.just(1), st.just("t" * 101)), max_size=LIMITS.chats + 2)
_FIELD_VALUES["created"] = st.sampled_from([0, 1, -1, 1_632_300_000_000, 1.0e12, 2.5, True, None, "1", 1 << 53])
_FIELD_VALUES["at"] = _FIELD_VALUES["created"]
_FIELD_VALUES["media"] = st.one_of(
    st.lists(st.sampled_from(["https://e.com/a.jpg", "u" * (LIMITS.url + 1), 3]), max_size=LIMITS.media + 2),
    st.sampled_from([None, "https://e.com/a.jpg"]),
)
_FIELD_VALUES["attachments"] = st.sampled_from([None, [], [{"kind": "image", "url": "https://e.com/a.jpg"}], "x"])
_FIELD_VALUES["author"] = st.fixed_dictionaries(
    {},
    optional={
        "handle": st.one_of(_STR, st.sampled_from([None, 5, "h" * (LIMITS.handle + 1)])),
        "name": st.one_of(_STR, st.sampled_from([None, 5, "n" * (LIMITS.name + 1)])),
        "avatar": st.one_of(_STR, st.sampled_from([None, 5, "a" * (LIMITS.url + 1)])),
    },
) | st.sampled_from([None, "someone", []])


@settings(max_examples=600, deadline=None)
@given(
    st.dictionaries(st.sampled_from(sorted(_FIELD_VALUES)), st.none(), max_size=3).flatmap(
        lambda chosen: st.fixed_dictionaries({name: _FIELD_VALUES[name] for name in chosen})
    ),
    st.sampled_from(["", "1-0", "9" * 70]),
    st.sets(st.sampled_from(sorted(POST)), max_size=2),
)
@example({"chats": ["smbiz", "smbiz"]}, "", set())  # the cases closest to the fast path's edge, always tried
@example({"chats": ["EdChat"]}, "", set())
@example({"text": "t" * (LIMITS.text + 1)}, "", set())
@example({"at": 0}, "1-0", {"lang"})
@example({"attachments": [{"kind": "image", "url": "https://e.com/a.jpg"}]}, "", set())
@example({"author": {"handle": "h", "avatar": ""}}, "", set())
@example({"url": "javascript:alert(1)", "media": ["data:text/html,x"], "quote_url": "javascript:x"}, "", set())
def test_a_stored_post_decodes_as_from_dict_reads_it_whatever_it_holds(
    changed: dict[str, Any], entry_id: str, removed: set[str]
) -> None:
    # unpack_post's typed fast path (the merge stage's decode) must give what Post.from_dict gives, or the same error
    data = {k: v for k, v in {**POST, **changed}.items() if k not in removed}
    raw = msgpack.packb(data, use_bin_type=True)
    try:
        expected: Post | str = Post.from_dict({**data, "id": entry_id})
    except ValueError as exc:
        expected = str(exc)
    try:
        got: Post | str = unpack_post(entry_id, raw)
    except ValueError as exc:
        got = str(exc)
    assert got == expected


_MSGPACK_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=12), _MSGPACK_VALUES, max_size=18))
def test_the_stored_form_is_the_bytes_msgpack_packb_writes(value: dict[str, object]) -> None:
    assert pack(value) == msgpack.packb(value, use_bin_type=True)


def test_a_link_a_screen_would_make_of_a_post_is_http_or_nothing_and_each_drop_is_counted() -> None:
    bad = "javascript:alert(document.cookie)"
    data = {**POST, "url": bad, "quote_url": bad, "media": [bad, "https://e.com/a.jpg"]}
    data["author"] = {**POST["author"], "avatar": bad}
    before = trimmed.copy()
    for post in (Post.from_dict(data), unpack_post("", msgpack.packb(data, use_bin_type=True))):
        assert (post.url, post.quote_url, post.author.avatar, post.media) == ("", None, None, ("https://e.com/a.jpg",))
    assert all((trimmed - before)[f"{field}_dropped"] == 2 for field in ("url", "quote_url", "avatar", "media"))
    assert Post.from_dict({**POST, "url": "HTTPS://E.COM/1"}).url == "HTTPS://E.COM/1"


def test_an_author_needs_only_a_handle_and_a_post_without_one_is_refused_saying_so() -> None:
    assert Post.from_dict({**POST, "author": {"handle": "a"}}).author.handle == "a"
    for author in (None, "alice", ["a"]):
        with pytest.raises(ValueError, match=r"'author' must be an object with a 'handle' \('name' and 'avatar'"):
            Post.from_dict({**POST, "author": author})


def test_a_json_error_names_where_once() -> None:
    with pytest.raises(ValueError) as cut:
        loads('{"key": "x:1", "text": "cut sho')
    assert str(cut.value) == "not JSON: Unterminated string starting at column 24"
    with pytest.raises(ValueError) as bad:
        loads("{\n  nope}")
    assert str(bad.value) == "not JSON: Expecting property name enclosed in double quotes at line 2 column 3"
