"""X (Twitter) payloads: v1.1 statuses and stream notices, API v2 responses, filtered-stream and compliance messages.

``parse_v1`` and ``parse_v2`` are the one place an X payload becomes events; both are pure
(the ingest time comes in as ``now_ms``). A retweet yields the original as its own Post,
then the retweet with ``boost_of``; a quote yields the quoted tweet (when the payload holds
it), then the quoting one: originals always come first. Text is what X displays: the
v1.1 ``display_text_range`` (leading reply @mentions and the trailing media or quote link
cut), the same cut made from the entities in v2, and X's HTML escapes (``&amp; &lt; &gt;``)
undone. A v2 tweet whose ``edit_history_tweet_ids`` starts with another id is an ``Edit``
of ``x:<first id>``: the key of a tweet is always the id of its first version. The live
follower ``XSource`` (filtered stream, rules, reconnects) lives in ``x_stream``; ``XSource`` is
importable from here too, loaded on first use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypeGuard

from mixer.codec import loads
from mixer.ingest.hashtags import ChatMatcher, extract_hashtags
from mixer.models import Edit, Event, Ignored, Post, Retraction

if TYPE_CHECKING:
    from mixer.ingest.sources.x_stream import XSource as XSource  # re-exported (see __getattr__ below)

SOURCE = "x"
WEB = "https://twitter.com"
_SNOWFLAKE_EPOCH_MS = 1288834974657  # X's snowflake ids hold ms since this instant in their upper bits
_MAX_DEPTH = 3  # retweet -> original -> quoted: deeper references are kept as keys only, so a loop cannot recurse
_ESCAPES = re.compile(r"&(amp|lt|gt);")
_UNESCAPE = {"amp": "&", "lt": "<", "gt": ">"}
_REPLY_MENTIONS = re.compile(r"^(?:@\w{1,50}(?:\s+|$))+")
_MONTHS = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}
# v1.1 stream messages that are not statuses; each is counted as skipped:<name>_notice.
_V1_NOTICES = ("limit", "warning", "scrub_geo", "status_withheld", "user_withheld", "disconnect", "event", "friends")


def load_json(raw: bytes | str) -> dict[str, Any]:
    """One payload decoded as a JSON object; ValueError naming what is wrong (not UTF-8, not JSON, not an object)."""
    data = loads(raw)
    if not isinstance(data, dict):
        raise ValueError(f"not a JSON object but {type(data).__name__}")
    return data


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
            return [Retraction(f"x:{_id(status.get('id_str') or status.get('id'), 'delete.status.id')}", SOURCE)]
        for notice in _V1_NOTICES:
            if notice in data:
                raise Ignored(f"{notice}_notice")
    out: dict[str, Event] = {}
    _V1(matcher, now_ms, out).status(data, 0)
    return list(out.values())


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


def snowflake_ms(tweet_id: str | int) -> int:
    """When a tweet with this snowflake id was created, in ms since the epoch."""
    return (int(tweet_id) >> 22) + _SNOWFLAKE_EPOCH_MS


# v1.1


class _V1:
    def __init__(self, matcher: ChatMatcher, now_ms: int, out: dict[str, Event]) -> None:
        self.matcher, self.now_ms, self.out = matcher, now_ms, out

    def status(self, status: Any, depth: int) -> tuple[Post, list[str]]:
        """The status as a Post (added to ``out`` after any original it carries) and its hashtags."""
        if not isinstance(status, dict):
            raise ValueError("a status must be an object")
        tweet_id = _id(status.get("id_str") or status.get("id"), "id_str")
        user = status.get("user")
        if not isinstance(user, dict):
            raise ValueError(f"status {tweet_id} has no 'user' object")
        handle = user.get("screen_name")
        if not isinstance(handle, str) or not handle:
            raise ValueError(f"status {tweet_id} has no user.screen_name")
        text, tags = _v1_text(status)
        media = _v1_media(status)
        boost_of = reply_to = None
        original = status.get("retweeted_status") if depth < _MAX_DEPTH else None
        if isinstance(original, dict):
            orig, orig_tags = self.status(original, depth + 1)
            text = f"RT @{orig.author.handle}: {orig.text}"
            tags, media, boost_of = tags + orig_tags, list(orig.media), orig.key
        else:
            if isinstance(status.get("quoted_status"), dict) and depth < _MAX_DEPTH:
                self.status(status["quoted_status"], depth + 1)
            parent = status.get("in_reply_to_status_id_str") or status.get("in_reply_to_status_id")
            reply_to = f"x:{_id(parent, 'in_reply_to_status_id_str')}" if parent else None
        post = _post(
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
            media=media,
        )
        self.out.setdefault(post.key, post)
        return post, tags


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
    text = _unescape(raw)
    return text, _tags(entities, "text", text)


def _v1_media(status: dict[str, Any]) -> list[str]:
    ext = status.get("extended_tweet")
    holders = [ext.get("extended_entities"), ext.get("entities")] if isinstance(ext, dict) else []
    holders += [status.get("extended_entities"), status.get("entities")]
    for holder in holders:
        items = holder.get("media") if isinstance(holder, dict) else None
        if isinstance(items, list) and items:
            urls = (m.get("media_url_https") or m.get("media_url") for m in items if isinstance(m, dict))
            return list(dict.fromkeys(u for u in urls if isinstance(u, str) and u))
    return []


def _v1_created(status: dict[str, Any], tweet_id: str) -> int:
    stamp = status.get("timestamp_ms")
    if isinstance(stamp, str) and stamp.isdigit():
        return int(stamp)
    created = status.get("created_at")
    if isinstance(created, str):
        return _twitter_date(created)
    return _whole_second(snowflake_ms(tweet_id))


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


# v2


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
            return f"x:{_id(history[0], 'edit_history_tweet_ids')}"
        return f"x:{tweet_id}"

    def tweet(self, tweet: dict[str, Any], extra: list[str], depth: int) -> tuple[Post, list[str]]:
        """The tweet as a Post (added to ``out``, as an Edit when it is a later version) and its hashtags."""
        tweet_id = _id(tweet.get("id"), "data.id")
        refs = _refs(tweet.get("referenced_tweets"))
        user = self.users.get(str(tweet.get("author_id")), {})
        handle = user.get("username") if isinstance(user.get("username"), str) and user["username"] else None
        raw, entities = tweet.get("text"), tweet.get("entities")
        if not isinstance(raw, str):
            raise ValueError(f"tweet {tweet_id} has no 'text' string")
        note = tweet.get("note_tweet")  # a long post: ``text`` is cut at 280 characters, the note holds it whole
        if isinstance(note, dict) and isinstance(note.get("text"), str):
            raw, entities = note["text"], note.get("entities")
        text = _unescape(_v2_display(raw, entities, refs))
        tags = _tags(entities, "tag", _unescape(raw))
        media = self._media(tweet)
        boost_of = reply_to = None
        if "retweeted" in refs:
            boost_of = self.key_of(refs["retweeted"])
            original = self.tweets.get(refs["retweeted"]) if depth < _MAX_DEPTH else None
            if original is not None:
                orig, orig_tags = self.tweet(original, extra, depth + 1)  # X matched the retweet on its text
                text = f"RT @{orig.author.handle}: {orig.text}"
                tags, media = tags + orig_tags, list(orig.media)
        else:
            if "quoted" in refs and refs["quoted"] in self.tweets and depth < _MAX_DEPTH:
                self.tweet(self.tweets[refs["quoted"]], [], depth + 1)
            if "replied_to" in refs:
                reply_to = self.key_of(refs["replied_to"])
        key = self.key_of(tweet_id)
        edited = key != f"x:{tweet_id}"
        post = _post(
            key=key,
            chats=self.matcher.chats(tags, extra),
            handle=handle or str(tweet.get("author_id") or "i"),
            name=user.get("name"),
            avatar=user.get("profile_image_url"),
            text=text,
            url=f"{WEB}/{handle}/status/{tweet_id}" if handle else f"{WEB}/i/web/status/{tweet_id}",
            # an edit keeps the post's creation time: when its first id was made, to the second like created_at
            created=_whole_second(snowflake_ms(key[2:])) if edited else _v2_created(tweet.get("created_at"), tweet_id),
            at=self.now_ms,
            lang=tweet.get("lang"),
            reply_to=reply_to,
            boost_of=boost_of,
            media=media,
        )
        self.out.setdefault(key, Edit(post) if edited else post)
        return post, tags

    def _media(self, tweet: dict[str, Any]) -> list[str]:
        attachments = tweet.get("attachments")
        keys = attachments.get("media_keys") if isinstance(attachments, dict) else None
        urls = []
        for media_key in keys if isinstance(keys, list) else []:
            item = self.media.get(str(media_key), {})
            url = item.get("url") or item.get("preview_image_url")
            if isinstance(url, str) and url:
                urls.append(url)
        return list(dict.fromkeys(urls))


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
        return _whole_second(snowflake_ms(tweet_id))
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
    return [Retraction(f"x:{_id(record.get('id'), 'id')}", SOURCE)]


def _compliance_event(data: dict[str, Any]) -> list[Event]:
    """A compliance stream event: {"data": {"delete": {"tweet": {"id": ...}}}} and its siblings."""
    (name, body), *_ = data.items()
    if name == "delete":
        tweet = body.get("tweet") if isinstance(body, dict) else None
        return [Retraction(f"x:{_id(tweet.get('id') if isinstance(tweet, dict) else None, 'delete.tweet.id')}", SOURCE)]
    if isinstance(body, dict) and name.isidentifier():
        raise Ignored(f"compliance_{name}")
    raise ValueError("'data' holds neither a tweet nor a compliance event")


# shared


def _post(handle: str, name: Any, avatar: Any, lang: Any, chats: tuple[str, ...], **fields: Any) -> Post:
    """A validated Post (``Post.from_dict`` rejects lone surrogates and the like, which JSON escapes can carry)."""
    name = name if isinstance(name, str) else ""
    author = {"handle": handle, "name": name, "avatar": avatar if isinstance(avatar, str) and avatar else None}
    return Post.from_dict({"source": SOURCE, "author": author, "chats": list(chats), "lang": _lang(lang), **fields})


def _id(value: Any, label: str) -> str:
    """A tweet id as its decimal string; ValueError unless it is one."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return str(value)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 30:
        return value
    raise ValueError(f"'{label}' must be a tweet id, got {str(value)[:30]!r}")


