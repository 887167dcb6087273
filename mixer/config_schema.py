"""What ``mixer.toml`` may say: each section and key, the ``Settings`` field it sets and the check its value passes.

``SCHEMA`` maps every key of every ``[section]`` to a ``Field`` (attribute, type, check, and the
words for "must be ..."); ``check_value`` and ``parse_text`` turn a TOML value or a ``MIXER_*``
string into the field's type, or None; ``chat_from_table`` and ``profiles_from_tables`` check
``[[chats]]`` and ``[[profiles]]`` tables and fill in their defaults (title, ``PALETTE`` colour).
A bad value raises ``BadValue`` naming only its dotted key. Pure: finding and reading the file,
line numbers, the environment and rendering back to TOML are ``config``; the dataclasses and
``ConfigError`` are ``settings``.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mixer.models import normalize_tag
from mixer.settings import ChatSettings, Profile

# Badge colours for chats that name none: distinct from each other, readable on a dark background.
PALETTE = ("#4fc3f7", "#ffb74d", "#81c784", "#f06292", "#ba68c8", "#fff176", "#4db6ac", "#e57373")

_TAG = re.compile(r"^[^\s#]{1,100}$")  # the rule Post.from_dict applies to chat tags
_TAG_WANT = "a hashtag without spaces or '#' inside (1-100 characters)"
_COLOUR = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
_PREFIX = re.compile(r"^[^\s{}]+$")  # braces would break the keys' {feed} hash tag


def _tag(raw: str) -> str | None:
    tag = normalize_tag(raw)
    return tag if _TAG.match(tag) else None


_URL = re.compile(r"^https?://[^\s/]+")
_LINK = re.compile(r"^https?://[^\s/]+(?:/\S*)?$")  # a whole URL, as a QR code would carry it
SECRETS = frozenset(
    {"mastodon_token", "x_bearer_token", "webhook_token", "moderation_token"}
)  # never printed by render_settings


def _nonempty(s: str) -> bool:
    return bool(s.strip())


@dataclass(frozen=True, slots=True)
class Field:
    """One key of a section: the ``Settings`` attribute it sets, its type and the check its value passes."""

    attr: str  # Settings attribute
    kind: type[str | int | float | bool | tuple[str, ...]]  # an int is accepted for a float; a bool never for a number
    want: str  # completes "must be ..."
    ok: Callable[[Any], bool] = lambda _: True
    norm: Callable[[str], str | None] = lambda s: s  # normalises a string; None rejects it


SCHEMA: dict[str, dict[str, Field]] = {
    "event": {
        "name": Field("event_name", str, "a non-empty string", _nonempty),
        "hashtag": Field("event_hashtag", str, _TAG_WANT, norm=_tag),
        "link": Field(
            "event_link",
            str,
            "empty (no QR code) or an http(s) URL without spaces",
            lambda s: s == "" or bool(_LINK.match(s)),
        ),
        "follow": Field(
            "follow", str, "'always', 'scheduled' or 'never'", lambda s: s in ("always", "scheduled", "never")
        ),
        "follow_margin_minutes": Field("follow_margin_minutes", float, "a number of minutes >= 0", lambda v: v >= 0),
    },
    "redis": {
        "url": Field(
            "redis_url",
            str,
            "empty (embedded Redis) or a redis://, rediss:// or unix:// URL",
            lambda s: s == "" or s.startswith(("redis://", "rediss://", "unix://")),
        ),
        "prefix": Field(
            "key_prefix", str, "a non-empty string without spaces or braces", lambda s: bool(_PREFIX.match(s))
        ),
        "chat_maxlen": Field("chat_maxlen", int, "a positive integer", lambda v: v > 0),
        "feed_maxlen": Field("feed_maxlen", int, "a positive integer", lambda v: v > 0),
    },
    "server": {
        "host": Field("host", str, "a non-empty string", _nonempty),
        "port": Field("port", int, "an integer from 1 to 65535", lambda v: 1 <= v <= 65535),
        "backlog_bytes": Field("backlog_bytes", int, "a positive integer", lambda v: v > 0),
        "cutoff_seconds": Field("cutoff_seconds", float, "a positive number", lambda v: v > 0),
        "heartbeat_seconds": Field("heartbeat_seconds", float, "a positive number", lambda v: v > 0),
        "stats_seconds": Field(
            "stats_seconds", float, "a number of seconds from 0.1 to 3600", lambda v: 0.1 <= v <= 3600
        ),
        "origins": Field(
            "origins", tuple, "a list of origins like 'https://blog.example'", lambda v: all(_URL.match(u) for u in v)
        ),
        "max_connections": Field("max_connections", int, "a positive integer", lambda v: v > 0),
        "max_per_ip": Field("max_per_ip", int, "a positive integer", lambda v: v > 0),
    },
    "merge": {
        "window_ms": Field("window_ms", int, "an integer >= 0", lambda v: v >= 0),
        "seen_max": Field("seen_max", int, "a positive integer", lambda v: v > 0),
    },
    "mastodon": {
        "instances": Field(
            "mastodon_instances", tuple, "a list of https:// instance URLs", lambda v: all(_URL.match(u) for u in v)
        ),
        "token": Field("mastodon_token", str, "a string (empty: poll without a token)"),
        "poll_seconds": Field("mastodon_poll_seconds", float, "a positive number", lambda v: v > 0),
    },
    "bluesky": {
        "enabled": Field("bluesky_enabled", bool, "true or false"),
        "endpoint": Field(
            "bluesky_endpoint", str, "a ws:// or wss:// URL", lambda s: s.startswith(("ws://", "wss://"))
        ),
        "profiles": Field("bluesky_profiles", bool, "true or false"),
        "appview": Field(
            "bluesky_appview", str, "an http(s) URL", lambda s: bool(_URL.match(s)), norm=lambda s: s.rstrip("/")
        ),
        "profile_ttl_seconds": Field(
            "bluesky_profile_ttl_seconds",
            float,
            "a number of seconds from 1 to 2592000 (30 days)",
            lambda v: 1 <= v <= 2_592_000,
        ),
    },
    "x": {
        "bearer_token": Field("x_bearer_token", str, "a string (empty: X is not followed)"),
        "api": Field("x_api", str, "an http(s) URL", lambda s: bool(_URL.match(s))),
    },
    "webhook": {
        "token": Field("webhook_token", str, "a string (empty: POST /api/posts is off)"),
    },
    "moderation": {
        "token": Field("moderation_token", str, "a string (empty: moderation is off)"),
        "words": Field("moderation_words", tuple, "a list of words or phrases"),
        "accounts": Field("moderation_accounts", tuple, "a list of accounts like 'x:handle' or 'handle'"),
        "profanity": Field("moderation_profanity", bool, "true or false"),
        "approval": Field("moderation_approval", bool, "true or false"),
    },
    "demo": {
        "file": Field("demo_file", str, "a non-empty path", _nonempty),
        "speed": Field("demo_speed", float, "a number >= 0", lambda v: v >= 0),
        "max_gap": Field("demo_max_gap", float, "a number >= 0", lambda v: v >= 0),
    },
}
SECTIONS = (
    "event",
    "chats",
    "profiles",
    *(s for s in SCHEMA if s != "event"),
)  # also the order render_settings writes
_CHAT_KEYS = ("tag", "title", "colour", "schedule", "topic", "hosts", "follow")


class BadValue(Exception):
    """A bad value at a dotted key; the caller knows the file and turns it into a ConfigError."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(key, reason)
        self.key = key
        self.reason = reason


