from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixer.merge.qa import qa_tags
from tests.helpers import ROOT

DEMO = ROOT / "mixer" / "data" / "pstweetchat.jsonl"


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ("Q1: What's the one #PowerShell cmdlet you can't live without? #PSTweetChat", ("Q", 1)),
        ("A1: Get-Member. Every single day. #PSTweetChat", ("A", 1)),
        ("Q2. How do you keep up with new modules? #smbiz", ("Q", 2)),
        ("A3) Pitch by email, never by DM #journchat", ("A", 3)),
        ("A4 - Consistency beats volume #blogchat", ("A", 4)),
        ("A4 \u2013 consistency, again #blogchat", ("A", 4)),
        ("A 5: we use exit tickets #edchat", ("A", 5)),
        ("Q 6: What's your favourite classroom tool?", ("Q", 6)),
        ("A.7 Google Forms, hands down", ("A", 7)),
        ("A.7: Google Forms", ("A", 7)),
        ("q8: lower case works too", ("Q", 8)),
        ("a9) so do lower-case answers", ("A", 9)),
        ("@JeffHicks A1: Get-Command first, then Get-Help", ("A", 1)),
        ("@JeffHicks @WindosNZ A2: VS Code with the PowerShell extension", ("A", 2)),
        (".@JournChat A10: always read the outlet before pitching", ("A", 10)),
        ("@bad@mastodon.social A3: from the fediverse", ("A", 3)),
        ("#edchat A4: student choice boards", ("A", 4)),
        ("Q2a: a follow-up to Q2", ("Q", 2)),
        ("A2b) and its answer", ("A", 2)),
        ("Q12: the last question tonight", ("Q", 12)),
        ("  A1:no space after the colon", ("A", 1)),
        ("\uff31\uff11\uff1a full-width, as a Japanese keyboard types it", ("Q", 1)),
        ("A1:", ("A", 1)),
    ],
)
def test_numbered_questions_and_answers_are_tagged(text: str, tag: tuple[str, int]) -> None:
    assert qa_tags(text) == tag


@pytest.mark.parametrize(
    "text",
    [
        "A1 steak sauce is great",  # no separator after the number
        "A1",
        "Q1 2023 revenue grew 4%",
        "Q1-Q3 results are in",
        "A1.5 cups of flour",
        "A1:30 pm works for me",
        "a 1-hour session on #PowerShell",
        "a 1:1 meeting with my manager",
        "Q100: three digits is no question number",
        "A1steak: no",
        "RT @JeffHicks: Q1: What's your favourite cmdlet?",  # a retweet is not the question itself
        "Booked AZ-400 in Q1. Been in Azure for years #pstweetchat",
        "What's Q1 looking like? #smbiz",
        "Aa1: not a marker",
        "",
    ],
)
def test_text_that_only_looks_numbered_is_not_tagged(text: str) -> None:
    assert qa_tags(text) is None


def test_the_pstweetchat_recording_holds_no_numbered_questions() -> None:
    """#PSTweetChat is a free-form chat: nobody posts Q1/A1 there, so nothing in the demo is tagged."""
    lines = [line for line in DEMO.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    texts = [json.loads(line)["text"] for line in lines]
    assert len(texts) > 3000
    assert [t for t in texts if qa_tags(t) is not None] == []


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_qa_tags_never_raises_on_any_text(text: str) -> None:
    tag = qa_tags(text)
    assert tag is None or (tag[0] in ("Q", "A") and 0 <= tag[1] <= 99)


@settings(max_examples=300, deadline=None)
@given(
    role=st.sampled_from("QAqa"),
    number=st.integers(1, 99),
    sep=st.sampled_from([": ", ". ", ") ", " - ", " \u2014 ", " : ", "/ "]),
    rest=st.text(max_size=40),
    mentions=st.lists(st.from_regex(r"@[A-Za-z0-9_]{1,12}", fullmatch=True), max_size=3),
)
def test_a_marker_after_any_mentions_carries_its_role_and_number(
    role: str, number: int, sep: str, rest: str, mentions: list[str]
) -> None:
    lead = "".join(m + " " for m in mentions)
    assert qa_tags(f"{lead}{role}{number}{sep}{rest}") == (role.upper(), number)


@settings(max_examples=300, deadline=None)
@given(
    role=st.sampled_from("QAqa"),
    number=st.integers(1, 99),
    word=st.from_regex(r"[A-Za-z][a-z]{1,10}", fullmatch=True),
    rest=st.text(max_size=40),
)
def test_a_number_followed_by_a_plain_word_is_no_marker(role: str, number: int, word: str, rest: str) -> None:
    assert qa_tags(f"{role}{number} {word}{rest}") is None
