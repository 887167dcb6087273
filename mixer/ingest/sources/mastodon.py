"""Mastodon: statuses and streaming events to Posts, Edits and Retractions (the follower is in ``mastodon_follow``).

``parse_status`` turns one REST/streaming status into Posts: the status itself, plus the
boosted original (``reblog``) or the quoted status (Mastodon 4.x ``quote.quoted_status``)
as Posts of their own. ``parse_event`` handles one streaming event: ``update`` -> Posts,
``status.update`` -> Edit, ``delete`` -> Retraction, anything else -> ``Ignored``. Post
keys are ``mastodon:<status uri>`` (the uri is global, so one toot seen through two
instances dedupes); instance-local ids that cannot be mapped to a uri become
``mastodon-id:<instance host>:<id>``. Not here: HTML ``content`` to text (``mastodon_html``),
the streaming wire formats that carry the events (``mastodon_stream``), and the follower
``MastodonSource`` (``mastodon_follow``). Nothing here touches the network.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, MutableMapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from mixer.ingest.hashtags import ChatMatcher, extract_hashtags
from mixer.ingest.sources.mastodon_html import html_to_text
from mixer.models import AttachmentKind, Edit, Event, Ignored, Post, Retraction, http_url, pixels

__all__ = [
    "id_order",
    "parse_event",
    "parse_status",
    "status_uris",
]

SOURCE = "mastodon"
_EVENT_NAME = re.compile(r"[^a-z0-9]+")
# Mastodon's MediaAttachment types (https://docs.joinmastodon.org/entities/MediaAttachment/#type) as attachment kinds.
_KINDS: dict[str, AttachmentKind] = {"image": "image", "video": "video", "gifv": "gifv", "audio": "audio"}
_PUBLIC = frozenset({"public", "unlisted"})  # private and direct statuses never reach a wall


def id_order(status_id: str) -> tuple[int, str]:
    """Sort key of instance-local status ids: numeric Mastodon snowflakes by value, fixed-width ULIDs by text."""
    return len(status_id), status_id


def parse_status(
    data: dict[str, Any],
    matcher: ChatMatcher,
    now_ms: int,
    *,
    instance: str | None = None,
    known_uris: Mapping[str, str] | None = None,
    seen_uris: MutableMapping[str, str] | None = None,
) -> list[Event]:
    """Posts of one status, originals (boosted or quoted) before the status that refers to them.

    ``instance`` is the host the status was read from (local handles and local ids are
    relative to it); ``known_uris`` maps local status ids to uris, to key ``reply_to``
    as ``mastodon:<uri>`` where known; ``seen_uris``, when given, gets the id -> uri of
    every status parsed here (a reader of a recording keys later deletes with it; bounding
    it is the caller's). Raises ValueError when malformed, ``Ignored`` for a private or
    direct status.
    """
    events = _parse(data, matcher, now_ms, instance, known_uris or {}, depth=0)
    if seen_uris is not None:
        seen_uris.update(status_uris(data))
    return events


def status_uris(data: Any) -> list[tuple[str, str]]:
    """(local id, uri) of a status and of the statuses it carries (boosted, quoted), where both are present."""
    found: list[tuple[str, str]] = []
    for _ in range(3):  # a boost of a quote of a status, at most
        if not isinstance(data, dict):
            break
        status_id, uri = data.get("id"), data.get("uri")
        if isinstance(status_id, int) and not isinstance(status_id, bool):
            status_id = str(status_id)
        if isinstance(status_id, str) and status_id and isinstance(uri, str) and uri:
            found.append((status_id, uri))
        data = data.get("reblog") if isinstance(data.get("reblog"), dict) else _quoted_status(data.get("quote"))
    return found


def parse_event(
    event: str,
    payload: str | dict[str, Any] | int | None,
    matcher: ChatMatcher,
    now_ms: int,
    *,
    instance: str | None = None,
    known_uris: Mapping[str, str] | None = None,
    seen_uris: MutableMapping[str, str] | None = None,
) -> list[Event]:
    """One streaming event: ``update`` -> Posts, ``status.update`` -> Edit, ``delete`` -> Retraction, else Ignored.

    ``known_uris`` and ``seen_uris`` as for ``parse_status``; a delete's key comes from ``known_uris``.
    """
    if event == "update":
        status = _payload_object(event, payload)
        return parse_status(status, matcher, now_ms, instance=instance, known_uris=known_uris, seen_uris=seen_uris)
    if event == "status.update":
        status = _payload_object(event, payload)
        if isinstance(status.get("reblog"), dict):
            raise Ignored("edit_of_boost")
        _check_visibility(status)
        edit = Edit(_post(status, matcher, now_ms, instance, known_uris or {}))
        if seen_uris is not None:
            seen_uris.update(status_uris(status))
        return [edit]
    if event == "delete":
        status_id = str(payload).strip() if isinstance(payload, str | int) and not isinstance(payload, bool) else ""
        if not status_id or len(status_id) > 64 or not status_id.isalnum():
            raise ValueError(f"delete event: expected a status id, got {str(payload)[:40]!r}")
        uri = (known_uris or {}).get(status_id)
        if uri:
            return [Retraction(f"{SOURCE}:{uri}", SOURCE)]
        if not instance:
            # Read from a recording: the status was not earlier in it, so nothing here can key its post.
            raise Ignored("delete_unknown_instance" if known_uris is None else "delete_of_unseen_status")
        return [Retraction(local_key(instance, status_id), SOURCE)]
    name = _EVENT_NAME.sub("_", event.lower()).strip("_")[:40] or "unnamed"
    raise Ignored(f"event_{name}")


def local_key(instance: str, status_id: str) -> str:
    """The key of a status known only by its instance-local id (a delete or reply target with no uri at hand)."""
    return f"mastodon-id:{instance}:{status_id}"


def _payload_object(event: str, payload: str | dict[str, Any] | int | None) -> dict[str, Any]:
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError as exc:
            raise ValueError(f"{event} event: payload is not JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise ValueError(f"{event} event: payload must be a status object, got {type(payload).__name__}")
    return payload


def _parse(
    data: Any, matcher: ChatMatcher, now_ms: int, instance: str | None, known: Mapping[str, str], depth: int
) -> list[Event]:
    if not isinstance(data, dict):
        raise ValueError(f"a status is a JSON object, got {type(data).__name__}")
    reblog = data.get("reblog")
    if isinstance(reblog, dict):
        events = _parse(reblog, matcher, now_ms, instance, known, depth + 1)
        original = next((e for e in reversed(events) if isinstance(e, Post)), None)
        if original is None:
            raise ValueError("reblog without an original status")
        _check_visibility(data)
        return [*events, _boost(data, original, now_ms, instance)]
    _check_visibility(data)
    post = _post(data, matcher, now_ms, instance, known)
    quoted = _quoted_status(data.get("quote"))
    if quoted is not None and depth < 2:
        try:
            return [*_parse(quoted, matcher, now_ms, instance, known, depth + 1), post]
        except (Ignored, ValueError):
            pass  # the quoting post stands on its own; a hidden or broken quote only loses the extra Post
    return [post]


def _quoted_status(quote: Any) -> dict[str, Any] | None:
    if not isinstance(quote, dict):
        return None
    inner = quote.get("quoted_status")  # Mastodon 4.4+: {"state": ..., "quoted_status": {...} | null}
    if isinstance(inner, dict):
        return inner
    return quote if "uri" in quote and "account" in quote else None  # Fedibird-style: the status itself


def _check_visibility(data: dict[str, Any]) -> None:
    visibility = data.get("visibility")
    if isinstance(visibility, str) and visibility not in _PUBLIC:
        raise Ignored(f"visibility_{_EVENT_NAME.sub('_', visibility.lower())[:20]}")


def _post(
    data: dict[str, Any], matcher: ChatMatcher, now_ms: int, instance: str | None, known: Mapping[str, str]
) -> Post:
    uri = _req_str(data, "uri")
    account = data.get("account")
    if not isinstance(account, dict):
        raise ValueError("'account' must be an object")
    host = _instance_host(account, instance)
    content = data.get("content")
    if content is None:
        content = data.get("text")  # a DELETE response carries the source text instead of HTML
    if not isinstance(content, str):
        raise ValueError("'content' must be a string")
    quoted = _quoted_status(data.get("quote"))
    quote_uri = quoted.get("uri") if quoted is not None else None
    if not isinstance(quote_uri, str) or not quote_uri:
        quote_uri = None
    # A quote Post carries its quote (quote_of, quote_url) and the screens show it, so the "RE:" line goes.
    text = html_to_text(content, hide_quote_line=quote_uri is not None)
    spoiler = data.get("spoiler_text")
    if isinstance(spoiler, str) and spoiler.strip():
        text = f"CW: {spoiler.strip()}\n\n{text}".rstrip()
    reply_id = data.get("in_reply_to_id")
    reply_to = None
    if isinstance(reply_id, str | int) and not isinstance(reply_id, bool) and str(reply_id):
        reply_uri = known.get(str(reply_id))
        reply_to = f"{SOURCE}:{reply_uri}" if reply_uri else (local_key(host, str(reply_id)) if host else None)
    lang = data.get("language")
    return Post.from_dict(
        {
            "key": f"{SOURCE}:{uri}",
            "source": SOURCE,
            "chats": list(matcher.chats(_hashtags(data, text))),
            "author": _author(account, host),
            "text": text,
            "url": _opt_str(data, "url") or uri,
            "created": _created(data),
            "at": now_ms,
            "lang": lang if isinstance(lang, str) and lang else None,
            "reply_to": reply_to,
            "attachments": _attachments(data.get("media_attachments")),
            "quote_of": f"{SOURCE}:{quote_uri}" if quote_uri else None,
            "quote_url": (_opt_str(quoted, "url") or quote_uri) if quoted is not None and quote_uri else None,
        }
    )


def _boost(data: dict[str, Any], original: Post, now_ms: int, instance: str | None) -> Post:
    """The boost itself: the booster as author, the original's text and chats, ``boost_of`` its key."""
    uri = _req_str(data, "uri")
    account = data.get("account")
    if not isinstance(account, dict):
        raise ValueError("'account' must be an object")
    host = _instance_host(account, instance)
    return Post.from_dict(
        {
            **original.to_dict(),
            "id": "",
            "key": f"{SOURCE}:{uri}",
            "author": _author(account, host),
            "url": _opt_str(data, "url") or uri,
            "created": _created(data),
            "at": now_ms,
            "reply_to": None,
            "boost_of": original.key,
        }
    )


def _hashtags(data: dict[str, Any], text: str) -> list[str]:
    tags = data.get("tags")
    if not isinstance(tags, list):
        return extract_hashtags(text)
    return [t["name"] for t in tags if isinstance(t, dict) and isinstance(t.get("name"), str)]


def _author(account: dict[str, Any], host: str | None) -> dict[str, Any]:
    username = _opt_str(account, "username") or ""
    acct = _opt_str(account, "acct") or username
    if not acct:
        raise ValueError("'account' has neither 'acct' nor 'username'")
    handle = acct if "@" in acct or not host else f"{acct}@{host}"
    avatar = _opt_str(account, "avatar") or _opt_str(account, "avatar_static")
    return {"handle": handle, "name": _opt_str(account, "display_name") or username or acct, "avatar": avatar}


def _attachments(items: Any) -> list[dict[str, Any]]:
    """``media_attachments`` in the Post's attachment shape: type, url (else preview_url, else remote_url, as
    ``media`` always was), preview_url, description, meta.original (else meta.small) width and height."""
    found: list[dict[str, Any]] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        url = next((item[k] for k in ("url", "preview_url", "remote_url") if isinstance(item.get(k), str)), None)
        if not url:
            continue
        meta = item.get("meta")
        meta = meta if isinstance(meta, dict) else {}
        size = next((s for s in (meta.get("original"), meta.get("small")) if isinstance(s, dict)), {})
        preview, alt = item.get("preview_url"), item.get("description")
        found.append(
            {
                "kind": _KINDS.get(str(item.get("type")), "unknown"),
                "url": url,
                "preview": http_url(preview),
                "alt": alt if isinstance(alt, str) and alt.strip() else None,
                "width": pixels(size.get("width")),
                "height": pixels(size.get("height")),
            }
        )
    return found


def _created(data: dict[str, Any]) -> int:
    raw = _req_str(data, "created_at")
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"'created_at' is not an ISO time: {raw[:40]!r}") from None
    if when.tzinfo is None:
        raise ValueError(f"'created_at' has no time zone: {raw[:40]!r}")
    return round(when.timestamp() * 1000)


def _instance_host(account: dict[str, Any], instance: str | None) -> str | None:
    """The instance the status was read from: given, or a local account's own host (acct without '@')."""
    if instance:
        return instance
    acct, url = account.get("acct"), account.get("url")
    if isinstance(acct, str) and "@" not in acct and isinstance(url, str):
        return urlsplit(url).netloc or None
    return None


def _req_str(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"'{name}' must be a non-empty string")
    return value


def _opt_str(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) and value else None
