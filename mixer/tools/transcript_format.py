"""A transcript's content and its formats: ``Scope``, question-and-answer threads, Markdown, CSV and JSON.

All pure, on posts as the feed history gives them (``Post``, docs/api.md): ``Scope`` is the chat
and time range and the zone Markdown shows times in; ``group_qa`` puts each chat's numbered
answers under their question; ``to_markdown``, ``to_csv``, ``to_json`` (``RENDER`` by format name;
``render_chunks`` the same in pieces) write the text. Network text is untrusted: Markdown escapes
whatever could make markup, HTML or a link, CSV defuses cells a spreadsheet would run as formulas.
Not here: reading the posts from Redis and the `mixer transcript` command (``transcript``), how feed
entries become posts.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any
from urllib.parse import quote, urlsplit

Post = dict[str, Any]  # a post as the feed history gives it (docs/api.md)
FORMATS = ("md", "csv", "json")
SHORT_RANGE_MS = 10 * 60_000  # a range shorter than this is shown to the second: "20:00 to 20:00" says nothing
CSV_COLUMNS = ("id", "created", "chats", "handle", "name", "text", "url", "qa_role", "qa_n", "boosts")


@dataclass(frozen=True, slots=True)
class Scope:
    """What a transcript covers, and the zone its Markdown shows times in (CSV and JSON are UTC)."""

    event_name: str = "#chatmixer night"
    event_hashtag: str = "chatmixer"
    chat: str | None = None  # one chat's session; None: the whole night
    start: int | None = None  # ms since the epoch, inclusive; None: from the first post
    end: int | None = None  # ms since the epoch, exclusive; None: through the last post
    tz: tzinfo = UTC

    def covers(self, post: Post) -> bool:
        """True when the post is in the chat (any chat for the whole night) and created in [start, end)."""
        created = _created(post)
        if (self.start is not None and created < self.start) or (self.end is not None and created >= self.end):
            return False
        return self.chat is None or self.chat in post.get("chats", ())


@dataclass(slots=True)
class Thread:
    """Question ``n`` of one chat and its answers in time order; ``question`` is None if only answers are in scope."""

    chat: str
    n: int
    question: Post | None
    answers: list[Post] = field(default_factory=list)

    @property
    def order(self) -> tuple[int, tuple[int, int], str]:
        first = self.question if self.question is not None else self.answers[0]
        return (*_order(first), self.chat)


def in_order(posts: Iterable[Post], scope: Scope) -> list[Post]:
    """The posts ``scope`` covers, by creation time (feed id breaks ties)."""
    return sorted((p for p in posts if scope.covers(p)), key=_order)


def group_qa(posts: Iterable[Post], chat: str | None = None) -> tuple[list[Thread], list[Post]]:
    """Per chat, each question with the answers of its number, and the posts that are neither; all in time order.

    The first question numbered n in a chat opens that chat's thread n (a later one with the same
    number stays in the conversation). An answer joins thread n of each of its chats that has one,
    else opens a question-less thread in its first chat. With ``chat``, only that chat's threads.
    """
    ordered = sorted(posts, key=_order)
    threads: dict[tuple[str, int], Thread] = {}
    grouped: set[int] = set()
    for i, post in enumerate(ordered):
        qa = _qa(post)
        if qa is not None and qa[0] == "Q":
            for tag in _chats(post, chat):
                if (tag, qa[1]) not in threads:
                    threads[(tag, qa[1])] = Thread(tag, qa[1], post)
                    grouped.add(i)
    for i, post in enumerate(ordered):
        qa = _qa(post)
        tags = _chats(post, chat)
        if qa is None or qa[0] != "A" or not tags:
            continue
        for tag in [t for t in tags if (t, qa[1]) in threads] or tags[:1]:
            threads.setdefault((tag, qa[1]), Thread(tag, qa[1], None)).answers.append(post)
        grouped.add(i)
    rest = [post for i, post in enumerate(ordered) if i not in grouped]
    return sorted(threads.values(), key=lambda t: t.order), rest


# Every character that can start markup in the middle of a CommonMark/GFM line: emphasis, code,
# links and images, raw HTML and autolinks, entities, strikethrough, tables, math, headings.
# Lines never start with post text, so line-start markers (-, +, 1., >, =) need no escape.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~&$])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Kept as is in a link target; everything else (spaces, parentheses, brackets, <>, backslash) is percent-encoded.
_URL_SAFE = "/:?#@!$&'*+,;=%~-._"


def md_escape(text: str) -> str:
    """``text`` as Markdown that renders as exactly that text on one line: no markup, HTML or link can form."""
    return _MD_SPECIAL.sub(r"\\\1", _CONTROL.sub("", " ".join(str(text).split())))


def md_link(label: str, url: Any) -> str:
    """A Markdown link to an http(s) URL (percent-encoded so it cannot break out), or "" for any other URL."""
    if not isinstance(url, str):
        return ""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return ""
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return ""
    return f"[{md_escape(label)}]({quote(url.strip(), safe=_URL_SAFE)})"


def to_markdown(posts: Iterable[Post], scope: Scope) -> str:
    """A readable transcript: title and range, each question with its answers, then the rest in time order."""
    ordered = in_order(posts, scope)
    threads, rest = group_qa(ordered, scope.chat)
    local = [_local(_created(p), scope.tz) for p in ordered]
    when = "%Y-%m-%d %H:%M" if len({t.date() for t in local}) > 1 else "%H:%M"
    if len({t.utcoffset() for t in local}) > 1:  # across a DST change 01:30 comes twice: say which
        when += " %Z"
    where = f"#{md_escape(scope.chat)}" if scope.chat else "the whole night"
    lines = [f"# {md_escape(scope.event_name)}: {where}", ""]
    start, end = _range(ordered, scope)
    counts = f"{len(ordered)} post{'s' * (len(ordered) != 1)}"
    if threads:
        counts += f", {len(threads)} question{'s' * (len(threads) != 1)}"
    span = "" if start is None or end is None else f"{md_escape(_span(start, end, scope.tz))}, "  # no posts, no range
    lines += [f"*{span}{counts}*", ""]
    if threads:
        lines += ["## Questions and answers", ""]
    for thread in threads:
        lines += _md_thread(thread, scope.tz, when)
    if rest:
        lines += ["## Conversation", "", *(_md_line(post, scope.tz, when) for post in rest)]
    elif not ordered:
        lines.append("*No posts in this range.*")
    return "\n".join(lines).rstrip("\n") + "\n"


def _md_thread(thread: Thread, tz: tzinfo, when: str) -> list[str]:
    head = f"### Q{thread.n} (#{md_escape(thread.chat)})"
    if thread.question is None:
        lines = [head, "", "*The question is not in this transcript.*", ""]
    else:
        question = thread.question
        lines = [f"{head}: {md_escape(_strip_marker(str(question.get('text', '')), thread.n))}", ""]
        lines += [_md_line(question, tz, when, asked=True), ""]
    lines += [_md_line(answer, tz, when) for answer in thread.answers] or ["*No answers in this transcript.*"]
    return [*lines, ""]


def _md_line(post: Post, tz: tzinfo, when: str, asked: bool = False) -> str:
    """``- **HH:MM** @handle (Name) [#chat #chat2]: text ([post](url), ...)``, every part escaped; or
    ``Asked at **HH:MM** by @handle ...`` under a question's heading, which already holds the text. The time
    is in strftime format ``when`` (with the date, or the zone's abbreviation, where the transcript needs them)."""
    author = post.get("author") or {}
    who = f"@{md_escape(author.get('handle', ''))}"
    if author.get("name"):
        who += f" ({md_escape(author['name'])})"
    tags = " ".join(f"#{md_escape(c)}" for c in post.get("chats", ()))
    at = _local(_created(post), tz).strftime(when)
    links = [md_link("post", post.get("url"))]
    also_on = post.get("also_on")
    also_on = also_on if isinstance(also_on, list) else []
    links += [md_link(str(a.get("source", "also")), a.get("url")) for a in also_on if isinstance(a, dict)]
    notes = [link for link in links if link]
    if post.get("edited"):
        notes.append("edited")
    if int(post.get("boosts") or 0):
        boosts = int(post["boosts"])
        notes.append(f"{boosts} boost{'s' * (boosts != 1)}")
    tail = f" ({', '.join(notes)})" if notes else ""
    if asked:
        return f"Asked at **{at}** by {who} [{tags}]{tail}"
    return f"- **{at}** {who} [{tags}]: {md_escape(str(post.get('text', '')))}{tail}"


def _strip_marker(text: str, n: int) -> str:
    """The question's text without its leading "Qn:" (the heading already says it)."""
    return (
        re.sub(rf"^\s*q\s?\.?\s?0*{n}(?![0-9])[a-z]?\s*[:.)\-\u2013\u2014/]?\s*", "", text, count=1, flags=re.I) or text
    )


# A spreadsheet runs a cell starting with one of these as a formula (=HYPERLINK, =cmd|..., +, -, @),
# also after leading spaces and in their full-width forms (which some locales convert).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def defuse(cell: str) -> str:
    """``cell`` as a spreadsheet shows it as text: one starting with = + - @ (after spaces) gets a ' in front."""
    return "'" + cell if cell.lstrip(" ").startswith(_FORMULA_START) else cell


def to_csv(posts: Iterable[Post], scope: Scope) -> str:
    """One row per post in time order (``CSV_COLUMNS``, times ISO UTC), every cell defused; RFC 4180 line ends."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for post in in_order(posts, scope):
        author = post.get("author") or {}
        qa = _qa(post)
        row = [
            post.get("id", ""),
            iso_utc(_created(post)),
            " ".join(post.get("chats", ())),
            author.get("handle", ""),
            author.get("name", ""),
            post.get("text", ""),
            post.get("url", ""),
            qa[0] if qa else "",
            qa[1] if qa else "",
            int(post.get("boosts") or 0),
        ]
        writer.writerow([defuse(str(cell)) for cell in row])
    return out.getvalue()


def to_json(posts: Iterable[Post], scope: Scope) -> str:
    """``{event, chat, from, to, posts, questions}``: posts as the feed gives them, in time order; times ISO UTC."""
    return "".join(json_chunks(posts, scope))


def json_chunks(posts: Iterable[Post], scope: Scope) -> Iterator[str]:
    """``to_json``'s text in pieces as it is encoded, so a writer never holds a whole night's JSON (several
    times the posts' size) at once."""
    ordered = in_order(posts, scope)
    threads, _ = group_qa(ordered, scope.chat)
    start, end = _range(ordered, scope)
    doc = {
        "event": {"name": scope.event_name, "hashtag": scope.event_hashtag},
        "chat": scope.chat,
        "from": None if start is None else iso_utc(start),
        "to": None if end is None else iso_utc(end),
        "posts": ordered,
        "questions": [{"chat": t.chat, "n": t.n, "question": t.question, "answers": t.answers} for t in threads],
    }
    yield from json.JSONEncoder(ensure_ascii=False, indent=2).iterencode(doc)
    yield "\n"


RENDER: dict[str, Callable[[Iterable[Post], Scope], str]] = {"md": to_markdown, "csv": to_csv, "json": to_json}


def render_chunks(fmt: str, posts: Iterable[Post], scope: Scope) -> Iterator[str]:
    """The transcript in format ``fmt`` as pieces of text: JSON as it is encoded, the others whole."""
    return json_chunks(posts, scope) if fmt == "json" else iter((RENDER[fmt](posts, scope),))


def iso_utc(ms: int) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC: ``2024-05-01T20:00:00.000Z``."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _created(post: Post) -> int:
    value = post.get("created")
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _order(post: Post) -> tuple[int, tuple[int, int]]:
    ms, _, seq = str(post.get("id", "")).partition("-")
    return _created(post), (int(ms) if ms.isdigit() else 0, int(seq) if seq.isdigit() else 0)


def _qa(post: Post) -> tuple[str, int] | None:
    qa = post.get("qa")
    if not isinstance(qa, dict) or qa.get("role") not in ("Q", "A"):
        return None
    n = qa.get("n")
    return (qa["role"], n) if isinstance(n, int) and not isinstance(n, bool) else None


def _chats(post: Post, chat: str | None) -> list[str]:
    chats = [c for c in post.get("chats", ()) if isinstance(c, str)]
    return chats if chat is None else [chat] if chat in chats else []


def _local(ms: int, tz: tzinfo) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz)


def _range(ordered: list[Post], scope: Scope) -> tuple[int | None, int | None]:
    """The asked-for bounds, an open one taken from the first or last post (None without posts)."""
    start = scope.start if scope.start is not None else (_created(ordered[0]) if ordered else None)
    end = scope.end if scope.end is not None else (_created(ordered[-1]) if ordered else None)
    return start, end


def clock(start: int, end: int) -> str:
    """The strftime format of the time of day for a range from ``start`` to ``end`` (ms): to the second when it is
    shorter than ``SHORT_RANGE_MS`` and an end falls within a minute (a 30-second range is not "20:00 to 20:00"),
    else to the minute."""
    within = start % 60_000 or end % 60_000
    return "%H:%M:%S" if end - start < SHORT_RANGE_MS and within else "%H:%M"


def _span(start: int, end: int, tz: tzinfo) -> str:
    first, last = _local(start, tz), _local(end, tz)
    zone = " %Z" if first.utcoffset() != last.utcoffset() else ""  # 01:20 EDT-01:30 EST is 70 minutes
    time = clock(start, end) + zone
    if start == end:  # one post, or a range of one moment
        return f"{first.strftime(f'%Y-%m-%d {time}')} {tz}"
    tail = last.strftime(time if first.date() == last.date() else f"%Y-%m-%d {time}")
    return f"{first.strftime(f'%Y-%m-%d {time}')}\u2013{tail} {tz}"
