"""What ``mixer.toml`` may say: each section and key, the ``Settings`` field it sets and the check its value passes.

``SCHEMA`` maps every key of every ``[section]`` to a ``Field`` (attribute, type, check, the
inclusive range of a number, and the words for "must be ..."); ``check_value`` and ``parse_text``
turn a TOML value or a ``MIXER_*`` string into the field's type, or None. Tokens this server accepts
are at least ``TOKEN_MIN`` characters; Mastodon and X are reached over https (http only to this
machine), and two spellings of one Mastodon instance are one address. ``shown`` is how an error
message quotes a value (short, credentials masked, a secret never).
A bad value raises ``BadValue`` naming only its dotted key. Pure: the ``[[chats]]`` and
``[[profiles]]`` tables are ``config_tables``; finding and reading the file, line numbers, the
environment and rendering back to TOML are ``config``; the dataclasses and ``ConfigError`` are ``settings``.
"""

from __future__ import annotations

import difflib
import math
import re
import reprlib
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

from mixer import connect
from mixer.models import TAG, normalize_tag
from mixer.redact import redact, url_secret

TAG_WANT = "a hashtag without spaces or '#' inside (1-100 characters)"
_PREFIX = re.compile(r"^[^\s{}]+$")  # braces would break the keys' {<prefix>} hash tag


def valid_tag(raw: str) -> str | None:
    """``raw`` as a chat's hashtag (normalised), or None when it is none."""
    tag = normalize_tag(raw)
    return tag if TAG.match(tag) else None


_LINK = re.compile(r"^https?://[^\s/]+(?:/\S*)?$")  # a whole URL, as a QR code would carry it
_WS = re.compile(r"^wss?://[^\s/]+(?:/\S*)?$")
# An origin as a browser sends it: scheme and host (a name or a [v6] address), a port only when not the default
_ORIGIN = re.compile(r"^(?P<scheme>https?)://(?P<host>[a-z0-9.-]+|\[[0-9a-f:.]+\])(?::(?P<port>\d{1,5}))?$")
_DEFAULT_PORT = {"http": "80", "https": "443"}
SECRETS = frozenset(
    {"mastodon_token", "x_bearer_token", "webhook_token", "moderation_token"}
)  # never printed by render_settings, nor in an error message
# Tokens this server accepts: long enough that guessing one through the (throttled) API is hopeless.
TOKEN_MIN = 16
_TOKEN_WANT = f"empty (off) or a token of at least {TOKEN_MIN} characters without spaces"


def _token(s: str) -> bool:
    return s == "" or (len(s) >= TOKEN_MIN and not any(c.isspace() for c in s))


def _platform_token(s: str) -> bool:
    """A token we send to a platform in an ``Authorization`` header: no space or control character (a secret read
    from a file often ends in a newline, which the HTTP client refuses at the first request)."""
    return s.isprintable() and not any(c.isspace() for c in s)


def _platform_token_why(s: str) -> str | None:
    if "\n" in s or "\r" in s:
        return "holds a line break (a secret read from a file keeps its last newline: strip it)"
    return "holds a space or a control character" if s else None


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ip_address(host).is_loopback
    except ValueError:
        return False


def _https(url: str) -> bool:
    """An https:// URL with a host and no user or password in it; http:// only to this machine (test servers)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if not host or parts.username is not None or parts.password is not None or not _LINK.match(url):
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and _loopback(host))


def _instance(url: str) -> bool:
    """A Mastodon instance's address as ``_https`` takes it, and no more: the follower appends the API's paths to it,
    so a profile or page address (``https://mastodon.social/@someone``) would be asked for timelines it has not."""
    if not _https(url):
        return False
    parts = urlsplit(url)
    return parts.path in ("", "/") and not parts.query and not parts.fragment and not url.endswith(("?", "#"))


def _instance_address(url: str) -> str | None:
    """An instance's address as its one follower is named (``mastodon:<host>``), or None when ``_instance`` refuses it:
    scheme and host lower-cased, the default port and a trailing ``/`` dropped, so ``https://Mastodon.Social:443/``
    is ``https://mastodon.social`` and two spellings of one instance cannot start two followers."""
    if not _instance(url):
        return None
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # not a number, or out of range
        return None
    host = parts.hostname or ""  # lower-cased, an IPv6 address without its brackets
    host = f"[{host}]" if ":" in host else host
    shown_port = "" if port is None or str(port) == _DEFAULT_PORT[parts.scheme] else f":{port}"
    return f"{parts.scheme}://{host}{shown_port}"


def _twice(value: object) -> str | None:
    """Which instance a list (or an environment string of comma-separated URLs) names twice, in what spellings."""
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list | tuple) else ()
    first: dict[str, str] = {}
    for raw in items:
        if not isinstance(raw, str) or (address := _instance_address(raw.strip().rstrip("/"))) is None:
            continue  # refused for itself
        if address in first:
            spelt = f" ({first[address]!r} and {raw.strip()!r})" if first[address] != raw.strip() else ""
            return f"names the instance {address} twice{spelt}: one instance is followed once, give it once"
        first[address] = raw.strip()
    return None


