"""The Post, the one record every part of chatmixer passes around, and its two events.

Fields are exactly the BRIEF's contract. ``Post.from_dict`` is the only place a Post is
validated from untrusted data; it raises ``ValueError`` with a reason a human can act on.
``Edit`` (new content for a post already published under the same key) and
``Retraction`` (a post deleted at its source) are what parsers emit besides Posts;
``Ignored`` is raised by a parser for a well-formed record that is not a post (a like, a
rate-limit notice), so it is counted by reason, never reported as malformed. ``from_dict``
also caps sizes (``LIMITS``: platform limits with a margin), so no recording or webhook can
put a 50 MB post on every screen: a long text, name or handle is cut (ending in "…"), a
URL, media item, chat or reference too long is dropped (a cut link is a wrong link), each
counted in ``trimmed`` and logged with the post's key; a key too long refuses the post.
``Attachment`` is one media item with what the platform says of it (kind, preview, alt text,
size); a Post's ``media`` is always its attachments' URLs when it has attachments, so readers
of the older ``media`` field see the same items. An attachment whose URL is not http(s) is
dropped (counted, logged) and its alt text is cut like ``text``.
Encoding for Redis and for clients lives in ``codec``, not here.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, TypeVar, Unpack, cast

import msgspec

log = logging.getLogger(__name__)

TAG = re.compile(r"^[^\s#]{1,100}$")  # a chat tag as stored (after normalize_tag)
HTTP_URL_PATTERN = r"https?://[^\s/?#]+\S*"  # what a screen may link or load: http(s), nothing else (any case)
_HTTP_URL = re.compile(f"^{HTTP_URL_PATTERN}$", re.IGNORECASE)
_T = TypeVar("_T")
ELLIPSIS = "\u2026"  # ends a cut text, so a reader sees that it was cut


@dataclass(frozen=True, slots=True)
class Limits:
    """Largest sizes a Post may carry, in characters (lists: items); platform limits plus a margin."""

    text: int = 10_000  # Mastodon 500 by default (some instances 5,000+), Bluesky 300, X 280 (long posts 25,000)
    name: int = 200  # display names: X 50, Mastodon 30, Bluesky 64
    handle: int = 300  # Mastodon user@domain: 30 + 1 + 253
    url: int = 2_000  # any URL: the post, the avatar, each media item, a quoted post
    key: int = 2_200  # a key is a URL or an AT URI with a prefix; longer ones refuse the post
    media: int = 16  # media items (the platforms allow 4)
    attachments: int = 10  # attachments (Mastodon, Bluesky and X allow 4; some Mastodon instances more)
    alt: int = 1_500  # an attachment's alt text: Mastodon's limit (X 1,000; Bluesky's is longer, rarely used)
    pixels: int = 100_000  # an attachment's width or height; beyond this a size is not a size
    chats: int = 32  # chats a post is in
    lang: int = 35  # a BCP 47 language tag
    source: int = 40  # a source name (x, mastodon, bluesky, webhook, ...)
    id: int = 64  # a feed id, "<ms>-<seq>"


LIMITS = Limits()
trimmed: Counter[str] = Counter()  # this process's cuts and drops by ``<field>_cut`` / ``<field>_dropped``


def normalize_tag(tag: str) -> str:
    """A chat tag as stored: NFKC, case-folded, no leading ``#``, surrounding space removed: what a post's hashtag
    becomes (``ingest.hashtags.normalize_hashtag``), so a configured full-width SMBIZ is the chat ``smbiz``."""
    if tag.isascii():
        return tag.strip().lstrip("#").lower()
    return unicodedata.normalize("NFKC", tag.strip()).casefold().lstrip("#")


# The records are frozen msgspec Structs, not dataclasses: the merge stage builds and re-chats a Post per
# chat-stream entry, and a Struct is built in a tenth of a dataclass's time and replaced (``Post.replace``;
# ``dataclasses.replace`` refuses Structs) in a twentieth. gc=False is safe: their fields are strings, ints, None
# and tuples of those and of these Structs, all immutable, so no reference cycle can pass through one, and the
# cycle collector need not track (nor scan) them.


class Author(msgspec.Struct, frozen=True, gc=False):
    handle: str
    name: str
    avatar: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"handle": self.handle, "name": self.name, "avatar": self.avatar}


AttachmentKind = Literal["image", "video", "gifv", "audio", "unknown"]
ATTACHMENT_KINDS: tuple[AttachmentKind, ...] = ("image", "video", "gifv", "audio", "unknown")


class Attachment(msgspec.Struct, frozen=True, gc=False):
    """One media item of a post: ``url`` the item, ``preview_url`` a still image to show for it (both http(s));
    ``alt`` its description as its author wrote it; ``width``/``height`` in pixels where the platform says."""

    kind: AttachmentKind
    url: str
    preview_url: str | None = None
    alt: str | None = None
    width: int | None = None
    height: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The contract's shape: ``kind`` and ``url`` always, ``preview``, ``alt``, ``width``, ``height`` when known."""
        out: dict[str, Any] = {"kind": self.kind, "url": self.url}
        if self.preview_url is not None:
            out["preview"] = self.preview_url
        if self.alt is not None:
            out["alt"] = self.alt
        if self.width is not None:
            out["width"] = self.width
        if self.height is not None:
            out["height"] = self.height
        return out


