"""Encoding: Posts to msgpack for Redis, JSON in and out.

Redis holds a Post as msgpack of its contract dict without ``id`` (the stream entry id
is the id); the ``*_FIELD`` names say what kind of entry a stream entry is. ``loads`` reads
untrusted JSON with errors that say what is wrong (``binary_reason`` names NUL-byte garbage
as such, ``not_utf8`` where a file has a byte that is not UTF-8); ``dumps`` writes compact UTF-8 JSON.
Client frames (websocket, SSE) are built in ``mixer.fanout.frames``. Nothing here touches
the network.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Any

import msgpack
import msgspec

from mixer.models import HTTP_URL_PATTERN, LIMITS, TAG, Author, Post, normalize_tag

FIELD = b"p"  # stream entry field of a post: the msgpack-encoded post
EDIT_FIELD = b"u"  # stream entry field of an edit: the post's new content, same key
RETRACT_FIELD = b"r"  # stream entry field of a retraction: msgpack {"key", "source"}
PIN_FIELD = b"n"  # feed entry field of a pin: msgpack {"post": post or None}
ACTION_FIELD = b"a"  # moderator actions and audit entries: msgpack (actions) or JSON (audit)


# The stored form of a plain dict (a post, a feed body, an index value): the same msgpack bytes as
# ``msgpack.packb(x, use_bin_type=True)`` (tests/test_models.py holds it to that) in a third of the time.
pack = msgspec.msgpack.Encoder().encode


def pack_post(post: Post) -> bytes:
    """The Redis form of a post: its contract dict minus ``id``."""
    data = post.to_dict()
    del data["id"]
    return pack(data)


def unpack_item(entry_id: str, raw: bytes) -> dict[str, Any]:
    """A stored post as the contract dict with its feed id; trusts what we wrote."""
    data: dict[str, Any] = msgpack.unpackb(raw, raw=False)
    data["id"] = entry_id
    return data


_Ms = Annotated[int, msgspec.Meta(ge=0, lt=1 << 53)]
# models.http_url's rule in the typed decode: a URL a screen may link or load is http(s) (a post's url may be ""); any
# other takes the checked path, which drops it
_Url = Annotated[str, msgspec.Meta(max_length=LIMITS.url, pattern=f"(?i)^{HTTP_URL_PATTERN}$")]
_PostUrl = Annotated[str, msgspec.Meta(max_length=LIMITS.url, pattern=f"(?i)^({HTTP_URL_PATTERN})?$")]
_Key = Annotated[str, msgspec.Meta(max_length=LIMITS.key)]


class _StoredAuthor(msgspec.Struct):
    handle: Annotated[str, msgspec.Meta(min_length=1, max_length=LIMITS.handle)]
    name: Annotated[str, msgspec.Meta(max_length=LIMITS.name)] = ""
    avatar: _Url | None = None


class _StoredPost(msgspec.Struct):
    """A post as ``pack_post`` writes it, each field within ``LIMITS``: what ``Post.from_dict`` takes unchanged."""

    key: Annotated[str, msgspec.Meta(min_length=1, max_length=LIMITS.key)]
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=LIMITS.source)]
    chats: Annotated[list[str], msgspec.Meta(max_length=LIMITS.chats)]
    author: _StoredAuthor
    created: _Ms
    text: Annotated[str, msgspec.Meta(max_length=LIMITS.text)] = ""
    url: _PostUrl = ""
    at: _Ms | None = None
    lang: Annotated[str, msgspec.Meta(max_length=LIMITS.lang)] | None = None
    reply_to: _Key | None = None
    boost_of: _Key | None = None
    media: Annotated[list[_Url], msgspec.Meta(max_length=LIMITS.media)] = []
    quote_of: _Key | None = None
    quote_url: _Url | None = None
    attachments: Annotated[list[Any], msgspec.Meta(max_length=0)] = []  # any: the checked path reads them


_STORED = msgspec.msgpack.Decoder(_StoredPost)


def unpack_post(entry_id: str, raw: bytes) -> Post:
    """A stored post, validated; raises ValueError if the entry is not a post.

    One typed decode for a post already as ``Post.from_dict`` leaves it (the merge stage's case: the publisher
    wrote it from a Post), else the checked path: ``from_dict`` on the plain msgpack, with its cuts, drops and
    errors. Either way the same Post (tests/test_models.py holds the two to it).
    """
    try:
        s = _STORED.decode(raw)
    except msgspec.DecodeError:
        return _unpack_checked(entry_id, raw)
    chats = s.chats
    if len(entry_id) > LIMITS.id or len(set(chats)) != len(chats) or not all(map(_stored_tag, chats)):
        return _unpack_checked(entry_id, raw)
    a = s.author
    return Post(
        key=s.key,
        source=s.source,
        chats=tuple(chats),
        author=Author(a.handle, a.name, a.avatar),
        text=s.text,
        url=s.url,
        created=s.created,
        at=s.at or s.created,
        id=entry_id,
        lang=s.lang,
        reply_to=s.reply_to,
        boost_of=s.boost_of,
        media=tuple(s.media),
        quote_of=s.quote_of,
        quote_url=s.quote_url,
    )


@lru_cache(maxsize=10_000)  # an event has dozens of chat tags, not thousands: each is checked once
def _stored_tag(chat: str) -> bool:
    """Whether ``chat`` is a tag as ``Post.from_dict`` stores it (normalized, ``TAG``)."""
    return chat == normalize_tag(chat) and TAG.match(chat) is not None


def _unpack_checked(entry_id: str, raw: bytes) -> Post:
    try:
        data = msgpack.unpackb(raw, raw=False)
    except msgpack.UnpackException as exc:  # (OutOfData is not a ValueError)
        raise ValueError(f"entry {entry_id} is not msgpack: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"entry {entry_id} is a {type(data).__name__}, not a post")
    data["id"] = entry_id
    return Post.from_dict(data)


def loads(raw: bytes | str) -> Any:
    """JSON from the network or a file; ValueError naming what is wrong (not UTF-8, NUL bytes, not JSON, too deep)."""
    if isinstance(raw, bytes):
        # JSON between systems is UTF-8 (RFC 8259). json.loads would guess UTF-16/32 from NUL bytes,
        # and a line of NULs (a file padded or cut by a crash) would be blamed on the encoding.
        try:
            raw = raw.decode()
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 (byte {exc.start + 1})") from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        binary = binary_reason(raw, exc.pos)
        if binary is not None:
            raise ValueError(binary) from None
        where = f"column {exc.colno}" if exc.lineno == 1 else f"line {exc.lineno} column {exc.colno}"
        at = "" if exc.msg.endswith(" at") else " at"  # "Unterminated string starting at" names its start
        raise ValueError(f"not JSON: {exc.msg}{at} {where}") from None
    except RecursionError:
        raise ValueError("not JSON: nested too deeply") from None


def not_utf8(byte: int, position: int) -> str:
    """Why a file is unreadable at ``byte`` (its value), the ``position``-th byte of the file (from 1): said the
    same way by every reader of user files (recordings, a directory CSV), with what to do about it."""
    return f"not UTF-8 at byte {position} of the file (0x{byte:02x}); save it as UTF-8"


def binary_reason(text: str, pos: int = 0) -> str | None:
    """Why ``text`` is binary rather than JSON when its JSON broke at ``pos`` on a NUL byte, else None."""
    if "\x00" not in text[pos : pos + 1]:
        return None
    run = len(text) - pos - len(text[pos:].lstrip("\x00"))
    if text[pos + run :].strip():
        return f"binary data, not JSON: a NUL byte at character {pos + 1}"
    if text[:pos].strip():
        return f"not JSON: {run:,} NUL bytes after the JSON"
    return f"{run:,} NUL bytes, not JSON (a file padded or cut short?)"


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON; non-ASCII kept as is (smaller than \\u escapes). Never raises on text: a lone surrogate
    (valid in JSON as an escape, e.g. a key a webhook sent and its answer names) is written as that escape."""
    # json.dumps puts non-ASCII characters only inside strings, where backslashreplace's \udXXX is the JSON escape
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "backslashreplace")
