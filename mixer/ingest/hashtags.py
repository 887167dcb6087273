"""Hashtags: Twitter-conformant extraction from plain text, the one normalisation of a tag, chat matching.

``extract_hashtags`` follows twitter-text's ``extractHashtags`` (its conformance cases in
``tests/fixtures/hashtags/extract.yml`` are the test): a tag is a run of letters, marks,
decimal digits, ``_`` and a few joiners holding at least one letter or mark, after ``#``
or the full-width hash (U+FF03) that does not follow a letter, digit or ``&``; a tag followed by another hash
or by ``://`` is no tag, nor is a ``#`` inside a URL. The Unicode classes are read with
``unicodedata`` (stdlib ``re`` has no ``\\p{L}``/``\\p{M}``). URL detection is a small
approximation of twitter-text's (no TLD list): enough to drop ``example.com/#tag``.
``normalize_hashtag`` (NFKC + casefold) is how a tag becomes a chat name, and
``ChatMatcher`` picks a post's chats. Platform payloads are parsed in ``sources``, not here.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

_HASH_SIGNS = "#\uff03"
# twitter-text's HASHTAG_SPECIAL_CHARS: joiners and script punctuation that may sit inside a tag.
_SPECIAL = frozenset(
    "_\u200c\u200d\ua67e\u05be\u05f3\u05f4\uff5e\u301c\u309b\u309c\u30a0\u30fb\u3003\u0f0b\u0f0c\u00b7"
)
# Variation selectors are marks (so tag characters), yet an emoji's selector may precede a '#'.
_EMOJI_SELECTORS = "\ufe0e\ufe0f"
# '#' followed by a variation selector or the keycap mark is the keycap emoji #️⃣, not a tag.
_NOT_AFTER_HASH = "\ufe0f\u20e3"
# twitter-text's URL boundary: a URL never starts right after these.
_URL_STICKY = re.compile(r"[A-Za-z0-9@\uff20$#\uff03\u202a-\u202e]")
_URL = re.compile(
    r"(?:[a-z][a-z0-9+.-]*://|www\.)\S+"  # with a scheme (or www.): up to the next space
    r"|(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}(?::\d+)?/\S*",  # bare ASCII domain with a path
    re.IGNORECASE,
)


@lru_cache(maxsize=4096)
def _kind(char: str) -> int:
    """2: letter or mark (a tag needs one), 1: other tag character (digit, joiner), 0: not in a tag."""
    category = unicodedata.category(char)
    if category[0] in "LM":
        return 2
    if category == "Nd" or char in _SPECIAL:
        return 1
    return 0


def hashtag_spans(text: str) -> list[tuple[str, int, int]]:
    """Every hashtag of text as (tag without '#', start of the hash, end), in text order, as twitter-text finds them."""
    if "#" not in text and "\uff03" not in text:
        return []
    found: list[tuple[str, int, int]] = []
    n = len(text)
    last_end = 0  # twitter-text's regex consumes the character before '#', so it cannot lie in a previous match
    pos = 0
    while pos < n:
        hash_at = _next_hash(text, pos)
        if hash_at < 0:
            break
        pos = hash_at + 1
        if hash_at > 0:
            before = text[hash_at - 1]
            if hash_at - 1 < last_end or (before not in _EMOJI_SELECTORS and (before == "&" or _kind(before))):
                continue
        if pos < n and text[pos] in _NOT_AFTER_HASH:
            continue
        end, has_letter = pos, False
        while end < n and (kind := _kind(text[end])):
            has_letter = has_letter or kind == 2
            end += 1
        if not has_letter:
            continue
        last_end = pos = end
        if text.startswith(("#", "\uff03", "://"), end):  # '#a#b' and '#http://' are no tags
            continue
        found.append((text[hash_at + 1 : end], hash_at, end))
    return [tag for tag in found if not _in_url(text, tag[1])]


def _next_hash(text: str, pos: int) -> int:
    hits = [i for i in (text.find(sign, pos) for sign in _HASH_SIGNS) if i >= 0]
    return min(hits) if hits else -1


def _in_url(text: str, hash_at: int) -> bool:
    """Whether the '#' at hash_at lies inside a URL; a URL never holds white space, so only its word is searched."""
    start = hash_at
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    if start == hash_at:
        return False
    end = hash_at
    while end < len(text) and not text[end].isspace():
        end += 1
    for match in _URL.finditer(text, start, end):
        if match.start() > start and _URL_STICKY.match(text, match.start() - 1):
            continue
        if match.start() < hash_at < match.end():
            return True
    return False


def extract_hashtags(text: str) -> list[str]:
    """The hashtags of plain text without '#', in original case and text order, repeats kept (twitter-text rules)."""
    return [tag for tag, _, _ in hashtag_spans(text)]


def normalize_hashtag(tag: str) -> str:
    """A tag as a chat name: NFKC + casefold, space and one leading '#' removed (full-width SMBIZ -> smbiz)."""
    tag = unicodedata.normalize("NFKC", tag.strip()).casefold()
    return tag[1:] if tag.startswith("#") else tag


_MAX_CHAT = 100  # the longest chat tag a Post may carry (models.Post.from_dict)


def _valid_chat(chat: str) -> bool:
    """A name every part can use as a chat tag: 1..100 characters, no white space, no '#'."""
    return 0 < len(chat) <= _MAX_CHAT and "#" not in chat and not any(c.isspace() for c in chat)


class ChatMatcher:
    """Maps a post's hashtags to chats: the configured ones, or every tag when constructed with None.

    With None, a tag that cannot be a chat tag (a rule tag with spaces, over 100 characters) is left out.
    """

    def __init__(self, tags: Iterable[str] | None) -> None:
        self.tags: frozenset[str] | None = None
        if tags is not None:
            self.tags = frozenset(t for t in (normalize_hashtag(tag) for tag in tags) if t)

    @property
    def all_tags(self) -> bool:
        """True when every hashtag counts as a chat."""
        return self.tags is None

    def chats(self, hashtags: Iterable[str], extra: Iterable[str] = ()) -> tuple[str, ...]:
        """The normalised configured chats among hashtags + extra, de-duplicated, in first-seen order."""
        seen: dict[str, None] = {}
        for group in (hashtags, extra):
            for tag in group:
                chat = normalize_hashtag(tag)
                if self.tags is None and not _valid_chat(chat):
                    continue
                if chat and (self.tags is None or chat in self.tags):
                    seen.setdefault(chat, None)
        return tuple(seen)
