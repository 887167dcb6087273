"""Dedupe: one card per real post. Pure logic; the merge stage does the Redis I/O around it.

Given what the feed already holds (a ``Book`` of stored posts by key and of text
fingerprints, loaded from Redis for the batch), ``Deduper.apply`` turns each released
event into feed writes:

- a post already in the feed under its key: nothing, or an ``update`` when it reached
  a new chat (its chats are unioned; the entry names the chats it added in ``joined``,
  as does every update that adds chats);
- a boost/retweet of a post in the feed: not shown; the original's ``boosts`` goes up
  through an ``update``;
- an edit: an ``update`` of the shown post (same feed id), its author too (a Bluesky did
  resolved to a profile: not marked ``edited``, its words did not change); a retraction: a
  ``retract`` of its feed id, and the key is remembered so the post never comes back (not
  as itself, an edit, or a boost/retweet carrying its text: each counted in ``Changes.dropped``);
- the same text from the same author on another network within ``window_ms``: an
  ``update`` adding an ``also_on`` link; the same text from other authors (a flood):
  an ``update`` counting ``similar``;
- anything else: a new post.

Stored posts are the contract dicts the clients got, with ``id`` and the extra fields
``boosts``, ``also_on`` and ``similar`` once they apply. Keys that never became a card
of their own (a boost, a collapsed repeat, a retraction) are stored as stubs, so a
restart of the merge stage does not count them again. Every feed write gets the next
id from ``new_id`` as it is made, so ids grow in write order.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from mixer.merge.qa import qa_tags
from mixer.models import Edit, Event, Post, Retraction

FINGERPRINT_MIN = 24  # shorter texts ("A1: yes!") are too common to collapse
_URL = re.compile(r"https?://\S+|www\.\S+")
_MENTION_TAG = re.compile(r"[@#][\w.@-]+")
_NON_WORD = re.compile(r"[\W_]+")

FeedWrite = tuple[str, str, dict[str, Any]]  # (kind "p" | "u" | "r" | "n" (pin), feed entry id, payload)


# ASCII characters that are not letters or digits, to spaces: what ``_NON_WORD`` does, 2-3x faster on ASCII text
_ASCII_PUNCT = bytes(b for b in range(128) if not chr(b).isalnum())
_ASCII_NON_WORD = bytes.maketrans(_ASCII_PUNCT, b" " * len(_ASCII_PUNCT))


@lru_cache(maxsize=4096)  # a batch asks twice per post (``needs``, then ``apply``): computed once
def fingerprint(text: str) -> str | None:
    """A digest of the words of ``text`` (links, mentions, tags, case, punctuation aside); None when short.

    The same digest as the plain ``_NON_WORD.sub(_MENTION_TAG.sub(_URL.sub(folded)))`` (tests/merge/test_dedupe.py
    checks it against that): each pass skipped when the text cannot match it, the last done by ``bytes.translate``
    on ASCII text. The merge stage's hottest pure function (docs/benchmarks.md "Merge stage")."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    if "http" in folded or "www." in folded:
        folded = _URL.sub(" ", folded)
    if "@" in folded or "#" in folded:
        folded = _MENTION_TAG.sub(" ", folded)
    if folded.isascii():
        words = folded.encode().translate(_ASCII_NON_WORD).decode().split()
    else:
        words = _NON_WORD.sub(" ", folded).split()
    core = " ".join(words)
    if len(core) < FINGERPRINT_MIN:
        return None
    return hashlib.blake2b(core.encode(), digest_size=10).hexdigest()


def author_identity(post: dict[str, Any]) -> str:
    """Who wrote it, comparable across networks: the display name, else the handle's local part, folded."""
    author = post.get("author") or {}
    name = str(author.get("name") or "").strip()
    if not name:
        name = str(author.get("handle") or "").lstrip("@").split("@")[0].split(".")[0]
    return unicodedata.normalize("NFKC", name).casefold()


@dataclass
class Book:
    """What the feed holds, as far as one batch needs it; ``apply`` keeps it current within the batch."""

    posts: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # key -> stored post or stub (None: unknown)
    retracted: set[str] = field(default_factory=set)  # keys retracted, never to be shown again
    fingerprints: dict[str, tuple[str, int]] = field(default_factory=dict)  # fingerprint -> (key, ms first seen)


