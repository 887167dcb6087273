"""Every HTTP route and query parameter under random bad input (hypothesis): never a 5xx.

The app is the real one (``running_app``, as `mixer serve` builds it) on a real socket and a real Redis, with the
webhook and moderation on. Requests are written byte by byte (``_status``), so the target, the headers and the
body can hold what no well-behaved client sends: non-ASCII and surrogate bytes, Arabic-Indic digits, numbers of
twenty digits and more, JSON nested a hundred thousand deep, ``Authorization`` headers with non-ASCII bytes.
The routes are docs/api.md's and ``create_app``'s (``mixer/fanout/app.py``, ``modapi.py``, ``pages.py``).
Examples are bounded so the module runs in well under a minute.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixer.fanout.modapi import POST_ACTIONS
from mixer.keys import Keys
from tests.servers import Running, running_app, settings_for

TOKEN = "fuzz-token-0123456789abcdef0123456789abcdef"
FUZZ = settings(
    max_examples=80, deadline=None, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip

# Each GET route with the query parameters it reads (docs/api.md, docs/wall.md, docs/embed.md).
GETS: dict[str, tuple[str, ...]] = {
    "/": ("chats", "theme", "motion", "profile"),
    "/api/feed": ("since", "before", "limit", "chats", "profile"),
    "/api/chats": (),
    "/api/stats": (),
    "/metrics": (),
    "/healthz": (),
    "/readyz": (),
    "/favicon.ico": (),
    "/qr.svg": (),
    "/embed.js": (),
    "/embed": ("chats", "profile", "theme", "max"),
    "/embed/builder": (),
    "/mod": (),
    "/static/wall.js": (),
    "/static/{name}": (),  # the name is random too
    "/api/mod/rules": (),
    "/api/mod/queue": (),
    "/api/mod/audit": ("limit",),
    "/api/mod/changes": ("after",),  # a long poll: a valid `after` waits for a change
}
STREAMS: dict[str, tuple[str, ...]] = {
    "/ws": ("chats", "since", "format", "profile"),
    "/events": ("chats", "since", "profile"),
}
MOD_POSTS = tuple(f"/api/mod/{name}" for name in (*POST_ACTIONS, "block", "approval"))

NASTY = st.sampled_from(
    ["", "0-0", "0", "-1", "\u0661\u0662\u0663-\u0664", "\u0661\u0667" + "\u0660" * 11 + "-\u0660",
     "18446744073709551615-18446744073709551615",
     "18446744073709551616", "99999999999999999999", "9" * 500, "1e309", "NaN", "1700000000000-0", "$", "+", "-",
     "\ud800", "\udfff", "smbiz,#EDCHAT,,", "#", "full", "wall", "msgpack", "json", "x" * 5000, "%", "%zz", "\x00",
     "\u202e", "../../etc/passwd", "<script>alert(1)</script>"]
)  # fmt: skip
TEXT = st.one_of(NASTY, st.text(max_size=30), st.text(st.characters(codec=None), max_size=10))
CONTROL = bytes(range(32)) + b"\x7f"
# Header values as a client may send them: any bytes but control characters (aiohttp's parser refuses those
# itself, before any of our code runs), so non-ASCII and invalid UTF-8 reach the handlers.
HEADER_BYTES = st.binary(max_size=40).map(lambda b: b.translate(None, CONTROL))
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**80), max_value=2**80), st.floats(),
              TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=20,
)  # fmt: skip
FIELDS = ("key", "id", "account", "chat", "on", "words", "accounts", "profanity", "approval", "records", "text")
BODY = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=5).map(lambda d: json.dumps(d).encode()),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=1, max_value=100_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(min_value=1, max_value=50_000).map(lambda n: b'{"key":' * n + b"1" + b"}" * n),
    st.binary(max_size=100),
)


def _encode(value: str, raw: bool) -> bytes:
    data = value.encode("utf-8", "surrogatepass")
    if raw:  # bytes as they are, only what would end the request line escaped
        return data.replace(b"%", b"%25").replace(b" ", b"%20").replace(b"#", b"%23").translate(None, CONTROL)
    return quote(data, safe="").encode()


@st.composite
def targets(draw: st.DrawFn, path: str, params: tuple[str, ...]) -> bytes:
    names = draw(st.lists(st.one_of(st.sampled_from(params or ("x",)), TEXT), max_size=4))
    raw = draw(st.booleans())
    query = b"&".join(_encode(n, raw) + b"=" + _encode(draw(TEXT), raw) for n in names)
    where = path.encode().replace(b"{name}", _encode(draw(TEXT), raw).replace(b"?", b"%3F"))
    return where + (b"?" + query if query else b"")


AUTH = st.one_of(
    st.just(b"Bearer " + TOKEN.encode()),
    HEADER_BYTES.map(lambda b: b"Bearer " + b),
    HEADER_BYTES,
    st.sampled_from([b"Bearer \xff\xfe", b"Bearer " + TOKEN.encode() + b"\xc3\xa9", "Bearer é".encode(), b"Basic"]),
)


async def _status(srv: Running, method: str, target: bytes, headers: dict[bytes, bytes], body: bytes = b"") -> int:
    """The status code the server answers a request written byte by byte (0: it waited, as a long poll does)."""
    port = int(srv.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = method.encode() + b" " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        head += b"".join(name + b": " + value + b"\r\n" for name, value in headers.items())
        if method != "GET":
            head += b"Content-Length: %d\r\n" % len(body)
        writer.write(head + b"\r\n" + body)
        try:
            line = await asyncio.wait_for(reader.readline(), 2 if target.startswith(b"/api/mod/changes") else 15)
        except TimeoutError:
            if target.startswith(b"/api/mod/changes"):
                return 0
            raise
        assert line.startswith(b"HTTP/1."), f"no HTTP answer to {method} {target[:200]!r}: {line[:200]!r}"
        return int(line.split()[1])
    finally:
        writer.close()


def _no_5xx(status: int, what: object) -> None:
    assert status < 500, f"{status} for {what!r}"


@pytest.fixture
async def srv(redis: aioredis.Redis, keys: Keys, redis_url: str) -> AsyncIterator[Running]:
    settings = settings_for(
        keys.prefix, moderation_token=TOKEN, webhook_token=TOKEN, event_link="https://example.org/join"
    )
    async with running_app(settings, redis_url) as running:
        yield running


GET_TARGETS = st.sampled_from(sorted(GETS)).flatmap(lambda path: targets(path, GETS[path]))


@FUZZ
@given(GET_TARGETS, st.one_of(st.none(), AUTH))
async def test_no_get_route_answers_5xx_to_any_query_or_token(srv: Running, target: bytes, auth: bytes | None) -> None:
    headers = {b"Authorization": auth} if auth is not None else {}
    _no_5xx(await _status(srv, "GET", target, headers), (target, auth))


@FUZZ
@given(
    st.sampled_from(sorted(STREAMS)).flatmap(lambda path: targets(path, STREAMS[path])),
    st.dictionaries(st.sampled_from([b"Last-Event-ID", b"Origin", b"Sec-WebSocket-Extensions"]), HEADER_BYTES),
)
async def test_ws_and_events_never_answer_5xx_to_any_query_or_header(
    srv: Running, target: bytes, headers: dict[bytes, bytes]
) -> None:
    if target.startswith(b"/ws"):
        headers |= {b"Upgrade": b"websocket", b"Connection": b"Upgrade", b"Sec-WebSocket-Version": b"13"}
        headers[b"Sec-WebSocket-Key"] = b"dGhlIHNhbXBsZSBub25jZQ=="
    _no_5xx(await _status(srv, "GET", target, headers), (target, headers))


@settings(FUZZ, max_examples=60)
@given(st.sampled_from(["/api/posts", *MOD_POSTS, "/api/mod/rules"]), AUTH, st.binary(max_size=30))
async def test_bad_tokens_are_refused_with_a_4xx_never_a_5xx(srv: Running, path: str, auth: bytes, body: bytes) -> None:
    method = "PUT" if path == "/api/mod/rules" else "POST"
    headers = {b"Authorization": auth, b"Content-Type": b"application/json"}
    _no_5xx(await _status(srv, method, path.encode(), headers, body), (path, auth))


@FUZZ
@given(st.sampled_from(["/api/posts", *MOD_POSTS, "/api/mod/rules"]), BODY, HEADER_BYTES)
async def test_authenticated_bodies_of_any_shape_get_a_4xx_never_a_5xx(
    srv: Running, path: str, body: bytes, moderator: bytes
) -> None:
    method = "PUT" if path == "/api/mod/rules" else "POST"
    headers = {b"Authorization": b"Bearer " + TOKEN.encode(), b"X-Moderator": moderator}
    _no_5xx(await _status(srv, method, path.encode(), headers, body), (path, body[:300]))


RECORD = st.dictionaries(
    st.sampled_from(["key", "source", "chats", "author", "text", "url", "created", "id", "data", "includes",
                     "content", "account", "event", "payload", "kind", "did", "commit"]),
    JSON, max_size=7,
)  # fmt: skip


@settings(FUZZ, max_examples=60)
@given(st.one_of(st.lists(RECORD, max_size=5), RECORD, JSON))
async def test_the_webhook_takes_any_json_records_with_a_2xx_or_4xx(srv: Running, records: Any) -> None:
    body = json.dumps(records).encode()
    headers = {b"Authorization": b"Bearer " + TOKEN.encode(), b"Content-Type": b"application/json"}
    _no_5xx(await _status(srv, "POST", b"/api/posts", headers, body), records)
