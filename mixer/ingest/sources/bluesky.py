"""Bluesky: Jetstream events to Posts, Edits and Retractions (the follower is in ``bluesky_follow``).

``parse_jetstream`` turns one Jetstream v1 event (``did``, ``time_us``, ``kind`` and its
``commit``/``identity``/``account`` body) into Events: a created post is a Post, an updated
post an Edit, a deleted post a Retraction; every other record and kind raises ``Ignored``.
``hashtags`` reads a post record's tags; ``attachments`` its images and video with their alt
text. Not here: the live follower ``BlueskySource`` (``bluesky_follow``), resolving a did to
a handle, display name and avatar (Jetstream carries only the did, so here the did is the
handle; ``bluesky_profiles`` resolves it), and quoted posts' content (not in the payload).
Nothing here touches the network.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from mixer.ingest.hashtags import ChatMatcher
from mixer.models import Edit, Event, Ignored, Post, Retraction, http_url, pixels

__all__ = [
    "POST_COLLECTION",
    "SOURCE",
    "attachments",
    "hashtags",
    "parse_jetstream",
]

SOURCE = "bluesky"
POST_COLLECTION = "app.bsky.feed.post"
_TAG_FEATURE = "app.bsky.richtext.facet#tag"
_IMAGE_URL = "https://cdn.bsky.app/img/feed_fullsize/plain/{did}/{cid}@jpeg"
_THUMB_URL = "https://cdn.bsky.app/img/feed_thumbnail/plain/{did}/{cid}@jpeg"
_VIDEO_URL = "https://video.bsky.app/watch/{did}/{cid}/playlist.m3u8"  # HLS, as the AppView's video view gives it
_VIDEO_THUMB_URL = "https://video.bsky.app/watch/{did}/{cid}/thumbnail.jpg"
# Strict enough that a did, rkey or cid can never smuggle a path, query or fragment into a key or URL.
_DID = re.compile(r"^did:[a-z]+:[A-Za-z0-9._:%-]{1,2048}$")
_RKEY = re.compile(r"^[A-Za-z0-9._:~-]{1,512}$")
_CID = re.compile(r"^[A-Za-z0-9]{8,256}$")
_TAGLIKE = re.compile(r"^#?[^\s#]{1,100}$")
# Ignored reasons become counter names, so only short identifiers are used verbatim (bounded cardinality).
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
_BLUESKY_NAMESPACES = ("app.bsky.", "chat.bsky.")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_MS = 1 << 53


def parse_jetstream(data: dict[str, Any], matcher: ChatMatcher, now_ms: int) -> list[Event]:
    """One Jetstream event as Events; raises ``Ignored`` for non-post records and kinds, ValueError if malformed."""
    if not isinstance(data, dict):
        raise ValueError(f"a Jetstream event is a JSON object, got {type(data).__name__}")
    kind = data.get("kind")
    if not isinstance(kind, str):
        raise ValueError("'kind' must be a string")
    if kind != "commit":
        raise Ignored(f"kind_{_short(kind)}")
    did = data.get("did")
    if not isinstance(did, str) or not _DID.match(did):
        raise ValueError("'did' must be a did (did:<method>:<id>)")
    commit = data.get("commit")
    if not isinstance(commit, dict):
        raise ValueError("a commit event needs a 'commit' object")
    collection = commit.get("collection")
    if not isinstance(collection, str) or not collection:
        raise ValueError("'commit.collection' must be a non-empty string")
    if collection != POST_COLLECTION:
        raise Ignored(f"collection_{_collection_name(collection)}")
    rkey = commit.get("rkey")
    if not isinstance(rkey, str) or not _RKEY.match(rkey):
        raise ValueError("'commit.rkey' must be a record key")
    key = f"{SOURCE}:at://{did}/{POST_COLLECTION}/{rkey}"
    operation = commit.get("operation")
    if operation == "delete":
        return [Retraction(key, SOURCE)]
    if operation not in ("create", "update"):
        if isinstance(operation, str):
            raise Ignored(f"operation_{_short(operation)}")
        raise ValueError("'commit.operation' must be a string")
    record = commit.get("record")
    if not isinstance(record, dict):
        raise ValueError(f"a post {operation} needs a 'commit.record' object")
    post = _post(did, rkey, key, record, data.get("time_us"), matcher, now_ms)
    return [post] if operation == "create" else [Edit(post)]


def _post(
    did: str, rkey: str, key: str, record: dict[str, Any], time_us: Any, matcher: ChatMatcher, now_ms: int
) -> Post:
    text = record.get("text", "")
    if not isinstance(text, str):
        raise ValueError("'record.text' must be a string")
    langs = record.get("langs")
    lang = langs[0] if isinstance(langs, list) and langs and isinstance(langs[0], str) and langs[0] else None
    return Post.from_dict(
        {
            "key": key,
            "source": SOURCE,
            "chats": list(matcher.chats(hashtags(record))),
            "author": {"handle": did, "name": "", "avatar": None},
            "text": text,
            "url": f"https://bsky.app/profile/{did}/post/{rkey}",
            "created": _created(record.get("createdAt"), time_us),
            "at": now_ms,
            "lang": lang,
            "reply_to": _reply_to(record),
            "attachments": attachments(did, record.get("embed")),
            **_quote(record.get("embed")),
        }
    )


def hashtags(record: dict[str, Any]) -> list[str]:
    """The post's tags: facet tags (``app.bsky.richtext.facet#tag``) in text order, then outline ``tags``."""
    found: list[Any] = []
    facets = record.get("facets")
    for facet in facets if isinstance(facets, list) else ():
        features = facet.get("features") if isinstance(facet, dict) else None
        for feature in features if isinstance(features, list) else ():
            if isinstance(feature, dict) and feature.get("$type") == _TAG_FEATURE:
                found.append(feature.get("tag"))
    outline = record.get("tags")
    found.extend(outline if isinstance(outline, list) else ())
    return [tag for tag in found if isinstance(tag, str) and _TAGLIKE.match(tag)]


