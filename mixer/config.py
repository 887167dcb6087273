"""Loading ``Settings`` from a TOML file and ``MIXER_*`` environment, and writing them back as TOML.

This is the only module that reads the config file or ``MIXER_*`` values; the dataclasses
and ``ConfigError`` live in ``settings``. Every problem is raised as one ``ConfigError``
naming file, line (found by a small text scan, since tomllib reports no positions), dotted
key and reason. What ``render_settings`` writes, ``load_settings`` reads back unchanged.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixer.models import normalize_tag
from mixer.settings import PACKAGE_DIR, ChatSettings, ConfigError, Profile, Settings

__all__ = ["BUNDLED_CONFIG", "PALETTE", "ConfigError", "find_config", "load_settings", "render_settings"]

BUNDLED_CONFIG = PACKAGE_DIR / "data" / "mixer.toml"
ENV_FILE = "environment"  # ConfigError.file for a bad MIXER_* value
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
class _Field:
    attr: str  # Settings attribute
    kind: type[str | int | float | bool | tuple[str, ...]]  # an int is accepted for a float; a bool never for a number
    want: str  # completes "must be ..."
    ok: Callable[[Any], bool] = lambda _: True
    norm: Callable[[str], str | None] = lambda s: s  # normalises a string; None rejects it


_SCHEMA: dict[str, dict[str, _Field]] = {
    "event": {
        "name": _Field("event_name", str, "a non-empty string", _nonempty),
        "hashtag": _Field("event_hashtag", str, _TAG_WANT, norm=_tag),
        "link": _Field(
            "event_link",
            str,
            "empty (no QR code) or an http(s) URL without spaces",
            lambda s: s == "" or bool(_LINK.match(s)),
        ),
        "follow": _Field(
            "follow", str, "'always', 'scheduled' or 'never'", lambda s: s in ("always", "scheduled", "never")
        ),
        "follow_margin_minutes": _Field("follow_margin_minutes", float, "a number of minutes >= 0", lambda v: v >= 0),
    },
    "redis": {
        "url": _Field(
            "redis_url",
            str,
            "empty (embedded Redis) or a redis://, rediss:// or unix:// URL",
            lambda s: s == "" or s.startswith(("redis://", "rediss://", "unix://")),
        ),
        "prefix": _Field(
            "key_prefix", str, "a non-empty string without spaces or braces", lambda s: bool(_PREFIX.match(s))
        ),
        "chat_maxlen": _Field("chat_maxlen", int, "a positive integer", lambda v: v > 0),
        "feed_maxlen": _Field("feed_maxlen", int, "a positive integer", lambda v: v > 0),
    },
    "server": {
        "host": _Field("host", str, "a non-empty string", _nonempty),
        "port": _Field("port", int, "an integer from 1 to 65535", lambda v: 1 <= v <= 65535),
        "backlog_bytes": _Field("backlog_bytes", int, "a positive integer", lambda v: v > 0),
        "cutoff_seconds": _Field("cutoff_seconds", float, "a positive number", lambda v: v > 0),
        "heartbeat_seconds": _Field("heartbeat_seconds", float, "a positive number", lambda v: v > 0),
        "stats_seconds": _Field(
            "stats_seconds", float, "a number of seconds from 0.1 to 3600", lambda v: 0.1 <= v <= 3600
        ),
        "origins": _Field(
            "origins", tuple, "a list of origins like 'https://blog.example'", lambda v: all(_URL.match(u) for u in v)
        ),
        "max_connections": _Field("max_connections", int, "a positive integer", lambda v: v > 0),
        "max_per_ip": _Field("max_per_ip", int, "a positive integer", lambda v: v > 0),
    },
    "merge": {
        "window_ms": _Field("window_ms", int, "an integer >= 0", lambda v: v >= 0),
        "seen_max": _Field("seen_max", int, "a positive integer", lambda v: v > 0),
    },
    "mastodon": {
        "instances": _Field(
            "mastodon_instances", tuple, "a list of https:// instance URLs", lambda v: all(_URL.match(u) for u in v)
        ),
        "token": _Field("mastodon_token", str, "a string (empty: poll without a token)"),
        "poll_seconds": _Field("mastodon_poll_seconds", float, "a positive number", lambda v: v > 0),
    },
    "bluesky": {
        "enabled": _Field("bluesky_enabled", bool, "true or false"),
        "endpoint": _Field(
            "bluesky_endpoint", str, "a ws:// or wss:// URL", lambda s: s.startswith(("ws://", "wss://"))
        ),
    },
    "x": {
        "bearer_token": _Field("x_bearer_token", str, "a string (empty: X is not followed)"),
        "api": _Field("x_api", str, "an http(s) URL", lambda s: bool(_URL.match(s))),
    },
    "webhook": {
        "token": _Field("webhook_token", str, "a string (empty: POST /api/posts is off)"),
    },
    "moderation": {
        "token": _Field("moderation_token", str, "a string (empty: moderation is off)"),
        "words": _Field("moderation_words", tuple, "a list of words or phrases"),
        "accounts": _Field("moderation_accounts", tuple, "a list of accounts like 'x:handle' or 'handle'"),
        "profanity": _Field("moderation_profanity", bool, "true or false"),
        "approval": _Field("moderation_approval", bool, "true or false"),
    },
    "demo": {
        "file": _Field("demo_file", str, "a non-empty path", _nonempty),
        "speed": _Field("demo_speed", float, "a number >= 0", lambda v: v >= 0),
        "max_gap": _Field("demo_max_gap", float, "a number >= 0", lambda v: v >= 0),
    },
}
_SECTIONS = (
    "event",
    "chats",
    "profiles",
    *(s for s in _SCHEMA if s != "event"),
)  # also the order render_settings writes
_CHAT_KEYS = ("tag", "title", "colour", "schedule", "topic", "hosts", "follow")


class _Bad(Exception):
    """A bad value at a dotted key; the caller knows the file and turns it into a ConfigError."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(key, reason)
        self.key = key
        self.reason = reason