def attachment_kind(value: Any) -> AttachmentKind:
    """``value`` when it is one of ``ATTACHMENT_KINDS``, else ``"unknown"``."""
    return cast(AttachmentKind, value) if value in ATTACHMENT_KINDS else "unknown"


def pixels(value: Any) -> int | None:
    """A width or height as a parser finds it: a whole number of pixels within ``LIMITS.pixels``, else None."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= LIMITS.pixels:
        return None
    return value


def http_url(value: Any) -> str | None:
    """``value`` when it is an http(s) URL a screen may load, else None."""
    return value if isinstance(value, str) and _HTTP_URL.match(value) else None


class PostChanges(TypedDict, total=False):
    """What ``Post.replace`` may change: any of the Post's fields, by name and type (so mypy checks each call).
    tests/test_models.py holds its names and types to the Post's fields."""

    key: str
    source: str
    chats: tuple[str, ...]
    author: Author
    text: str
    url: str
    created: int
    at: int
    id: str
    lang: str | None
    reply_to: str | None
    boost_of: str | None
    media: tuple[str, ...]
    quote_of: str | None
    quote_url: str | None
    attachments: tuple[Attachment, ...]


class Post(msgspec.Struct, frozen=True, gc=False):
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
    media: tuple[str, ...] = ()
    quote_of: str | None = None  # the key of the post this one quotes
    quote_url: str | None = None  # where the quoted post is on its network, for the screens' "quoting" line
    attachments: tuple[Attachment, ...] = ()  # the media with kind, preview, alt text and size, where known

    def __post_init__(self) -> None:
        # ``media`` is the attachments' URLs whenever there are attachments, however the Post was made.
        if self.attachments:
            urls = tuple(a.url for a in self.attachments)
            if self.media != urls:
                msgspec.structs.force_setattr(self, "media", urls)

    def with_chats(self, chats: tuple[str, ...]) -> Post:
        return msgspec.structs.replace(self, chats=chats)

    def replace(self, **changes: Unpack[PostChanges]) -> Post:
        """This post with ``changes`` (field names) applied, ``media`` following the attachments as in any Post."""
        return msgspec.structs.replace(self, **changes)  # (runs __post_init__)

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
        if self.quote_of is not None:
            out["quote_of"] = self.quote_of
        if self.quote_url is not None:
            out["quote_url"] = self.quote_url
        if self.attachments:
            out["attachments"] = [a.to_dict() for a in self.attachments]
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Post:
        """Validate untrusted data into a Post within ``LIMITS``; raises ValueError naming the bad field."""
        if not isinstance(data, dict):
            raise ValueError(f"a post is a JSON object, got {type(data).__name__}")
        key = _req_str(data, "key")
        if len(key) > LIMITS.key:
            raise ValueError(f"'key' is {len(key):,} characters, more than a key may have ({LIMITS.key:,})")
        source = _req_str(data, "source")
        if len(source) > LIMITS.source:
            raise ValueError(f"'source' is {len(source):,} characters, more than a source name may have")
        author = data.get("author")
        if not isinstance(author, dict):
            raise ValueError("'author' must be an object with a 'handle' ('name' and 'avatar' optional)")
        chats_raw = data.get("chats")
        if not isinstance(chats_raw, list) or not all(isinstance(c, str) for c in chats_raw):
            raise ValueError("'chats' must be a list of strings")
        chats = tuple(dict.fromkeys(normalize_tag(c) for c in chats_raw))
        chats = _first(chats, LIMITS.chats, key, "chats")
        for chat in chats:
            if not TAG.match(chat):
                raise ValueError(f"bad chat tag {chat!r}")
        media_raw = data.get("media") or []
        if not isinstance(media_raw, list) or not all(isinstance(m, str) for m in media_raw):
            raise ValueError("'media' must be a list of URLs")
        media = _first(tuple(m for m in media_raw if _loadable(m, key, "media")), LIMITS.media, key, "media")
        attachments = _attachments(data.get("attachments"), key)
        if attachments:
            media = tuple(a.url for a in attachments)
        for item in (*media, *chats):
            check_text(item, "media/chats")
        avatar = author.get("avatar")
        if not isinstance(avatar, str) or not avatar or not _loadable(avatar, key, "avatar"):
            avatar = None  # not a URL we could show (a wrong type has always been read as no avatar)
        # Links a screen makes of a post are http(s) only: a javascript: or data: URL from a webhook never reaches one
        url = _capped(data, "url", LIMITS.url, key) or ""
        quote_url = _capped(data, "quote_url", LIMITS.url, key) or None
        return cls(
            id=_capped(data, "id", LIMITS.id, key) or "",
            key=key,
            source=source,
            chats=chats,
            author=Author(
                handle=_cut(_req_str(author, "handle", "author.handle"), LIMITS.handle, key, "handle"),
                name=_cut(_opt_str(author, "name", "author.name") or "", LIMITS.name, key, "name"),
                avatar=None if avatar is None else check_text(avatar, "author.avatar"),
            ),
            text=_cut(_opt_str(data, "text", check=False) or "", LIMITS.text, key, "text"),
            url=url if not url or _loadable(url, key, "url") else "",
            created=_req_int(data, "created"),
            at=_opt_int(data, "at") or _req_int(data, "created"),
            lang=_capped(data, "lang", LIMITS.lang, key),
            reply_to=_capped(data, "reply_to", LIMITS.key, key),
            boost_of=_capped(data, "boost_of", LIMITS.key, key),
            media=media,
            quote_of=_capped(data, "quote_of", LIMITS.key, key),
            quote_url=quote_url if quote_url is None or _loadable(quote_url, key, "quote_url") else None,
            attachments=attachments,
        )


