"""The figures of a night report (`mixer report`), computed from a list of posts: pure, no Redis, no drawing.

A report reads posts as the feed history holds them (``Post``, docs/api.md), each as it stands
now; a post a moderator hid carries ``removed = "hidden"``, one retracted (deleted at its source,
or an edit the rules blocked) ``removed = "retracted"``: those are counted per chat and never
enter any other figure. ``last_event`` finds the default range (the posts after the feed's last
long silence), ``figures`` computes everything a report shows and is exactly the JSON document
(docs/report.md): the timeline with its busiest bins, the mixing matrix, replies across chats,
and per chat posts, authors, top authors, Q/A counts, boosts, removals and newcomers. Not here:
reading the feed (``report``), the HTML and its charts (``report_html``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import combinations, pairwise
from typing import Any

from mixer.tools.transcript_format import group_qa

Post = dict[str, Any]

GAP_MS = 3 * 3_600_000  # a silence longer than this ends one event: the default range starts after the last one
BUSIEST = 3  # bins marked as the busiest
TOP_AUTHORS = 5
MAX_BINS = 360  # the timeline's bin grows past a minute only when a range would need more than this many
_BIN_STEPS = (60, 300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400)  # seconds


@dataclass(frozen=True, slots=True)
class Span:
    """A report's range in ms since the epoch: posts created at or after ``start`` and before ``end``."""

    start: int
    end: int

    def covers(self, post: Post) -> bool:
        return self.start <= created(post) < self.end


def created(post: Post) -> int:
    """The post's creation time in ms (0 when missing or not a number)."""
    value = post.get("created")
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def chats_of(post: Post) -> list[str]:
    """The post's chat tags, each once, in its order."""
    chats = post.get("chats")
    return list(dict.fromkeys(c for c in chats if isinstance(c, str))) if isinstance(chats, list | tuple) else []


def author_key(post: Post) -> str:
    """Who posted, as ``source:handle`` folded: one person on two networks counts twice."""
    author = post.get("author")
    handle = str(author.get("handle") or "") if isinstance(author, dict) else ""
    return f"{post.get('source', '')}:{handle.lstrip('@').casefold()}"


def last_event(posts: Iterable[Post], gap_ms: int = GAP_MS) -> Span | None:
    """The span of the posts after the last silence longer than ``gap_ms`` (to just after the newest); None if none."""
    times = sorted(created(p) for p in posts)
    if not times:
        return None
    start = times[0]
    for before, after in pairwise(times):
        if after - before > gap_ms:
            start = after
    return Span(start, times[-1] + 1)