def check_value(f: Field, value: object) -> Any:
    """The value as the field's type, normalised, or None if it has the wrong type or is out of range."""
    if f.kind is bool:
        return value if isinstance(value, bool) else None
    if f.kind is tuple:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v.strip() for v in value):
            return None
        value = tuple(v.strip().rstrip("/") for v in value)
        return value if f.ok(value) else None
    if isinstance(value, bool):
        return None
    if f.kind is float and isinstance(value, int | float):
        value = float(value)
        if not math.isfinite(value):
            return None
    elif f.kind is str and isinstance(value, str):
        value = f.norm(value)
    elif not (f.kind is int and isinstance(value, int)):
        return None
    return value if value is not None and f.ok(value) else None


def parse_text(f: Field, text: str) -> Any:
    """An environment string as the field's type (then checked like a file value), or None."""
    if f.kind is bool:
        flag = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text.strip().lower())
        return check_value(f, flag)
    if f.kind is tuple:
        return check_value(f, [t for t in text.split(",") if t.strip()])
    try:
        return check_value(f, f.kind(text))
    except ValueError:
        return None


def unknown_name(what: str, key: str, known: list[str]) -> str:
    """The reason for a name that is not one of ``known``, suggesting the closest one if any is close."""
    close = difflib.get_close_matches(key, known, n=1)
    return f"unknown {what} {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


