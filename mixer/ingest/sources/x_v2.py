"""X API v2: responses, stream messages and compliance records to Posts, Edits and Retractions (``parse_v2``).

The one place v2 is read. Tweets come with their authors, media and referenced tweets
from ``includes``; a retweet yields its original (when included), then the retweet with
``boost_of``; a quote the quoted tweet (when included), then the quoting one with
``quote_of`` and ``quote_url``; an author missing from ``includes.users`` is unresolved:
handle ``id:<author_id>``, no name; a filtered-stream message's ``matching_rules`` tags
add chats. Text is what X displays: no leading reply @mentions, no
trailing media or quoted-tweet link (cut using the entities), unescaped; a long post's
``note_tweet`` gives its whole text. A tweet whose ``edit_history_tweet_ids`` starts with
another id is an ``Edit`` of ``x:<first id>``: the key of a tweet is always the id of its
first version. A compliance delete is a Retraction. The fields v2 shares with v1.1 are read
in ``x``; v1.1 is ``x_v1``, the follower that reads the stream ``x_stream``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

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
from mixer.models import Edit, Event, Ignored, Post, Retraction, http_url, pixels

_REPLY_MENTIONS = re.compile(r"^(?:@\w{1,50}(?:\s+|$))+")
UNRESOLVED = "id:"  # handle prefix of an author known only by id (the payload lacks the author_id expansion)


def parse_v2(message: dict[str, Any], matcher: ChatMatcher, now_ms: int) -> list[Event]:
    """Events of a v2 response or stream message (originals first); ValueError if malformed, Ignored if no post."""
    if not isinstance(message, dict):
        raise ValueError("a v2 message is a JSON object")
    data = message.get("data")
    if data is None:
        if "action" in message and "id" in message:
            return _compliance_record(message)
        if "errors" in message:
            raise Ignored("stream_error")
        raise Ignored("unknown_message")
    if isinstance(data, dict) and "id" not in data and len(data) == 1:
        return _compliance_event(data)
    tweets = [data] if isinstance(data, dict) else data
    if not isinstance(tweets, list) or not all(isinstance(t, dict) for t in tweets):
        raise ValueError("'data' must be a tweet object or a list of them")
    includes = message.get("includes") or {}
    if not isinstance(includes, dict):
        raise ValueError("'includes' must be an object")
    rules = message.get("matching_rules") or []
    if not isinstance(rules, list):
        raise ValueError("'matching_rules' must be a list")
    rule_tags = [r["tag"] for r in rules if isinstance(r, dict) and isinstance(r.get("tag"), str) and r["tag"]]
    parser = _V2(matcher, now_ms, includes, tweets)
    for tweet in tweets:
        parser.tweet(tweet, rule_tags, 0)
    return list(parser.out.values())


class _V2:
    def __init__(self, matcher: ChatMatcher, now_ms: int, includes: dict[str, Any], data: list[Any]) -> None:
        self.matcher, self.now_ms = matcher, now_ms
        self.users = _index(includes.get("users"), "id")
        self.media = _index(includes.get("media"), "media_key")
        self.tweets = _index(includes.get("tweets"), "id") | _index(data, "id")
        self.out: dict[str, Event] = {}

    def key_of(self, tweet_id: str) -> str:
        """The key of a tweet: the first id of its edit history when the payload holds it."""
        known = self.tweets.get(tweet_id)
        history = known.get("edit_history_tweet_ids") if known else None
        if isinstance(history, list) and history and isinstance(history[0], str):
            return f"x:{id_of(history[0], 'edit_history_tweet_ids')}"
        return f"x:{tweet_id}"

    def tweet(self, tweet: dict[str, Any], extra: list[str], depth: int) -> tuple[Post, list[str]]:
        """The tweet as a Post (added to ``out``, as an Edit when it is a later version) and its hashtags."""
        tweet_id = id_of(tweet.get("id"), "data.id")
        refs = _refs(tweet.get("referenced_tweets"))
        author_id = tweet.get("author_id")
        user = self.users.get(str(author_id), {})
        handle = user.get("username") if isinstance(user.get("username"), str) and user["username"] else None
        raw, entities = tweet.get("text"), tweet.get("entities")
        if not isinstance(raw, str):
            raise ValueError(f"tweet {tweet_id} has no 'text' string")
        note = tweet.get("note_tweet")  # a long post: ``text`` is cut at 280 characters, the note holds it whole
        if isinstance(note, dict) and isinstance(note.get("text"), str):
            raw, entities = note["text"], note.get("entities")
        text = unescape(_v2_display(raw, entities, refs))
        tags = hashtags_of(entities, "tag", unescape(raw))
        attachments = self._attachments(tweet)
        boost_of = reply_to = quote_of = quote_url = None
        if "retweeted" in refs:
            boost_of = self.key_of(refs["retweeted"])
            original = self.tweets.get(refs["retweeted"]) if depth < MAX_DEPTH else None
            if original is not None:
                orig, orig_tags = self.tweet(original, extra, depth + 1)  # X matched the retweet on its text
                text = f"RT @{orig.author.handle}: {orig.text}"
                tags, attachments = tags + orig_tags, [a.to_dict() for a in orig.attachments]
                quote_of, quote_url = orig.quote_of, orig.quote_url
        else:
            if "quoted" in refs:
                quote_of, quote_url = self.quote(refs["quoted"], entities, depth)
            if "replied_to" in refs:
                reply_to = self.key_of(refs["replied_to"])
        key = self.key_of(tweet_id)
        edited = key != f"x:{tweet_id}"
        post = build_post(
            key=key,
            chats=self.matcher.chats(tags, extra),
            # Without the author_id expansion the author is unresolved: its id, marked, and no name (never a guess).
            handle=handle or f"{UNRESOLVED}{author_id if isinstance(author_id, str | int) and author_id else '?'}",
            name=user.get("name") if handle else "",
            avatar=user.get("profile_image_url"),
            text=text,
            url=f"{WEB}/{handle}/status/{tweet_id}" if handle else f"{WEB}/i/web/status/{tweet_id}",
            # an edit keeps the post's creation time: when its first id was made, to the second like created_at
            created=whole_second(snowflake_ms(key[2:])) if edited else _v2_created(tweet.get("created_at"), tweet_id),
            at=self.now_ms,
            lang=tweet.get("lang"),
            reply_to=reply_to,
            boost_of=boost_of,
            attachments=attachments,
            quote_of=quote_of,
            quote_url=quote_url,
        )
        self.out.setdefault(key, Edit(post) if edited else post)
        return post, tags

    def quote(self, quoted_id: str, entities: Any, depth: int) -> tuple[str, str]:
        """The key and URL of the quoted tweet; when ``includes`` holds it, it is added to ``out`` first."""
        quoted = self.tweets.get(quoted_id)
        if quoted is not None and depth < MAX_DEPTH:
            post, _ = self.tweet(quoted, [], depth + 1)
            return self.key_of(quoted_id), post.url
        return self.key_of(quoted_id), quote_link(None, quoted_id, entities)

    def _attachments(self, tweet: dict[str, Any]) -> list[dict[str, Any]]:
        """The media of ``attachments.media_keys`` found in ``includes.media``, in the Post's attachment shape: ``url``
        (a video or GIF has none: its ``preview_image_url``), type, ``alt_text``, width and height."""
        attachments = tweet.get("attachments")
        keys = attachments.get("media_keys") if isinstance(attachments, dict) else None
        found: dict[str, dict[str, Any]] = {}
        for media_key in keys if isinstance(keys, list) else []:
            item = self.media.get(str(media_key), {})
            url, preview = item.get("url"), item.get("preview_image_url")
            url = url if isinstance(url, str) and url else preview
            if isinstance(url, str) and url:
                found.setdefault(
                    url,
                    {
                        "kind": media_kind(item.get("type")),
                        "url": url,
                        "preview": http_url(preview),
                        "alt": alt_text(item.get("alt_text")),
                        "width": pixels(item.get("width")),
                        "height": pixels(item.get("height")),
                    },
                )
        return list(found.values())


def _v2_display(text: str, entities: Any, refs: dict[str, str]) -> str:
    """What X shows of a v2 tweet: no leading reply @mentions, no trailing media or quoted-tweet link."""
    if "replied_to" in refs:
        text = _REPLY_MENTIONS.sub("", text, count=1)
    urls = entities.get("urls") if isinstance(entities, dict) else None
    hidden = set()
    for url in urls if isinstance(urls, list) else []:
        if not isinstance(url, dict) or not isinstance(url.get("url"), str) or not url["url"]:
            continue
        expanded, display = str(url.get("expanded_url", "")), str(url.get("display_url", ""))
        quoted = "quoted" in refs and expanded.rstrip("/").endswith(f"/status/{refs['quoted']}")
        if url.get("media_key") or display.startswith(("pic.twitter.com/", "pic.x.com/")) or quoted:
            hidden.add(url["url"])
    text = text.rstrip()
    while hidden:
        cut = next((u for u in hidden if text.endswith(u)), None)
        if cut is None:
            break
        text = text[: -len(cut)].rstrip()
    return text


def _v2_created(value: Any, tweet_id: str) -> int:
    if not isinstance(value, str):
        return whole_second(snowflake_ms(tweet_id))
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"bad created_at {value[:40]!r}") from None
    return int(moment.replace(tzinfo=moment.tzinfo or UTC).timestamp() * 1000)


def _compliance_record(record: dict[str, Any]) -> list[Event]:
    """A compliance job line: {"id", "action": "delete", "reason", ...}."""
    action = record.get("action")
    if action != "delete":
        raise Ignored(f"compliance_{action}" if isinstance(action, str) and action.isidentifier() else "compliance")
    return [Retraction(f"x:{id_of(record.get('id'), 'id')}", SOURCE)]


def _compliance_event(data: dict[str, Any]) -> list[Event]:
    """A compliance stream event: {"data": {"delete": {"tweet": {"id": ...}}}} and its siblings."""
    (name, body), *_ = data.items()
    if name == "delete":
        tweet = body.get("tweet") if isinstance(body, dict) else None
        return [
            Retraction(f"x:{id_of(tweet.get('id') if isinstance(tweet, dict) else None, 'delete.tweet.id')}", SOURCE)
        ]
    if isinstance(body, dict) and name.isidentifier():
        raise Ignored(f"compliance_{name}")
    raise ValueError("'data' holds neither a tweet nor a compliance event")


def _refs(value: Any) -> dict[str, str]:
    """referenced_tweets as {type: id}."""
    refs: dict[str, str] = {}
    for ref in value if isinstance(value, list) else []:
        if isinstance(ref, dict) and isinstance(ref.get("type"), str):
            refs.setdefault(ref["type"], id_of(ref.get("id"), "referenced_tweets.id"))
    return refs


def _index(items: Any, field: str) -> dict[str, dict[str, Any]]:
    if items is None:
        return {}
    if not isinstance(items, list):
        raise ValueError(f"includes of '{field}' objects must be a list")
    return {str(item[field]): item for item in items if isinstance(item, dict) and field in item}
