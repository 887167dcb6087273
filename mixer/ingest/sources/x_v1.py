"""X API v1.1: statuses and stream notices to Posts and Retractions (``parse_v1``), the one place v1.1 is read.

A retweet yields the original as its own Post, then the retweet with ``boost_of``; a quote
yields the quoted status, then the quoting one with ``quote_of``/``quote_url`` (also when
only ``quoted_status_id_str`` names the quoted tweet): originals always come first. Text is the
extended tweet's when there is one, cut to ``display_text_range`` (leading reply
@mentions and the trailing media or quote link) when the entities' indices agree with it,
then unescaped. A ``delete`` notice is a Retraction; the other stream notices (``limit``,
``warning``, ...) are ``Ignored``. The fields v1.1 shares with v2 are read in ``x``; v2 is
``x_v2``. Pure: the ingest time comes in as ``now_ms``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, TypeGuard

from mixer.ingest.hashtags import ChatMatcher
from mixer.ingest.sources.x import (
    MAX_DEPTH,
    SOURCE,
    WEB,
    alt_text,
    build_post,
    hashtags_of,
    id_of,
    media_kind,
    quote_link,
    snowflake_ms,
    unescape,
    whole_second,
)
from mixer.models import Event, Ignored, Post, Retraction, pixels

_MONTHS = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}
# v1.1 stream messages that are not statuses; each is counted as skipped:<name>_notice.
_V1_NOTICES = ("limit", "warning", "scrub_geo", "status_withheld", "user_withheld", "disconnect", "event", "friends")


def parse_v1(data: dict[str, Any], matcher: ChatMatcher, now_ms: int) -> list[Event]:
    """Events of a v1.1 status (originals first) or stream notice; ValueError if malformed, Ignored if no post."""
    if not isinstance(data, dict):
        raise ValueError("a v1.1 payload is a JSON object")
    if "user" not in data and "text" not in data and "full_text" not in data:
        deleted = data.get("delete")
        if isinstance(deleted, dict):
            status = deleted.get("status")
            if not isinstance(status, dict):
                raise ValueError("delete notice without 'status'")
            return [Retraction(f"x:{id_of(status.get('id_str') or status.get('id'), 'delete.status.id')}", SOURCE)]
        for notice in _V1_NOTICES:
            if notice in data:
                raise Ignored(f"{notice}_notice")
    out: dict[str, Event] = {}
    _V1(matcher, now_ms, out).status(data, 0)
    return list(out.values())


class _V1:
    def __init__(self, matcher: ChatMatcher, now_ms: int, out: dict[str, Event]) -> None:
        self.matcher, self.now_ms, self.out = matcher, now_ms, out

    def status(self, status: Any, depth: int) -> tuple[Post, list[str]]:
        """The status as a Post (added to ``out`` after any original it carries) and its hashtags."""
        if not isinstance(status, dict):
            raise ValueError("a status must be an object")
        tweet_id = id_of(status.get("id_str") or status.get("id"), "id_str")
        user = status.get("user")
        if not isinstance(user, dict):
            raise ValueError(f"status {tweet_id} has no 'user' object")
        handle = user.get("screen_name")
        if not isinstance(handle, str) or not handle:
            raise ValueError(f"status {tweet_id} has no user.screen_name")
        text, tags = _v1_text(status)
        attachments = _v1_attachments(status)
        boost_of = reply_to = quote_of = quote_url = None
        original = status.get("retweeted_status") if depth < MAX_DEPTH else None
        if isinstance(original, dict):
            orig, orig_tags = self.status(original, depth + 1)
            text = f"RT @{orig.author.handle}: {orig.text}"
            tags, boost_of = tags + orig_tags, orig.key
            attachments = [a.to_dict() for a in orig.attachments]
            quote_of, quote_url = orig.quote_of, orig.quote_url
        else:
            quote_of, quote_url = self.quote(status, depth)
            parent = status.get("in_reply_to_status_id_str") or status.get("in_reply_to_status_id")
            reply_to = f"x:{id_of(parent, 'in_reply_to_status_id_str')}" if parent else None
        post = build_post(
            key=f"x:{tweet_id}",
            chats=self.matcher.chats(tags),
            handle=handle,
            name=user.get("name"),
            avatar=user.get("profile_image_url_https") or user.get("profile_image_url"),
            text=text,
            url=f"{WEB}/{handle}/status/{tweet_id}",
            created=_v1_created(status, tweet_id),
            at=self.now_ms,
            lang=status.get("lang"),
            reply_to=reply_to,
            boost_of=boost_of,
            attachments=attachments,
            quote_of=quote_of,
            quote_url=quote_url,
        )
        self.out.setdefault(post.key, post)
        return post, tags

    def quote(self, status: dict[str, Any], depth: int) -> tuple[str | None, str | None]:
        """The key and URL of the tweet ``status`` quotes (None, None when none); the quoted tweet is added first."""
        quoted = status.get("quoted_status")
        if isinstance(quoted, dict) and depth < MAX_DEPTH:
            post, _ = self.status(quoted, depth + 1)
            return post.key, post.url
        quoted_id = status.get("quoted_status_id_str") or status.get("quoted_status_id")
        if not quoted_id:
            return None, None
        quoted_id = id_of(quoted_id, "quoted_status_id_str")
        link = status.get("quoted_status_permalink")
        expanded = link.get("expanded") if isinstance(link, dict) else None
        return f"x:{quoted_id}", quote_link(expanded, quoted_id, status.get("entities"))


def _v1_text(status: dict[str, Any]) -> tuple[str, list[str]]:
    """The displayed text (cut to display_text_range, unescaped) and hashtags, preferring the extended tweet."""
    ext = status.get("extended_tweet")
    if isinstance(ext, dict) and isinstance(ext.get("full_text"), str):
        raw, shown, entities = ext["full_text"], ext.get("display_text_range"), ext.get("entities")
    else:
        raw = status.get("full_text", status.get("text"))
        shown, entities = status.get("display_text_range"), status.get("entities")
    if not isinstance(raw, str):
        raise ValueError("status has no 'text' or 'full_text' string")
    if _is_range(shown, len(raw)) and _indices_agree(raw, entities):
        raw = raw[shown[0] : shown[1]]  # indices count code points of the escaped text, so cut before unescaping
    text = unescape(raw)
    return text, hashtags_of(entities, "text", text)


def _v1_attachments(status: dict[str, Any]) -> list[dict[str, Any]]:
    """The status's media in the Post's attachment shape, from the first of the extended tweet's
    ``extended_entities``/``entities``, then the status's own, that has any: ``media_url_https``, type, ``ext_alt_text``
    and the size (``original_info``, else ``sizes.large``); a video or GIF's ``media_url_https`` is its still image."""
    ext = status.get("extended_tweet")
    holders = [ext.get("extended_entities"), ext.get("entities")] if isinstance(ext, dict) else []
    holders += [status.get("extended_entities"), status.get("entities")]
    for holder in holders:
        items = holder.get("media") if isinstance(holder, dict) else None
        if isinstance(items, list) and items:
            found: dict[str, dict[str, Any]] = {}
            for item in items:
                attachment = _v1_attachment(item)
                if attachment is not None:
                    found.setdefault(attachment["url"], attachment)
            return list(found.values())
    return []