def _refs(value: Any) -> dict[str, str]:
    """referenced_tweets as {type: id}."""
    refs: dict[str, str] = {}
    for ref in value if isinstance(value, list) else []:
        if isinstance(ref, dict) and isinstance(ref.get("type"), str):
            refs.setdefault(ref["type"], _id(ref.get("id"), "referenced_tweets.id"))
    return refs


def _index(items: Any, field: str) -> dict[str, dict[str, Any]]:
    if items is None:
        return {}
    if not isinstance(items, list):
        raise ValueError(f"includes of '{field}' objects must be a list")
    return {str(item[field]): item for item in items if isinstance(item, dict) and field in item}


def _tags(entities: Any, field: str, text: str) -> list[str]:
    """Hashtags from the entities (``text`` in v1.1, ``tag`` in v2); from the text when there are no entities."""
    if not isinstance(entities, dict):
        return extract_hashtags(text)
    items = entities.get("hashtags")
    found: Iterable[Any] = items if isinstance(items, list) else []
    return [h[field] for h in found if isinstance(h, dict) and isinstance(h.get(field), str)]


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


def _whole_second(ms: int) -> int:
    """A snowflake time cut to the second, as ``created_at`` gives it, so both sources of a time agree."""
    return ms - ms % 1000


def _unescape(text: str) -> str:
    """X escapes exactly &, < and > in tweet text; undo those three in one pass (so '&amp;lt;' stays '&lt;')."""
    return _ESCAPES.sub(lambda m: _UNESCAPE[m.group(1)], text) if "&" in text else text


def _lang(value: Any) -> str | None:
    """A language code, or None for X's 'und', 'zxx' and private-use codes (qam, qct, qht, qme, qst)."""
    if not isinstance(value, str) or not value or value in ("und", "zxx"):
        return None
    if len(value) == 3 and value[0] == "q" and "a" <= value[1] <= "t":
        return None
    return value


def __getattr__(name: str) -> Any:
    # The follower lives in x_stream (which imports this module); loaded on first use, so no import cycle.
    if name == "XSource":
        from mixer.ingest.sources.x_stream import XSource

        return XSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
