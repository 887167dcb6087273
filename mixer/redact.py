"""``redact``: the one function every printed or logged text that may hold a URL or a token goes through.

It hides a URL's user and password (``redis://:pw@db:6379/0`` -> ``redis://***@db:6379/0``), the value of any
query parameter named like a secret (``?password=``, ``access_token=``, ``api_key=``), whatever follows
``Bearer`` or ``Basic``, and each secret the caller names (the configured tokens) wherever it appears. It
works on one URL or on free text holding several (a log line, an exception's message), never fails and
changes nothing else. Pure; what counts as a secret setting is ``config_schema.SECRETS``, and the log
formatter that applies it to every log line is ``RedactingFormatter``.

``escaped`` is its sibling for text from outside (a record's keys, a post, a file name, a header): control characters,
lone surrogates and line separators written as visible escapes, so such text can neither forge a log line nor make
one that a UTF-8 reader refuses. The formatter applies it to every value a log line interpolates.
"""

from __future__ import annotations

import copy
import logging
import numbers
import re
from collections.abc import Mapping
from typing import Any

MASK = "***"

# scheme://userinfo@ : the user info runs to the last '@' before the host's end (a password may hold an '@')
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s@]*(?:@[^/?#\s@]*)*@")
# ?password=... &access_token=... (redis-py reads unix:// passwords from the query)
_QUERY = re.compile(r"(?P<name>[?&;][\w.-]*(?:pass|pwd|secret|token|key|auth|sig|credential)[\w.-]*=)[^&#\s]*", re.I)
# an Authorization value as sent (RFC 6750 token68); 8+ characters, so prose about "Bearer tokens" stays readable
_SCHEME_AUTH = re.compile(r"\b(?P<name>(?:Bearer|Basic) +)[A-Za-z0-9._~+/=-]{8,}")


def redact(text: str, *secrets: str) -> str:
    """``text`` with URL credentials, secret-looking query values, bearer tokens and every one of ``secrets``
    (empty ones ignored) replaced by ``***``; the rest is unchanged."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):  # longest first: one may contain another
        text = text.replace(secret, MASK)
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = _QUERY.sub(lambda m: f"{m['name']}{MASK}", text)
    return _SCHEME_AUTH.sub(lambda m: f"{m['name']}{MASK}", text)


_WEB = frozenset({"http", "https", "ws", "wss"})  # URLs whose paths hold '@' (profiles), never a password


def url_secret(url: str) -> str:
    """The password of one URL, read leniently: what follows the user's ``:`` up to the URL's last ``@`` (the whole
    user info when it has no ``:``), "" when there is none. For URLs a parser refuses (``redis://:ab/cd@h``,
    ``redis://:a b@h``): ``redact``'s pattern cannot tell such a password from a path in free text, so a caller
    that holds the URL passes this as a secret. A web URL's user info ends at its path, whose ``@`` is a profile
    (``https://mastodon.social/@chatmixer``), not a password to hide."""
    scheme, sep, rest = url.partition("://")
    if scheme.lower() in _WEB:  # user info only before the path: an '@' after it is a profile (/@chatmixer)
        rest = re.split(r"[/?#]", rest, maxsplit=1)[0]
    userinfo, at, _ = rest.rpartition("@")
    if not sep or not at or not scheme:
        return ""
    user, colon, password = userinfo.partition(":")
    return password if colon else user


# C0 and C1 controls and DEL (U+0085 among them), lone surrogates (no UTF-8 encoder takes them), and the line and
# paragraph separators that editors, browsers and log viewers break lines at
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match[0]
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def escaped(text: str) -> str:
    """``text`` with each control character, lone surrogate and line or paragraph separator written as its Python
    escape (``\\n``, ``\\x1b``, ``\\ud800``, ``\\u2028``): one line, UTF-8 encodable, everything else unchanged."""
    return _UNSAFE.sub(_escape, text)


class _Escaped:
    """A log argument that ``%s`` shows as its ``str`` and ``%r`` as its ``repr``, each ``escaped``."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return escaped(str(self.value))

    def __repr__(self) -> str:
        return escaped(repr(self.value))


def _shown(arg: object) -> object:
    return arg if isinstance(arg, numbers.Number) else _Escaped(arg)  # numbers stay numbers for %d and %.1f


class RedactingFormatter(logging.Formatter):
    """A log formatter whose every line, traceback included, has passed through ``redact`` with ``secrets``, and
    whose every record is one line before its traceback: each value the message interpolates (a string, an
    exception, a path: anything but a number; a message logged without arguments, as aiohttp's access log does,
    whole) is ``escaped``, and so is each line of a traceback. The format string itself is the code's, kept as is:
    text from outside is logged as an argument, never built into it."""

    def __init__(self, fmt: str, secrets: tuple[str, ...] = ()) -> None:
        super().__init__(fmt)
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        safe = copy.copy(record)  # other handlers (pytest's capture) still see the record as logged
        args: Any = record.args
        if isinstance(args, Mapping):
            safe.args = {name: _shown(value) for name, value in args.items()}
        elif args:
            safe.args = tuple(_shown(arg) for arg in args)
        else:
            safe.msg = escaped(str(record.msg))
        safe.exc_text = None  # formatted again (formatException), not taken as another handler cached it
        return redact(super().format(safe), *self.secrets)

    def formatException(self, ei: Any) -> str:
        return "\n".join(map(escaped, super().formatException(ei).split("\n")))

    def formatStack(self, stack_info: str) -> str:
        return "\n".join(map(escaped, super().formatStack(stack_info).split("\n")))