@dataclass
class Changes:
    """What a batch must write besides the feed entries: index and fingerprint updates, keys seen."""

    posts: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> stored post or stub, new or updated
    fingerprints: dict[str, tuple[str, int]] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)  # every key handled -> ms, for the bounded seen-set
    dropped: Counter[str] = field(default_factory=Counter)  # posts kept off the feed, by reason (retracted, ...)
    pinned: dict[str, Any] | bool | None = False  # the pinned post, None when unpinned, False when unchanged


class Deduper:
    """Turns released events into feed writes; each key is shown at most once, a retracted key never again."""

    def __init__(self, window_ms: int = 10 * 60_000) -> None:
        self.window_ms = window_ms  # how long a text fingerprint collapses repeats

    def needs(self, events: list[Event]) -> tuple[set[str], set[str]]:
        """The post keys and fingerprints the Book must hold before ``apply`` runs on ``events``."""
        keys: set[str] = set()
        prints: set[str] = set()
        for event in events:
            if isinstance(event, Retraction):
                keys.add(event.key)
                continue
            post = event.post if isinstance(event, Edit) else event
            keys.add(post.key)
            if post.boost_of:
                keys.add(post.boost_of)
            if (fp := fingerprint(post.text)) is not None:
                prints.add(fp)
        return keys, prints

    def apply(
        self, event: Event, book: Book, changes: Changes, new_id: Callable[[], str], now_ms: int
    ) -> list[FeedWrite]:
        """Feed writes for one event, in order; ``book`` and ``changes`` are updated to match."""
        if isinstance(event, Retraction):
            return self._retract(event.key, book, changes, new_id, now_ms)
        if isinstance(event, Edit):
            return self._edit(event.post, book, changes, new_id, now_ms)
        return self._post(event, book, changes, new_id, now_ms)

    def _remember(self, key: str, stored: dict[str, Any], book: Book, changes: Changes, now_ms: int) -> None:
        book.posts[key] = stored
        changes.posts[key] = stored
        changes.seen[key] = now_ms

    def _retract(
        self, key: str, book: Book, changes: Changes, new_id: Callable[[], str], now_ms: int
    ) -> list[FeedWrite]:
        if key in book.retracted:
            return []
        book.retracted.add(key)
        stored = book.posts.get(key)
        self._remember(key, {**(stored or {}), "stub": True, "retracted": True}, book, changes, now_ms)
        if stored is None or stored.get("stub") or "id" not in stored:
            return []
        return [("r", new_id(), {"ids": [stored["id"]], "keys": [key]})]

    def _edit(
        self, post: Post, book: Book, changes: Changes, new_id: Callable[[], str], now_ms: int
    ) -> list[FeedWrite]:
        if post.key in book.retracted:
            changes.dropped["edit_of_retracted"] += 1
            return []
        stored = book.posts.get(post.key)
        if stored is None:
            return self._post(post, book, changes, new_id, now_ms)  # the original never reached us
        if stored.get("stub"):
            return []  # a boost or a collapsed repeat: it has no card to edit
        updated = {**_edited(post, stored), "chats": _union(stored["chats"], post.chats)}
        self._remember(post.key, updated, book, changes, now_ms)
        return [_update(new_id(), updated, stored)]

    def _post(
        self, post: Post, book: Book, changes: Changes, new_id: Callable[[], str], now_ms: int
    ) -> list[FeedWrite]:
        if post.key in book.retracted:
            changes.dropped["retracted"] += 1  # deleted at its source: it stays gone, however it comes back
            return []
        if post.boost_of and post.boost_of in book.retracted:
            # A boost/retweet carries its original's text ("RT @..."): showing it would bring the deleted post back.
            changes.dropped["boost_of_retracted"] += 1
            book.retracted.add(post.key)
            self._remember(
                post.key, {"stub": True, "boost_of": post.boost_of, "retracted": True}, book, changes, now_ms
            )
            return []
        stored = book.posts.get(post.key)
        if stored is not None:  # a twin from another chat or follower
            if stored.get("stub"):
                return []
            chats = _union(stored["chats"], post.chats)
            if chats == stored["chats"]:
                return []
            updated = {**stored, "chats": chats}
            self._remember(post.key, updated, book, changes, now_ms)
            return [_update(new_id(), updated, stored)]
        original = book.posts.get(post.boost_of) if post.boost_of else None
        if original is not None and post.boost_of and not original.get("stub"):
            self._remember(post.key, {"stub": True, "boost_of": post.boost_of}, book, changes, now_ms)
            updated = {**original, "boosts": int(original.get("boosts", 0)) + 1}
            self._remember(post.boost_of, updated, book, changes, now_ms)
            return [("u", new_id(), updated)]
        item = post.to_dict()
        if (qa := qa_tags(post.text)) is not None:
            item["qa"] = {"role": qa[0], "n": qa[1]}  # Twitter-chat Q1/A1 numbering, per chat of the post
        fp = fingerprint(post.text)
        if fp is not None and (seen := book.fingerprints.get(fp)) and now_ms - seen[1] <= self.window_ms:
            first = book.posts.get(seen[0])
            if first is not None and not first.get("stub"):
                return self._collapse(post, item, first, seen[0], book, changes, new_id(), now_ms)
        item["id"] = new_id()
        self._remember(post.key, item, book, changes, now_ms)
        if fp is not None:
            book.fingerprints[fp] = changes.fingerprints[fp] = (post.key, now_ms)
        return [("p", item["id"], item)]

    def _collapse(
        self,
        post: Post,
        item: dict[str, Any],
        first: dict[str, Any],
        first_key: str,
        book: Book,
        changes: Changes,
        entry_id: str,
        now_ms: int,
    ) -> list[FeedWrite]:
        """Same text again: another network of the same author (also_on), or a flood (similar)."""
        self._remember(post.key, {"stub": True, "collapsed_into": first_key}, book, changes, now_ms)
        chats = _union(first["chats"], post.chats)
        if author_identity(item) == author_identity(first) and post.source != first.get("source"):
            also = [*first.get("also_on", []), {"source": post.source, "url": post.url}]
            updated = {**first, "chats": chats, "also_on": also}
        else:
            updated = {**first, "chats": chats, "similar": int(first.get("similar", 0)) + 1}
        self._remember(first_key, updated, book, changes, now_ms)
        return [_update(entry_id, updated, first)]


