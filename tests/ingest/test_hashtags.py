from __future__ import annotations

from typing import Any

import pytest
import yaml

from mixer.ingest.hashtags import ChatMatcher, extract_hashtags, hashtag_spans, normalize_hashtag
from tests.helpers import FIXTURES as FIXTURES_DIR

CASES: dict[str, list[dict[str, Any]]] = yaml.safe_load(
    (FIXTURES_DIR / "hashtags" / "extract.yml").read_text(encoding="utf-8")
)["tests"]


def wide(ascii_text: str) -> str:
    """The full-width form of ASCII text (U+FF01..U+FF5E), as Japanese keyboards type it."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in ascii_text)


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [case["description"] for case in cases]


HASHTAG_CASES = CASES["hashtags"] + CASES["hashtags_from_astral"]


@pytest.mark.parametrize("case", HASHTAG_CASES, ids=_ids(HASHTAG_CASES))
def test_extraction_agrees_with_twitter_text_conformance(case: dict[str, Any]) -> None:
    assert extract_hashtags(case["text"]) == case["expected"]


@pytest.mark.parametrize("case", CASES["hashtags_with_indices"], ids=_ids(CASES["hashtags_with_indices"]))
def test_hashtag_spans_agree_with_twitter_text_indices(case: dict[str, Any]) -> None:
    expected = [(item["hashtag"], *item["indices"]) for item in case["expected"]]
    assert hashtag_spans(case["text"]) == expected


URL_CASES = [
    (case["text"], url)
    for group in ("urls", "urls_with_indices", "tco_urls_with_params")
    for case in CASES[group]
    for url in (item if isinstance(item, str) else item["url"] for item in case["expected"])
    if "#" in url
]


@pytest.mark.parametrize(("text", "url"), URL_CASES)
def test_a_hash_inside_a_conformance_url_is_no_hashtag(text: str, url: str) -> None:
    start = text.index(url)
    assert [s for s in hashtag_spans(text) if start <= s[1] < start + len(url)] == []


def test_the_conformance_file_holds_all_its_hashtag_cases() -> None:
    assert (len(CASES["hashtags"]), len(CASES["hashtags_from_astral"]), len(CASES["hashtags_with_indices"])) == (
        65,
        3,
        8,
    )
    assert len(URL_CASES) >= 5


def test_a_bare_domain_path_and_a_url_fragment_hide_hashtags_but_text_around_them_does_not() -> None:
    assert extract_hashtags("see example.com/#smbiz and #edchat") == ["edchat"]
    assert extract_hashtags("https://host/@u/1#x #journchat, http://a.b/#c") == ["journchat"]
    assert extract_hashtags("end of sentence.#blogchat") == ["blogchat"]


def test_a_hash_glued_to_a_letter_digit_or_ampersand_starts_no_hashtag() -> None:
    assert extract_hashtags("a#b 1#c &#d #e#f #g") == ["g"]
    assert extract_hashtags("##smbiz #️⃣ #\u20e3") == ["smbiz"]


@pytest.mark.parametrize(
    "tag", ["#SmBiz", "smbiz", "SMBIZ", "#" + wide("SMBIZ"), wide("#smbiz"), wide("#SmBiz"), " #smbiz "]
)
def test_normalisation_is_case_insensitive_and_unicode_aware(tag: str) -> None:
    assert normalize_hashtag(tag) == "smbiz"


def test_normalisation_casefolds_beyond_ascii_and_keeps_non_latin_tags() -> None:
    assert normalize_hashtag("Straße") == normalize_hashtag("STRASSE") == "strasse"
    assert normalize_hashtag("#트위터") == "트위터"
    assert normalize_hashtag("ｻｯｶｰ") == "サッカー"  # half-width katakana folds to full width


def test_matcher_with_tags_keeps_only_configured_chats_normalised_in_first_seen_order() -> None:
    matcher = ChatMatcher(["#SmBiz", "edchat", wide("JournChat")])
    hashtags = extract_hashtags(f"#EdChat meets #{wide('SMBIZ')} and #other, again #smbiz #journchat")
    assert matcher.chats(hashtags) == ("edchat", "smbiz", "journchat")
    assert matcher.chats(["other", "more"]) == ()
    assert not matcher.all_tags


def test_matcher_with_none_makes_every_hashtag_a_chat() -> None:
    matcher = ChatMatcher(None)
    assert matcher.all_tags
    assert matcher.chats(["Café", "café", "CAFÉ", "x", ""]) == ("café", "x")


def test_extra_rule_tags_count_after_the_hashtags_and_are_matched_the_same_way() -> None:
    assert ChatMatcher(["smbiz", "edchat"]).chats(["edchat"], extra=["#SMBIZ", "EdChat", "unknown"]) == (
        "edchat",
        "smbiz",
    )
    assert ChatMatcher(None).chats([], extra=["#Rule"]) == ("rule",)


def test_with_every_tag_a_chat_names_that_cannot_be_chat_tags_are_left_out() -> None:
    hashtags, rule_tags = ["a" * 101, "a" * 100], ["cats and dogs", "a#b", "#", "ok"]
    assert ChatMatcher(None).chats(hashtags, extra=rule_tags) == ("a" * 100, "ok")