def _attachments(raw: Any, key: str) -> tuple[Attachment, ...]:
    """The ``attachments`` of untrusted data: a wrong shape is a ValueError naming the item; a URL that is not
    http(s) or too long drops the attachment (a preview: just the preview), counted and logged; alt text is cut."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ValueError("'attachments' must be a list of objects")
    found: list[Attachment] = []
    for n, item in enumerate(raw):
        label = f"attachments[{n}]"
        if not isinstance(item, dict):
            raise ValueError(f"'{label}' must be an object with 'kind' and 'url'")
        kind = _req_str(item, "kind", f"{label}.kind")
        url = _req_str(item, "url", f"{label}.url")
        preview = _opt_str(item, "preview", f"{label}.preview")
        alt = _opt_str(item, "alt", f"{label}.alt", check=False)
        width, height = _opt_pixels(item, "width", label), _opt_pixels(item, "height", label)
        if not _loadable(url, key, "attachment"):
            continue
        if preview is not None and not _loadable(preview, key, "attachment_preview"):
            preview = None
        alt = alt.strip() if alt is not None else None
        found.append(
            Attachment(
                kind=attachment_kind(kind),
                url=url,
                preview_url=preview,
                alt=_cut(alt, LIMITS.alt, key, "alt") if alt else None,
                width=width,
                height=height,
            )
        )
    return _first(tuple(found), LIMITS.attachments, key, "attachments")


def _loadable(url: str, key: str, label: str) -> bool:
    """Whether ``url`` is an http(s) URL within ``LIMITS.url``; when not, the drop is counted and logged."""
    if not _fits(url, LIMITS.url, key, label):
        return False
    if http_url(url) is None:
        _count(f"{label}_dropped", key, f"{label} {url[:40]!r} dropped: not an http(s) URL")
        return False
    return True


def _opt_pixels(item: dict[str, Any], name: str, label: str) -> int | None:
    value = item.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= LIMITS.pixels:
        raise ValueError(f"'{label}.{name}' must be a whole number of pixels from 1 to {LIMITS.pixels:,}")
    return value


def _count(reason: str, key: str, what: str) -> None:
    """Count a cut or drop; log the 1st, 2nd, 4th, 8th... of each reason (a flood of them must not flood the log)."""
    trimmed[reason] += 1
    if trimmed[reason] & (trimmed[reason] - 1) == 0:
        log.warning("post %.200s: %s (%s #%d)", key, what, reason, trimmed[reason])


def _cut(value: str, limit: int, key: str, label: str) -> str:
    """``value``, or its first ``limit - 1`` characters and "…" (counted and logged) when longer."""
    if len(value) <= limit:
        return check_text(value, label)
    _count(f"{label}_cut", key, f"{label} cut from {len(value):,} to {limit:,} characters")
    return check_text(value[: limit - 1], label) + ELLIPSIS


def _fits(value: str, limit: int, key: str, label: str) -> bool:
    """Whether ``value`` is within ``limit``; when not, the drop is counted and logged."""
    if len(value) <= limit:
        return True
    _count(f"{label}_dropped", key, f"{label} of {len(value):,} characters dropped (at most {limit:,})")
    return False


def _capped(data: dict[str, Any], name: str, limit: int, key: str) -> str | None:
    """An optional string field, dropped (counted, logged) when longer than ``limit``: a cut link is a wrong link."""
    value = _opt_str(data, name, check=False)
    if value is None or not _fits(value, limit, key, name):
        return None
    return check_text(value, name)


def _first(items: tuple[_T, ...], limit: int, key: str, label: str) -> tuple[_T, ...]:
    """The first ``limit`` items; the rest are counted and logged as dropped."""
    if len(items) <= limit:
        return items
    _count(f"{label}_dropped", key, f"{len(items) - limit:,} of {len(items):,} {label} dropped (at most {limit})")
    return items[:limit]


def _req_str(data: dict[str, Any], name: str, label: str | None = None) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"'{label or name}' must be a non-empty string")
    return check_text(value, label or name)


def _opt_str(data: dict[str, Any], name: str, label: str | None = None, *, check: bool = True) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"'{label or name}' must be a string")
    return check_text(value, label or name) if check else value


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


def check_text(value: str, label: str) -> str:
    """``value`` when it is text that can be stored (UTF-8); ValueError naming ``label`` for a lone surrogate (which
    JSON's ``"\\ud800"`` escape can carry in)."""
    if value.isascii():  # O(1) in CPython, and most fields are: no need to encode them to know
        return value
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError(f"'{label}' holds a lone surrogate, not valid Unicode text") from None
    return value


class Edit(msgspec.Struct, frozen=True, gc=False):
    """New content for the post with the same ``post.key`` (e.g. an edited toot or tweet)."""

    post: Post


class Retraction(msgspec.Struct, frozen=True, gc=False):
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