# What makes an edit show as edited; a new author alone does not.
_WORDS = ("text", "url", "media", "attachments", "lang", "quote_of", "quote_url")
_EDITABLE = frozenset(("author", "qa", *_WORDS))  # what an edit replaces: absent from the edit, absent after it


def _edited(post: Post, stored: dict[str, Any]) -> dict[str, Any]:
    """``stored`` as the edit ``post`` leaves it: its author (e.g. a resolved profile), words and Q/A number are
    the edit's, and an optional one the edit lacks (a removed quote, no longer a Q/A post) is gone, never shown as
    null; ``edited`` is set only when its words changed. An author with neither name nor avatar (a bare did, an X
    id) never replaces one that has them: an edit from a payload without the profile must not undo a resolved one."""
    data = post.to_dict()
    updated = {k: v for k, v in stored.items() if k not in _EDITABLE} | {k: data[k] for k in _EDITABLE if k in data}
    if (qa := qa_tags(post.text)) is not None:
        updated["qa"] = {"role": qa[0], "n": qa[1]}
    if not _known_author(data["author"]) and _known_author(stored.get("author")):
        updated["author"] = stored["author"]
    if any(data.get(k) != stored.get(k) for k in _WORDS):
        updated["edited"] = post.at
    return updated


def _known_author(author: Any) -> bool:
    return isinstance(author, dict) and bool(author.get("name") or author.get("avatar"))


def _update(entry_id: str, updated: dict[str, Any], before: dict[str, Any]) -> FeedWrite:
    """The feed entry of an update; one that adds chats says which in ``joined``, so a client filtered on a chat
    the post just joined gets it as a new post (``mixer.fanout.messages.frames_for``). Only the entry carries it:
    the index keeps the post as shown. A hidden post has no card to bring (unhidden, it comes back as a new post)."""
    joined = [chat for chat in updated["chats"] if chat not in before["chats"]]
    return ("u", entry_id, {**updated, "joined": joined} if joined and not updated.get("hidden") else updated)


def _union(chats: list[str], more: tuple[str, ...]) -> list[str]:
    return [*chats, *(c for c in more if c not in chats)]
