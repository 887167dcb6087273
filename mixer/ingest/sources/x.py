"""X (Twitter): what the v1.1 parser (``x_v1``) and the v2 parser (``x_v2``) share.

``load_json`` decodes one payload; ``build_post`` makes the validated Post both parsers
return (X's language codes for "no language" dropped); ``id_of``, ``hashtags_of``,
``unescape``, ``snowflake_ms``, ``whole_second``, ``media_kind`` and ``alt_text`` read the
fields both API versions have in common. Both parsers are pure (the ingest time comes in as ``now_ms``) and put
originals first: a retweet yields the original as its own Post, then the retweet with
``boost_of``; a quote yields the quoted tweet (when the payload holds it), then the
quoting one with ``quote_of`` (the quoted tweet's key) and ``quote_url`` (``quote_link``).
Text is what X displays, with X's HTML escapes (``&amp; &lt; &gt;``) undone.
Parsing a payload lives in ``x_v1`` and ``x_v2``, never here; the live follower
``XSource`` (filtered stream, rules, reconnects) lives in ``x_stream``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from mixer.codec import loads
from mixer.ingest.hashtags import extract_hashtags
from mixer.models import AttachmentKind, Post

SOURCE = "x"
WEB = "https://twitter.com"
MAX_DEPTH = 3  # retweet -> original -> quoted: deeper references are kept as keys only, so a loop cannot recurse
_SNOWFLAKE_EPOCH_MS = 1288834974657  # X's snowflake ids hold ms since this instant in their upper bits
# X's media types (v1.1 and v2 alike) as attachment kinds.
_KINDS: dict[str, AttachmentKind] = {"photo": "image", "video": "video", "animated_gif": "gifv"}
_ESCAPES = re.compile(r"&(amp|lt|gt);")
_UNESCAPE = {"amp": "&", "lt": "<", "gt": ">"}


def load_json(raw: bytes | str) -> dict[str, Any]:
    """One payload decoded as a JSON object; ValueError naming what is wrong (not UTF-8, not JSON, not an object)."""
    data = loads(raw)
    if not isinstance(data, dict):
        raise ValueError(f"not a JSON object but {type(data).__name__}")
    return data


def snowflake_ms(tweet_id: str | int) -> int:
    """When a tweet with this snowflake id was created, in ms since the epoch."""
    return (int(tweet_id) >> 22) + _SNOWFLAKE_EPOCH_MS


def build_post(handle: str, name: Any, avatar: Any, lang: Any, chats: tuple[str, ...], **fields: Any) -> Post:
    """A validated Post (``Post.from_dict`` rejects lone surrogates and the like, which JSON escapes can carry)."""
    name = name if isinstance(name, str) else ""
    author = {"handle": handle, "name": name, "avatar": avatar if isinstance(avatar, str) and avatar else None}
    return Post.from_dict({"source": SOURCE, "author": author, "chats": list(chats), "lang": _lang(lang), **fields})


def id_of(value: Any, label: str) -> str:
    """A tweet id as its decimal string; ValueError unless it is one."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return str(value)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 30:
        return value
    raise ValueError(f"'{label}' must be a tweet id, got {str(value)[:30]!r}")


def hashtags_of(entities: Any, field: str, text: str) -> list[str]:
    """Hashtags from the entities (``text`` in v1.1, ``tag`` in v2); from the text when there are no entities."""
    if not isinstance(entities, dict):
        return extract_hashtags(text)
    items = entities.get("hashtags")
    found: Iterable[Any] = items if isinstance(items, list) else []
    return [h[field] for h in found if isinstance(h, dict) and isinstance(h.get(field), str)]


def quote_link(expanded: Any, quoted_id: str, entities: Any) -> str:
    """The URL of quoted tweet ``quoted_id``: the permalink the payload gives, a link entity to it, or X's own."""
    found = [expanded]
    urls = entities.get("urls") if isinstance(entities, dict) else None
    found += [u.get("expanded_url") for u in urls if isinstance(u, dict)] if isinstance(urls, list) else []
    for url in found:
        if isinstance(url, str) and url.startswith("https://") and url.rstrip("/").endswith(f"/status/{quoted_id}"):
            return url
    return f"{WEB}/i/web/status/{quoted_id}"


def media_kind(value: Any) -> AttachmentKind:
    """The attachment kind of an X media ``type`` (photo, video, animated_gif); ``unknown`` for anything else."""
    return _KINDS.get(value, "unknown") if isinstance(value, str) else "unknown"


def alt_text(value: Any) -> str | None:
    """An alt text as X gives it (v1.1 ``ext_alt_text``, v2 ``alt_text``): None when absent, null or blank."""
    return value if isinstance(value, str) and value.strip() else None


def whole_second(ms: int) -> int:
    """A snowflake time cut to the second, as ``created_at`` gives it, so both sources of a time agree."""
    return ms - ms % 1000


def unescape(text: str) -> str:
    """X escapes exactly &, < and > in tweet text; undo those three in one pass (so '&amp;lt;' stays '&lt;')."""
    return _ESCAPES.sub(lambda m: _UNESCAPE[m.group(1)], text) if "&" in text else text


def _lang(value: Any) -> str | None:
    """A language code, or None for X's 'und', 'zxx' and private-use codes (qam, qct, qht, qme, qst)."""
    if not isinstance(value, str) or not value or value in ("und", "zxx"):
        return None
    if len(value) == 3 and value[0] == "q" and "a" <= value[1] <= "t":
        return None
    return value