def _origin(entry: str) -> str | None:
    """An origin as a browser's ``Origin`` header would carry it (lower case, no default port, no path), or None:
    ``https://Blog.Example:443`` is ``https://blog.example``; ``https://blog.example/embed`` is no origin at all."""
    m = _ORIGIN.match(entry.lower())
    if m is None or (m["port"] is not None and not 0 < int(m["port"]) < 65536):
        return None
    port = "" if m["port"] in (None, _DEFAULT_PORT[m["scheme"]]) else f":{m['port']}"
    return f"{m['scheme']}://{m['host']}{port}"


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
    lo: float | None = None  # a number's inclusive range (docs/config.md states it beside the key)
    hi: float | None = None
    # what is wrong with a refused string (or, for a list key, list), said after "which"
    why: Callable[[Any], str | None] | None = None

    def refusal(self, value: object) -> str:
        """Completes "<key> ...": what it must be, what it got, and why when the check can tell."""
        told = isinstance(value, str) or (self.kind is tuple and isinstance(value, list | tuple))
        reason = self.why(value) if self.why is not None and told else None
        return f"must be {self.want}, got {shown(self, value)}" + (f", which {reason}" if reason else "")


def _plain(n: float) -> str:
    """A bound as docs/config.md writes it: 3600, 0.1, 10000000 (never 1e+07)."""
    return str(int(n)) if float(n).is_integer() else repr(n)


def _int(attr: str, lo: int, hi: int, what: str = "an integer") -> Field:
    return Field(attr, int, f"{what} from {lo} to {hi}", lo=lo, hi=hi)


def _num(attr: str, lo: float, hi: float, what: str = "a number") -> Field:
    return Field(attr, float, f"{what} from {_plain(lo)} to {_plain(hi)}", lo=lo, hi=hi)