def chat_from_table(key: str, index: int, table: Mapping[str, object]) -> ChatSettings:
    """One chat with its defaults filled in: title ``#tag``, colour from PALETTE by index, ``#rgb`` expanded."""
    for name in table:
        if name not in _CHAT_KEYS:
            raise BadValue(f"{key}.{name}", unknown_name("key", name, list(_CHAT_KEYS)))
    if "tag" not in table:
        raise BadValue(f"{key}.tag", "is required (the chat's hashtag)")
    raw = table["tag"]
    tag = _tag(raw) if isinstance(raw, str) else None
    if tag is None:
        raise BadValue(f"{key}.tag", f"must be {_TAG_WANT}, got {raw!r}")
    title = table.get("title", f"#{tag}")
    if not isinstance(title, str) or not title.strip():
        raise BadValue(f"{key}.title", f"must be a non-empty string, got {title!r}")
    colour = table.get("colour", PALETTE[index % len(PALETTE)])
    if not isinstance(colour, str) or not _COLOUR.match(colour):
        raise BadValue(f"{key}.colour", f"must be a colour '#rgb' or '#rrggbb', got {colour!r}")
    if len(colour) == 4:
        colour = "#" + "".join(c * 2 for c in colour[1:])
    schedule = table.get("schedule", "")
    if not isinstance(schedule, str):
        raise BadValue(f"{key}.schedule", f"must be a string like 'Mon 20:00-22:00 America/New_York', got {schedule!r}")
    if schedule.strip():
        from mixer.schedule import Schedule

        try:
            schedule = str(Schedule.parse(schedule))
        except ValueError as exc:
            raise BadValue(f"{key}.schedule", str(exc)) from None
    topic = table.get("topic", "")
    if not isinstance(topic, str):
        raise BadValue(f"{key}.topic", f"must be a string, got {topic!r}")
    hosts = table.get("hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise BadValue(f"{key}.hosts", f"must be a list of names, got {hosts!r}")
    follow = table.get("follow", "")
    if follow not in ("", "always", "scheduled", "never"):
        raise BadValue(f"{key}.follow", f"must be 'always', 'scheduled' or 'never', got {follow!r}")
    if follow == "scheduled" and not schedule.strip():
        raise BadValue(f"{key}.follow", "is 'scheduled' but the chat has no schedule")
    return ChatSettings(
        tag=tag,
        title=title,
        colour=colour.lower(),
        schedule=schedule.strip(),
        topic=topic,
        hosts=tuple(hosts),
        follow=str(follow),
    )


_PROFILE_KEYS = ("name", "rate", "burst", "max_wait", "max_queue", "weights")


def profiles_from_tables(body: object) -> tuple[Profile, ...]:
    """``[[profiles]]`` tables as Profiles; the checks are Profile's own, reported at the table's key."""
    if not isinstance(body, list) or not all(isinstance(t, dict) for t in body):
        raise BadValue("profiles", "must be an array of tables ([[profiles]])")
    out: list[Profile] = []
    for i, table in enumerate(body):
        for name in table:
            if name not in _PROFILE_KEYS:
                raise BadValue(f"profiles[{i}].{name}", unknown_name("key", name, list(_PROFILE_KEYS)))
        if not isinstance(table.get("name"), str) or not _tag(table["name"]) or table["name"] == "full":
            raise BadValue(f"profiles[{i}].name", "must be a short name other than 'full' (which is always there)")
        try:
            out.append(Profile(**table))
        except (TypeError, ValueError) as exc:
            raise BadValue(f"profiles[{i}]", str(exc)) from None
    if len({p.name for p in out}) < len(out):
        raise BadValue("profiles", "two profiles share a name")
    return tuple(out)