def bin_seconds(span: Span) -> int:
    """The timeline's bin: a minute, or the first of 5 min, 15 min, 1 h, 6 h, 1 day, 1 week giving <= MAX_BINS."""
    seconds = max(1, (span.end - span.start) // 1000)
    return next((step for step in _BIN_STEPS if seconds / step <= MAX_BINS), _BIN_STEPS[-1])


def timeline(posts: Sequence[Post], chats: Sequence[str], span: Span) -> dict[str, Any]:
    """Posts per bin per chat (a post in two chats counts in both) from the bin holding ``span.start``; the
    busiest bins (most posts, each post once; earlier first on a tie) with their chat counts."""
    step = bin_seconds(span) * 1000
    first = span.start // step * step
    n = max(1, (span.end - 1 - first) // step + 1)
    counts = {chat: [0] * n for chat in chats}
    totals = [0] * n
    for post in posts:
        i = (created(post) - first) // step
        if not 0 <= i < n:
            continue
        totals[i] += 1
        for chat in chats_of(post):
            if chat in counts:
                counts[chat][i] += 1
    ranked = sorted((i for i in range(n) if totals[i]), key=lambda i: (-totals[i], i))[:BUSIEST]
    return {
        "bin_seconds": step // 1000,
        "start": iso(first),
        "bins": n,
        "chats": counts,
        "busiest": [
            {"at": iso(first + i * step), "posts": totals[i], "chats": {c: counts[c][i] for c in chats if counts[c][i]}}
            for i in ranked
        ],
    }


def mixing(posts: Iterable[Post], chats: Sequence[str]) -> dict[str, Any]:
    """The mixing matrix: ``counts[i][j]`` (i != j) posts tagged with both chats i and j, ``counts[i][i]`` posts
    tagged with chat i alone; and ``pairs``, every pair with posts, most first."""
    where = {chat: i for i, chat in enumerate(chats)}
    counts = [[0] * len(chats) for _ in chats]
    for post in posts:
        tags = [c for c in chats_of(post) if c in where]
        if len(tags) == 1:
            counts[where[tags[0]]][where[tags[0]]] += 1
        for a, b in combinations(tags, 2):
            counts[where[a]][where[b]] += 1
            counts[where[b]][where[a]] += 1
    pairs = [
        {"chats": [chats[i], chats[j]], "posts": counts[i][j]}
        for i, j in combinations(range(len(chats)), 2)
        if counts[i][j]
    ]
    return {"chats": list(chats), "counts": counts, "pairs": sorted(pairs, key=lambda p: -p["posts"])}


def replies(posts: Iterable[Post], history: Iterable[Post]) -> list[dict[str, Any]]:
    """Which chats answered which: replies in ``posts`` to a post found in ``history`` (by key), counted from each
    chat of the reply to each chat of the post replied to, where they differ; most first."""
    parents = {str(p.get("key")): chats_of(p) for p in history if not p.get("removed")}
    counted: Counter[tuple[str, str]] = Counter()
    for post in posts:
        for to in parents.get(str(post.get("reply_to")), []) if post.get("reply_to") else []:
            counted.update((by, to) for by in chats_of(post) if by != to)
    return [{"from": a, "to": b, "posts": n} for (a, b), n in sorted(counted.items(), key=lambda kv: (-kv[1], kv[0]))]


def order_chats(posts: Iterable[Post], configured: Sequence[str]) -> list[str]:
    """The chats the posts are in: configured ones in config order, then the others by name."""
    seen = {c for p in posts for c in chats_of(p)}
    return [c for c in configured if c in seen] + sorted(seen - set(configured))


def by_chat(posts: Iterable[Post]) -> dict[str, list[Post]]:
    """Each chat's posts, in the order given: one pass over the posts, whatever the number of chats."""
    grouped: dict[str, list[Post]] = {}
    for post in posts:
        for chat in chats_of(post):
            grouped.setdefault(chat, []).append(post)
    return grouped


def per_chat(mine: Sequence[Post], removed: Sequence[Post], chat: str, newcomers: set[str]) -> dict[str, Any]:
    """One chat's figures from its shown posts ``mine`` and its ``removed`` ones: posts, authors, top authors,
    questions with their answer counts, boosts, removals, and the newcomers (of ``newcomers``, the authors new
    tonight) who posted in it."""
    by_author = Counter(author_key(p) for p in mine)
    shown: dict[str, Post] = {author_key(p): p for p in reversed(mine)}  # each author as of their first post
    threads, _ = group_qa(mine, chat)
    questions = sorted(threads, key=lambda t: t.n)
    gone = Counter(str(p.get("removed")) for p in removed)
    fresh = sorted((a for a in by_author if a in newcomers), key=lambda a: (-by_author[a], a))
    return {
        "chat": chat,
        "posts": len(mine),
        "authors": len(by_author),
        "top_authors": [_who(shown[a], n) for a, n in sorted(by_author.items(), key=lambda kv: (-kv[1], kv[0]))][
            :TOP_AUTHORS
        ],
        "questions": [{"n": t.n, "asked": t.question is not None, "answers": len(t.answers)} for t in questions],
        "answers": sum(len(t.answers) for t in questions),
        "boosts": sum(_int(p.get("boosts")) for p in mine),
        "removed": {"hidden": gone["hidden"], "retracted": gone["retracted"]},
        "newcomers": [_who(shown[a], by_author[a]) for a in fresh],
    }


def figures(history: Sequence[Post], span: Span, configured: Sequence[str] = ()) -> dict[str, Any]:
    """Every figure of the report on the posts of ``history`` in ``span`` (the JSON document, docs/report.md).

    ``history`` is the whole feed as read (shown and removed posts); posts outside ``span`` serve only to
    tell newcomers (authors with no post before ``span.start``) and the chats replied to.
    """
    tonight = [p for p in history if span.covers(p)]
    shown = [p for p in tonight if not p.get("removed")]
    removed = [p for p in tonight if p.get("removed")]
    chats = order_chats(tonight, configured)
    earlier = {author_key(p) for p in history if created(p) < span.start}
    newcomers = {author_key(p) for p in shown} - earlier
    shown_in, removed_in = by_chat(shown), by_chat(removed)  # not a pass over every post per chat: 50 chats
    return {
        "from": iso(span.start),
        "to": iso(-(-span.end // 1000) * 1000),  # exclusive: rounded up, so the newest post stays before it
        "posts": len(shown),
        "authors": len({author_key(p) for p in shown}),
        "newcomers": len(newcomers),
        "removed": {kind: sum(p["removed"] == kind for p in removed) for kind in ("hidden", "retracted")},
        "chats": chats,
        "cross_posts": sum(len(set(chats_of(p))) > 1 for p in shown),
        "timeline": timeline(shown, chats, span),
        "matrix": mixing(shown, chats),
        "replies": replies(shown, history),
        "per_chat": [per_chat(shown_in.get(chat, []), removed_in.get(chat, []), chat, newcomers) for chat in chats],
    }


def iso(ms: int) -> str:
    """Ms since the epoch as ISO 8601 UTC to the second: ``2024-05-01T20:00:00Z``."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _who(post: Post, posts: int) -> dict[str, Any]:
    raw = post.get("author")
    author: dict[str, Any] = raw if isinstance(raw, dict) else {}
    return {
        "source": str(post.get("source", "")),
        "handle": str(author.get("handle") or ""),
        "name": str(author.get("name") or ""),
        "posts": posts,
    }


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0