SCHEMA: dict[str, dict[str, Field]] = {
    "event": {
        "name": Field("event_name", str, "a non-empty string", _nonempty),
        "hashtag": Field("event_hashtag", str, TAG_WANT, norm=valid_tag),
        "link": Field(
            "event_link",
            str,
            "empty (no QR code) or an http(s) URL without spaces",
            lambda s: s == "" or bool(_LINK.match(s)),
        ),
        "follow": Field(
            "follow", str, "'always', 'scheduled' or 'never'", lambda s: s in ("always", "scheduled", "never")
        ),
        "follow_margin_minutes": _num("follow_margin_minutes", 0, 1440, "a number of minutes"),
    },
    "redis": {
        "url": Field(
            "redis_url",
            str,
            "empty (embedded Redis) or a redis://, rediss://, unix://, redis+cluster:// or redis+sentinel:// URL",
            lambda s: s == "" or connect.problem(s) is None,
            why=connect.problem,
        ),
        "prefix": Field(
            "key_prefix", str, "a non-empty string without spaces or braces", lambda s: bool(_PREFIX.match(s))
        ),
        "chat_maxlen": _int("chat_maxlen", 100, 10_000_000),
        "feed_maxlen": _int("feed_maxlen", 100, 10_000_000),
        "wait_seconds": _num("redis_wait_seconds", 0, 3600, "a number of seconds"),
    },
    "server": {
        "host": Field("host", str, "a non-empty string", _nonempty),
        "port": _int("port", 1, 65535),
        "backlog_bytes": _int("backlog_bytes", 1024, 1 << 30, "a number of bytes"),
        "cutoff_seconds": _num("cutoff_seconds", 0.1, 3600, "a number of seconds"),
        "heartbeat_seconds": _num("heartbeat_seconds", 1, 3600, "a number of seconds"),
        "stats_seconds": _num("stats_seconds", 0.1, 3600, "a number of seconds"),
        "origins": Field(
            "origins",
            tuple,
            "a list of origins like 'https://blog.example' (scheme, host and port only: no path)",
            norm=_origin,
        ),
        "max_connections": _int("max_connections", 1, 1_000_000),
        "max_per_ip": _int("max_per_ip", 1, 1_000_000),
    },
    "merge": {
        "window_ms": _int("window_ms", 0, 60_000, "a number of milliseconds"),
        "seen_max": _int("seen_max", 100, 10_000_000),
    },
    "mastodon": {
        "instances": Field(
            "mastodon_instances",
            tuple,
            "a list of distinct https:// instance addresses: scheme and host, no path, user or password (http://"
            " only to localhost)",
            lambda v: len(set(v)) == len(v),
            norm=_instance_address,
            why=_twice,
        ),
        "token": Field(
            "mastodon_token",
            str,
            "a token without spaces (empty: poll without a token)",
            _platform_token,
            why=_platform_token_why,
        ),
        "poll_seconds": _num("mastodon_poll_seconds", 0.1, 3600, "a number of seconds"),
    },
    "bluesky": {
        "enabled": Field("bluesky_enabled", bool, "true or false"),
        "endpoint": Field(
            "bluesky_endpoint", str, "a ws:// or wss:// URL without spaces", lambda s: bool(_WS.match(s))
        ),
        "profiles": Field("bluesky_profiles", bool, "true or false"),
        "appview": Field(
            "bluesky_appview",
            str,
            "an http(s) URL without spaces",
            lambda s: bool(_LINK.match(s)),
            norm=lambda s: s.rstrip("/"),
        ),
        "profile_ttl_seconds": _num("bluesky_profile_ttl_seconds", 1, 2_592_000, "a number of seconds"),
    },
    "x": {
        "bearer_token": Field(
            "x_bearer_token",
            str,
            "a token without spaces (empty: X is not followed)",
            _platform_token,
            why=_platform_token_why,
        ),
        "api": Field("x_api", str, "an https:// URL without user or password (http:// only to localhost)", _https),
        "backfill_minutes": _int("x_backfill_minutes", 0, 5, "a whole number of minutes"),
    },
    "webhook": {
        "token": Field("webhook_token", str, _TOKEN_WANT, _token),
    },
    "moderation": {
        "token": Field("moderation_token", str, _TOKEN_WANT, _token),
        "words": Field("moderation_words", tuple, "a list of words or phrases"),
        "accounts": Field("moderation_accounts", tuple, "a list of accounts like 'x:handle' or 'handle'"),
        "profanity": Field("moderation_profanity", bool, "true or false"),
        "approval": Field("moderation_approval", bool, "true or false"),
    },
    "demo": {
        "file": Field("demo_file", str, "a non-empty path", _nonempty),
        "speed": _num("demo_speed", 0, 100_000, "a speed (0: as fast as possible)"),
        "max_gap": _num("demo_max_gap", 0, 86_400, "a number of seconds"),
    },
}
SECTIONS = (
    "event",
    "chats",
    "profiles",
    *(s for s in SCHEMA if s != "event"),
)  # also the order render_settings writes


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
        items = tuple(f.norm(v.strip().rstrip("/")) for v in value)
        return items if all(i is not None for i in items) and f.ok(items) else None
    if isinstance(value, bool):
        return None
    if f.kind is float and isinstance(value, int | float):
        try:
            value = float(value)
        except OverflowError:  # an integer too big for a float
            return None
        if not math.isfinite(value):
            return None
    elif f.kind is str and isinstance(value, str):
        value = f.norm(value)
    elif not (f.kind is int and isinstance(value, int)):
        return None
    if isinstance(value, int | float) and not ((f.lo is None or value >= f.lo) and (f.hi is None or value <= f.hi)):
        return None
    return value if value is not None and f.ok(value) else None


_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxstring, _SHOW.maxother, _SHOW.maxlist = 2, 60, 60, 4
_SHOW.maxlong = 30  # a 20-digit number is shown whole, a 5,000-digit one cut


def shown(f: Field | None, value: object) -> str:
    """``value`` as an error message may show it: short, nesting cut, URL credentials hidden, a secret never."""
    if f is not None and f.attr in SECRETS:
        return f"a secret of {len(value)} characters" if isinstance(value, str) else f"a {type(value).__name__}"
    return redact(_SHOW.repr(value), url_secret(value) if isinstance(value, str) else "")


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