def _check(f: _Field, value: object) -> Any:
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


def _parse_text(f: _Field, text: str) -> Any:
    """An environment string as the field's type (then checked like a file value), or None."""
    if f.kind is bool:
        flag = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text.strip().lower())
        return _check(f, flag)
    if f.kind is tuple:
        return _check(f, [t for t in text.split(",") if t.strip()])
    try:
        return _check(f, f.kind(text))
    except ValueError:
        return None


def _unknown(what: str, key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f"unknown {what} {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


def _chat(key: str, index: int, table: Mapping[str, object]) -> ChatSettings:
    """One chat with its defaults filled in: title ``#tag``, colour from PALETTE by index, ``#rgb`` expanded."""
    for name in table:
        if name not in _CHAT_KEYS:
            raise _Bad(f"{key}.{name}", _unknown("key", name, list(_CHAT_KEYS)))
    if "tag" not in table:
        raise _Bad(f"{key}.tag", "is required (the chat's hashtag)")
    raw = table["tag"]
    tag = _tag(raw) if isinstance(raw, str) else None
    if tag is None:
        raise _Bad(f"{key}.tag", f"must be {_TAG_WANT}, got {raw!r}")
    title = table.get("title", f"#{tag}")
    if not isinstance(title, str) or not title.strip():
        raise _Bad(f"{key}.title", f"must be a non-empty string, got {title!r}")
    colour = table.get("colour", PALETTE[index % len(PALETTE)])
    if not isinstance(colour, str) or not _COLOUR.match(colour):
        raise _Bad(f"{key}.colour", f"must be a colour '#rgb' or '#rrggbb', got {colour!r}")
    if len(colour) == 4:
        colour = "#" + "".join(c * 2 for c in colour[1:])
    schedule = table.get("schedule", "")
    if not isinstance(schedule, str):
        raise _Bad(f"{key}.schedule", f"must be a string like 'Mon 20:00-22:00 America/New_York', got {schedule!r}")
    if schedule.strip():
        from mixer.schedule import Schedule

        try:
            schedule = str(Schedule.parse(schedule))
        except ValueError as exc:
            raise _Bad(f"{key}.schedule", str(exc)) from None
    topic = table.get("topic", "")
    if not isinstance(topic, str):
        raise _Bad(f"{key}.topic", f"must be a string, got {topic!r}")
    hosts = table.get("hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise _Bad(f"{key}.hosts", f"must be a list of names, got {hosts!r}")
    follow = table.get("follow", "")
    if follow not in ("", "always", "scheduled", "never"):
        raise _Bad(f"{key}.follow", f"must be 'always', 'scheduled' or 'never', got {follow!r}")
    if follow == "scheduled" and not schedule.strip():
        raise _Bad(f"{key}.follow", "is 'scheduled' but the chat has no schedule")
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


def _profiles(body: object) -> tuple[Profile, ...]:
    """``[[profiles]]`` tables as Profiles; the checks are Profile's own, reported at the table's key."""
    if not isinstance(body, list) or not all(isinstance(t, dict) for t in body):
        raise _Bad("profiles", "must be an array of tables ([[profiles]])")
    out: list[Profile] = []
    for i, table in enumerate(body):
        for name in table:
            if name not in _PROFILE_KEYS:
                raise _Bad(f"profiles[{i}].{name}", _unknown("key", name, list(_PROFILE_KEYS)))
        if not isinstance(table.get("name"), str) or not _tag(table["name"]) or table["name"] == "full":
            raise _Bad(f"profiles[{i}].name", "must be a short name other than 'full' (which is always there)")
        try:
            out.append(Profile(**table))
        except (TypeError, ValueError) as exc:
            raise _Bad(f"profiles[{i}]", str(exc)) from None
    if len({p.name for p in out}) < len(out):
        raise _Bad("profiles", "two profiles share a name")
    return tuple(out)


def _locate(text: str) -> dict[str, int]:
    """Dotted key or table (``server.port``, ``chats[1]``) -> the 1-based line where it is first written.

    A line scan, not a parser: it knows ``[table]``, ``[[array]]`` and ``key =`` / ``a.b =`` lines
    and skips the insides of multi-line strings; keys inside inline tables are not found.
    """
    found: dict[str, int] = {}
    counts: dict[str, int] = {}
    table = ""
    in_string: str | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if in_string:
            if line.count(in_string) % 2:
                in_string = None
        elif m := re.match(r"\s*\[\[\s*([\w.-]+)\s*\]\]", line):
            counts[m[1]] = counts.get(m[1], 0) + 1
            table = f"{m[1]}[{counts[m[1]] - 1}]"
            found.setdefault(table, lineno)
        elif m := re.match(r"\s*\[\s*([\w.-]+)\s*\]", line):
            table = m[1]
            found.setdefault(table, lineno)
        elif m := re.match(r"\s*([\w.-]+)\s*=", line):
            found.setdefault(f"{table}.{m[1]}" if table else m[1], lineno)
            in_string = next((q for q in ('"""', "'''") if line.count(q) % 2), None)
    return found


class _File:
    """The config file being loaded: its name as shown, and where each key sits in it."""

    def __init__(self, path: Path, shown: str, text: str) -> None:
        self.base = path.parent
        self.shown = shown
        self.lines = _locate(text)

    def line(self, key: str) -> int | None:
        """The key's line; failing that, its nearest enclosing table's or array's line."""
        while key:
            if key in self.lines:
                return self.lines[key]
            parent = re.sub(r"(\.[^.\[\]]*|\[\d+\])$", "", key)
            key = "" if parent == key else parent
        return None

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.shown, self.line(key), key, reason)


def _from_doc(doc: dict[str, Any], file: _File) -> tuple[dict[str, Any], list[ChatSettings]]:
    """Settings keyword arguments and chats from a parsed file; raises _Bad on the first bad entry."""
    values: dict[str, Any] = {}
    chats: list[ChatSettings] = []
    for section, body in doc.items():
        if section == "profiles":
            values["profiles"] = _profiles(body)
            continue
        if section == "chats":
            if not isinstance(body, list) or not all(isinstance(t, dict) for t in body):
                raise _Bad("chats", "must be an array of tables ([[chats]])")
            chats = [_chat(f"chats[{i}]", i, t) for i, t in enumerate(body)]
            continue
        fields = _SCHEMA.get(section)
        if fields is None:
            if not isinstance(body, dict | list):
                raise _Bad(section, f"unknown top-level key {section!r}; keys belong in a [section]")
            raise _Bad(section, _unknown("section", section, list(_SECTIONS)))
        if not isinstance(body, dict):
            raise _Bad(section, f"must be a table ([{section}])")
        for key, value in body.items():
            if (f := fields.get(key)) is None:
                raise _Bad(f"{section}.{key}", _unknown("key", key, list(fields)))
            if (checked := _check(f, value)) is None:
                raise _Bad(f"{section}.{key}", f"must be {f.want}, got {value!r}")
            values[f.attr] = checked
    first: dict[str, int] = {}
    for i, chat in enumerate(chats):
        if chat.tag in first:
            j = first[chat.tag]
            at = f" at line {line}" if (line := file.line(f"chats[{j}].tag")) else ""
            raise _Bad(f"chats[{i}].tag", f"duplicate tag {chat.tag!r}, first used by chats[{j}]{at}")
        first[chat.tag] = i
    if "demo_file" in values:
        values["demo_file"] = str((file.base / Path(values["demo_file"]).expanduser()).resolve())
    return values, chats


def _apply_env(values: dict[str, Any], chats: list[ChatSettings], env: Mapping[str, str]) -> list[str]:
    """Overrides ``values`` and ``chats`` in place from ``MIXER_<SECTION>_<KEY>``; returns the names used."""
    used: list[str] = []
    if (raw := env.get("MIXER_CHATS")) is not None:
        tags = [t for t in raw.split(",") if t.strip()]
        if not tags:
            raise ConfigError(ENV_FILE, None, "MIXER_CHATS", "must list at least one tag, like 'smbiz,edchat'")
        try:
            new = [_chat("MIXER_CHATS", i, {"tag": t}) for i, t in enumerate(tags)]
        except _Bad as bad:
            raise ConfigError(ENV_FILE, None, "MIXER_CHATS", bad.reason) from None
        if len({c.tag for c in new}) < len(new):
            raise ConfigError(ENV_FILE, None, "MIXER_CHATS", f"lists a tag twice, got {raw!r}")
        chats[:] = new
        used.append("MIXER_CHATS")
    for section, fields in _SCHEMA.items():
        for key, f in fields.items():
            name = f"MIXER_{section}_{key}".upper()
            if (text := env.get(name)) is None:
                continue
            if (value := _parse_text(f, text)) is None:
                raise ConfigError(ENV_FILE, None, name, f"must be {f.want}, got {text!r}")
            # A relative path in the environment means relative to where the command runs.
            values[f.attr] = str(Path(value).expanduser().resolve()) if f.attr == "demo_file" else value
            used.append(name)
    return used


def _display(path: Path) -> str:
    """The path as a user recognises it: as given if relative, else relative to the working directory if under it."""
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def find_config(explicit: str | None, env: Mapping[str, str]) -> Path:
    """The config file to load: ``explicit`` > ``$MIXER_CONFIG`` > ``./mixer.toml`` > the bundled sample.

    A named file (explicit or ``MIXER_CONFIG``) that is not there is a ConfigError, never a silent fallback.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(explicit, None, "", "is a directory" if path.is_dir() else "no such config file")
        return path
    if named := env.get("MIXER_CONFIG"):
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(ENV_FILE, None, "MIXER_CONFIG", f"no such config file: {named!r}")
        return path
    local = Path("mixer.toml")
    return local if local.is_file() else BUNDLED_CONFIG


def load_settings(path: Path, env: Mapping[str, str]) -> Settings:
    """Settings from the TOML file at ``path``, then ``MIXER_*`` overrides from ``env``; all checked.

    Raises ConfigError for the first problem found. Unset keys keep the ``Settings`` defaults; ``source``
    names the file and the variables that overrode it. Relative ``demo.file`` paths are made absolute.
    """
    shown = _display(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(shown, None, "", f"cannot read: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(shown, data[: exc.start].count(b"\n") + 1, "", "not UTF-8 text") from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r" \(at line (\d+), column (\d+)\)$", msg)
        line = int(m[1]) if m else None
        reason = f"invalid TOML: {msg[: m.start()]} (column {m[2]})" if m else f"invalid TOML: {msg}"
        raise ConfigError(shown, line, "", reason) from exc
    file = _File(path, shown, text)
    try:
        values, chats = _from_doc(doc, file)
    except _Bad as bad:
        raise file.error(bad.key, bad.reason) from None
    used = _apply_env(values, chats, env)
    source = f"{shown} + env {', '.join(used)}" if used else shown
    return Settings(**values, chats=tuple(chats), source=source)


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        chars = (_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c) for c in value)
        return '"' + "".join(chars) + '"'
    return repr(value)  # int or finite float: Python's repr is valid TOML


def render_settings(settings: Settings) -> str:
    """The settings as TOML in the file layout, headed by a comment naming their source.

    For Settings from ``load_settings``, loading the output gives equal Settings (``source`` aside).
    """
    source = " ".join(settings.source.splitlines())
    out = [
        f"# chatmixer settings in effect, from: {source}",
        "# Written by `mixer config`. Any value can be overridden by MIXER_<SECTION>_<KEY>; see docs/config.md.",
    ]
    for section in _SECTIONS:
        if section == "profiles":
            for profile in settings.profiles:
                out += ["", "[[profiles]]", f"name = {_toml(profile.name)}", f"rate = {_toml(float(profile.rate))}"]
                out += [f"burst = {profile.burst}", f"max_wait = {_toml(float(profile.max_wait))}"]
                out += [f"max_queue = {profile.max_queue}"]
                if profile.weights:
                    out.append(
                        "weights = { " + ", ".join(f"{_toml(c)} = {w!r}" for c, w in profile.weights.items()) + " }"
                    )
            continue
        if section == "chats":
            for chat in settings.chats:
                out += ["", "[[chats]]", *(f"{k} = {_toml(getattr(chat, k))}" for k in ("tag", "title", "colour"))]
                extra = ("schedule", "topic", "hosts", "follow")
                out += [f"{k} = {_toml(getattr(chat, k))}" for k in extra if getattr(chat, k)]
            continue
        out += ["", f"[{section}]"]
        for key, f in _SCHEMA[section].items():
            value = getattr(settings, f.attr)
            if f.attr in SECRETS and value:
                out.append(f'{key} = ""  # set, not shown: give it as MIXER_{section.upper()}_{key.upper()}')
            else:
                out.append(f"{key} = {_toml(value)}")
    return "\n".join(out) + "\n"