def _v1_attachment(item: Any) -> dict[str, Any] | None:
    if not isinstance(item, dict):
        return None
    url = item.get("media_url_https") or item.get("media_url")
    if not isinstance(url, str) or not url:
        return None
    kind = media_kind(item.get("type"))
    sizes = item.get("sizes")
    found = (item.get("original_info"), sizes.get("large") if isinstance(sizes, dict) else None)
    size: dict[str, Any] = next((s for s in found if isinstance(s, dict)), {})
    return {
        "kind": kind,
        "url": url,
        "preview": url if kind != "image" else None,
        "alt": alt_text(item.get("ext_alt_text")),
        "width": pixels(size.get("width", size.get("w"))),
        "height": pixels(size.get("height", size.get("h"))),
    }


def _v1_created(status: dict[str, Any], tweet_id: str) -> int:
    stamp = status.get("timestamp_ms")
    if isinstance(stamp, str) and stamp.isdigit():
        return int(stamp)
    created = status.get("created_at")
    if isinstance(created, str):
        return _twitter_date(created)
    return whole_second(snowflake_ms(tweet_id))


def _twitter_date(value: str) -> int:
    """ms since the epoch of 'Wed Oct 10 20:19:24 +0000 2018' (parsed by hand: strptime's %a/%b follow the locale)."""
    try:
        _, month, day, clock, zone, year = value.split()
        hour, minute, second = (int(part) for part in clock.split(":"))
        sign = -1 if zone[0] == "-" else 1
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5])) * sign
        moment = datetime(int(year), _MONTHS[month], int(day), hour, minute, second, tzinfo=timezone(offset))
    except (ValueError, KeyError, IndexError):
        raise ValueError(f"bad created_at {value[:40]!r}") from None
    return int(moment.timestamp() * 1000)


def _is_range(value: Any, size: int) -> TypeGuard[list[int]]:
    return (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and 0 <= value[0] <= value[1] <= size
    )


def _indices_agree(raw: str, entities: Any) -> bool:
    """True when every link entity's indices point at its link in ``raw`` (mis-encoded text shifts them)."""
    for kind in ("urls", "media"):
        items = entities.get(kind) if isinstance(entities, dict) else None
        for item in items if isinstance(items, list) else []:
            where = item.get("indices") if isinstance(item, dict) else None
            if _is_range(where, len(raw) + 1) and raw[where[0] : where[1]] != item.get("url"):
                return False
    return True
