"""The Post, the one record every part of chatmixer passes around, and its two events.

Fields are exactly the BRIEF's contract. ``Post.from_dict`` is the only place a Post is
validated from untrusted data; it raises ``ValueError`` with a reason a human can act on.
``Edit`` (new content for a post already published under the same key) and
``Retraction`` (a post deleted at its source) are what parsers emit besides Posts;
``Ignored`` is raised by a parser for a well-formed record that is not a post (a like, a
rate-limit notice), so it is counted by reason, never reported as malformed.
Encoding for Redis and for clients lives in ``codec``, not here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

_TAG = re.compile(r"^[^\s#]{1,100}$")


def normalize_tag(tag: str) -> str:
    """A chat tag as stored: lower case, no leading ``#``, surrounding space removed."""
    return tag.strip().lstrip("#").casefold()


@dataclass(frozen=True, slots=True)
class Author:
    handle: str
    name: str
    avatar: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"handle": self.handle, "name": self.name, "avatar": self.avatar}


@dataclass(frozen=True, slots=True)
class Post:
    """A normalised post. ``id`` is empty until the merge stage gives it a feed id."""

    key: str
    source: str
    chats: tuple[str, ...]
    author: Author
    text: str
    url: str
    created: int
    at: int
    id: str = ""
    lang: str | None = None
    reply_to: str | None = None
    boost_of: str | None = None
    media: tuple[str, ...] = field(default_factory=tuple)

    def with_chats(self, chats: tuple[str, ...]) -> Post:
        return replace(self, chats=chats)

    def to_dict(self) -> dict[str, Any]:
        """The contract's JSON shape; optional fields appear only when known."""
        out: dict[str, Any] = {
            "id": self.id,
            "key": self.key,
            "source": self.source,
            "chats": list(self.chats),
            "author": self.author.to_dict(),
            "text": self.text,
            "url": self.url,
            "created": self.created,
            "at": self.at,
        }
        if self.lang is not None:
            out["lang"] = self.lang
        if self.reply_to is not None:
            out["reply_to"] = self.reply_to
        if self.boost_of is not None:
            out["boost_of"] = self.boost_of
        if self.media:
            out["media"] = list(self.media)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Post:
        """Validate untrusted data into a Post; raises ValueError naming the bad field."""
        if not isinstance(data, dict):
            raise ValueError(f"a post is a JSON object, got {type(data).__name__}")
        author = data.get("author")
        if not isinstance(author, dict):
            raise ValueError("'author' must be an object with 'handle' and 'name'")
        chats_raw = data.get("chats")
        if not isinstance(chats_raw, list) or not all(isinstance(c, str) for c in chats_raw):
            raise ValueError("'chats' must be a list of strings")
        chats = tuple(dict.fromkeys(normalize_tag(c) for c in chats_raw))
        for chat in chats:
            if not _TAG.match(chat):
                raise ValueError(f"bad chat tag {chat!r}")
        media_raw = data.get("media") or []
        if not isinstance(media_raw, list) or not all(isinstance(m, str) for m in media_raw):
            raise ValueError("'media' must be a list of URLs")
        for item in (*media_raw, *chats):
            _check_text(item, "media/chats")
        avatar = author.get("avatar")
        return cls(
            id=_opt_str(data, "id") or "",
            key=_req_str(data, "key"),
            source=_req_str(data, "source"),
            chats=chats,
            author=Author(
                handle=_req_str(author, "handle", "author.handle"),
                name=_opt_str(author, "name", "author.name") or "",
                avatar=avatar if isinstance(avatar, str) and avatar else None,
            ),
            text=_opt_str(data, "text") or "",
            url=_opt_str(data, "url") or "",
            created=_req_int(data, "created"),
            at=_opt_int(data, "at") or _req_int(data, "created"),
            lang=_opt_str(data, "lang"),
            reply_to=_opt_str(data, "reply_to"),
            boost_of=_opt_str(data, "boost_of"),
            media=tuple(media_raw),
        )


def _req_str(data: dict[str, Any], name: str, label: str | None = None) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"'{label or name}' must be a non-empty string")
    return _check_text(value, label or name)


def _opt_str(data: dict[str, Any], name: str, label: str | None = None) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"'{label or name}' must be a string")
    return _check_text(value, label or name)


def _req_int(data: dict[str, Any], name: str) -> int:
    value = _opt_int(data, name)
    if value is None:
        raise ValueError(f"'{name}' must be milliseconds since the epoch")
    return value


_MAX_MS = 1 << 53  # beyond this a time is not a time, and msgpack/JSON readers lose precision


def _opt_int(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < _MAX_MS:
        raise ValueError(f"'{name}' must be milliseconds since the epoch")
    return int(value)


def _check_text(value: str, label: str) -> str:
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError(f"'{label}' holds a lone surrogate, not text") from None
    return value


@dataclass(frozen=True, slots=True)
class Edit:
    """New content for the post with the same ``post.key`` (e.g. an edited toot or tweet)."""

    post: Post


@dataclass(frozen=True, slots=True)
class Retraction:
    """The post with this key was deleted at its source and must leave every screen."""

    key: str
    source: str
    chats: tuple[str, ...] = ()  # where known; empty means every chat


Event = Post | Edit | Retraction


class Ignored(Exception):
    """A well-formed record that is not a post (like, follow, limit notice); ``reason`` is the counter name."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
