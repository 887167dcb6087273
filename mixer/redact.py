"""``redact``: the one function every printed or logged text that may hold a URL or a token goes through.

It hides a URL's user and password (``redis://:pw@db:6379/0`` -> ``redis://***@db:6379/0``), the value of any
query parameter named like a secret (``?password=``, ``access_token=``, ``api_key=``), whatever follows
``Bearer`` or ``Basic``, and each secret the caller names (the configured tokens) wherever it appears. It
works on one URL or on free text holding several (a log line, an exception's message), never fails and
changes nothing else. Pure; what counts as a secret setting is ``config_schema.SECRETS``, and the log
formatter that applies it to every log line is ``RedactingFormatter``.
"""

from __future__ import annotations

import logging
import re

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


class RedactingFormatter(logging.Formatter):
    """A log formatter whose every line, traceback included, has passed through ``redact`` with ``secrets``."""

    def __init__(self, fmt: str, secrets: tuple[str, ...] = ()) -> None:
        super().__init__(fmt)
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), *self.secrets)