def _created(value: Any, time_us: Any) -> int:
    seen = time_us // 1000 if isinstance(time_us, int) and not isinstance(time_us, bool) else -1
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)  # atproto datetimes must carry a zone; assume UTC
            ms = (when - _EPOCH) // timedelta(milliseconds=1)
            if 0 <= ms < _MAX_MS:
                # A post cannot be written after Jetstream saw it: a future createdAt is clamped (as the AppView does).
                return min(ms, seen) if seen >= 0 else ms
    if 0 <= seen < _MAX_MS:
        return seen
    raise ValueError("neither 'record.createdAt' nor 'time_us' gives the post's time")


def _reply_to(record: dict[str, Any]) -> str | None:
    reply = record.get("reply")
    parent = reply.get("parent") if isinstance(reply, dict) else None
    uri = parent.get("uri") if isinstance(parent, dict) else None
    return f"{SOURCE}:{uri}" if isinstance(uri, str) and uri.startswith("at://") else None


def _quote(embed: Any) -> dict[str, str]:
    """``quote_of`` (the quoted post's key) and ``quote_url`` of a quote (``app.bsky.embed.record`` of a post)."""
    if isinstance(embed, dict) and embed.get("$type") == "app.bsky.embed.recordWithMedia":
        embed = embed.get("record")  # a quote with media: the quote is the inner record embed
    ref = embed.get("record") if isinstance(embed, dict) and embed.get("$type") == "app.bsky.embed.record" else None
    uri = ref.get("uri") if isinstance(ref, dict) else None
    if not isinstance(uri, str) or not uri.startswith("at://"):
        return {}
    did, _, rkey = uri[len("at://") :].partition(f"/{POST_COLLECTION}/")
    if not _DID.match(did) or not _RKEY.match(rkey):
        return {}  # a quoted feed, list or starter pack: not a post
    return {"quote_of": f"{SOURCE}:{uri}", "quote_url": f"https://bsky.app/profile/{did}/post/{rkey}"}


def attachments(did: str, embed: Any) -> list[dict[str, Any]]:
    """The media of a post's ``embed`` in the Post's attachment shape, from the record form (blob refs, made into
    Bluesky's CDN URLs) or the AppView's view form (``#view``: fullsize, thumb, playlist, thumbnail); alt text and
    ``aspectRatio`` (as width and height) from either. Quotes and link cards carry none."""
    if not isinstance(embed, dict):
        return []
    kind = embed.get("$type")
    if kind in ("app.bsky.embed.recordWithMedia", "app.bsky.embed.recordWithMedia#view"):
        return attachments(did, embed.get("media"))  # a quote with media: the media are the quoting post's own
    if kind in ("app.bsky.embed.images", "app.bsky.embed.images#view"):
        images = embed.get("images")
        return [a for image in images if (a := _image(did, image))] if isinstance(images, list) else []
    if kind in ("app.bsky.embed.video", "app.bsky.embed.video#view"):
        video = _video(did, embed)
        return [video] if video else []
    return []  # app.bsky.embed.record (a quote) and external link cards: no media of this post


def _image(did: str, image: Any) -> dict[str, Any] | None:
    if not isinstance(image, dict):
        return None
    if "fullsize" in image:  # the view form
        url, preview = image.get("fullsize"), image.get("thumb")
    else:
        cid = _blob_cid(image.get("image"))
        url = _IMAGE_URL.format(did=did, cid=cid) if cid else None
        preview = _THUMB_URL.format(did=did, cid=cid) if cid else None
    return _attachment("image", url, preview, image) if isinstance(url, str) else None


def _video(did: str, video: dict[str, Any]) -> dict[str, Any] | None:
    if "playlist" in video:  # the view form
        url, preview = video.get("playlist"), video.get("thumbnail")
    else:
        cid = _blob_cid(video.get("video"))
        url = _VIDEO_URL.format(did=did, cid=cid) if cid else None
        preview = _VIDEO_THUMB_URL.format(did=did, cid=cid) if cid else None
    return _attachment("video", url, preview, video) if isinstance(url, str) else None


def _attachment(kind: str, url: str, preview: Any, item: dict[str, Any]) -> dict[str, Any]:
    alt, ratio = item.get("alt"), item.get("aspectRatio")
    ratio = ratio if isinstance(ratio, dict) else {}
    return {
        "kind": kind,
        "url": url,
        "preview": http_url(preview),
        "alt": alt if isinstance(alt, str) and alt.strip() else None,
        "width": pixels(ratio.get("width")),
        "height": pixels(ratio.get("height")),
    }


def _blob_cid(blob: Any) -> str | None:
    if not isinstance(blob, dict):
        return None
    ref = blob.get("ref")
    cid = ref.get("$link") if isinstance(ref, dict) else blob.get("cid")  # current blob shape, then legacy
    return cid if isinstance(cid, str) and _CID.match(cid) else None


def _short(name: str) -> str:
    return name if _NAME.match(name) else "other"


def _collection_name(collection: str) -> str:
    if collection.startswith(_BLUESKY_NAMESPACES):
        return _short(collection.rpartition(".")[2])
    return "other"  # third-party lexicons are open-ended: one counter for all of them
