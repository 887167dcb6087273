"""Twitter-chat question/answer numbering: which question a post asks or answers.

A hosted chat posts numbered questions ("Q1: ...") and participants answer with the
same number ("A1: ..."). ``qa_tags`` reads that marker from the start of a post's text,
strictly enough that ordinary text opening with "A1" or "Q1" (steak sauce, quarterly
results) is not taken for one; the rule is spelled out in docs/moderation.md. Pure and
total: any string in, a tag or None out. Not here: grouping answers under questions,
or anything a page shows.
"""

from __future__ import annotations

import re
import unicodedata

_HEAD_CHARS = 400  # the marker sits at the start: only so much of a long text is normalised and read
# Before the marker: mentions (".@host" is the public-reply habit) and hashtags, each followed by space.
_LEAD = r"(?:\.?[@#][^\s]+\s+)*"
_MARKER = re.compile(
    _LEAD
    + r"(?P<role>[qa])"
    + r"(?:(?P<dot>\.\s?)|\s?)"  # "Q1", "Q 1", "A.1", "A. 1"
    + r"(?P<num>[0-9]{1,2})(?:[a-z](?![a-z0-9]))?"  # up to 99; one sub-question letter ("Q2a") is read as 2
    + r"(?:"
    + r"\s*[:)](?![0-9])"  # "Q1:", "A1)", "Q1 :" but not "A1:30" or "Q1)2"
    + r"|\s*[.\-\u2013\u2014/](?=\s|$)"  # "Q1.", "A1 -", "A1 \u2013", "A1/" then a space
    + r"|(?(dot)(?=\s|$)|(?!))"  # a dotted marker ("A.1") needs no separator, only a space after it
    + r")",
    re.IGNORECASE,
)


def qa_tags(text: str) -> tuple[str, int] | None:
    """("Q", n) for a numbered question, ("A", n) for a numbered answer, None for anything else; never raises."""
    head = unicodedata.normalize("NFKC", text[:_HEAD_CHARS]).lstrip()
    m = _MARKER.match(head)
    if m is None:
        return None
    return m.group("role").upper(), int(m.group("num"))
