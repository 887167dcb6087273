"""Bad input on every HTTP route and query parameter is a 4xx with a reason, never a 500 (issue 16, item 4).

Requests are written as raw bytes on a real socket, so a header can carry bytes no HTTP client library would send.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote, urlsplit

import pytest
import redis.asyncio as aioredis

from mixer.keys import Keys
from tests.servers import Running, running_app, settings_for

MOD_TOKEN = "m" * 32
HOOK_TOKEN = "w" * 32
MAX_ID = f"{2**64 - 1}-{2**64 - 1}"
DEEP = "[" * 100_000 + "]" * 100_000  # deeper than Python's recursion limit
ARABIC_123 = "\u0661\u0662\u0663"  # ١٢٣: `\d` and int() take them, Redis does not
FULLWIDTH_1 = "\uff11"


async def raw_request(url: str, method: str, target: str, headers: bytes = b"", body: bytes = b"") -> tuple[int, str]:
    """(status, body text) of one HTTP/1.1 request written byte for byte (the target percent-encoded as UTF-8)."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = f"{method} {quote(target, safe='/?=&-')} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n".encode()
        writer.write(head + headers + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = reply.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2].decode("utf-8", "replace")


@asynccontextmanager
async def guarded_app(keys: Keys, redis_url: str) -> AsyncIterator[Running]:
    settings = settings_for(keys.prefix, moderation_token=MOD_TOKEN, webhook_token=HOOK_TOKEN)
    async with running_app(settings, redis_url) as srv:
        yield srv


def bearer(token: str) -> bytes:
    return f"Authorization: Bearer {token}\r\n".encode()


JSON = b"Content-Type: application/json\r\n"
UNAUTHENTICATED: list[tuple[str, str, bytes, bytes]] = [  # method, target, headers, body
    ("POST", "/api/posts", b"Authorization: Bearer \xff\xfe\r\n" + JSON, b"{}"),
    ("POST", "/api/posts", b"Authorization: Bearer caf\xc3\xa9\r\n" + JSON, b"{}"),
    ("GET", "/api/mod/rules", b"Authorization: Bearer \xc3\x28\r\n", b""),
    ("POST", "/api/mod/hide", b"Authorization: \x80\r\n" + JSON, b'{"key": "x:1"}'),
    ("GET", f"/api/feed?since={2**64}-0", b"", b""),
    ("GET", f"/api/feed?since=1-{2**64}", b"", b""),
    ("GET", f"/api/feed?since={ARABIC_123}-0", b"", b""),
    ("GET", f"/api/feed?since={FULLWIDTH_1}", b"", b""),
    ("GET", "/api/feed?since=1-2-3", b"", b""),
    ("GET", f"/api/feed?before={2**64}-0", b"", b""),
    ("GET", "/api/feed?before=abc", b"", b""),
    ("GET", "/api/feed?since=1-0&before=2-0", b"", b""),
    ("GET", f"/api/feed?limit={ARABIC_123}", b"", b""),
    ("GET", "/api/feed?limit=-1", b"", b""),
    ("GET", "/api/feed?limit=1e3", b"", b""),
    ("GET", "/api/feed?limit=" + "9" * 5000, b"", b""),
    ("GET", "/api/feed?profile=nope", b"", b""),
    ("GET", f"/events?since={ARABIC_123}-0", b"", b""),
    ("GET", f"/events?since={2**64}-0", b"", b""),
    ("GET", f"/ws?since={ARABIC_123}-0", b"", b""),
    ("GET", f"/ws?since=1-{2**64}", b"", b""),
]
AUTHENTICATED: list[tuple[str, str, bytes, bytes]] = [
    ("POST", "/api/posts", bearer(HOOK_TOKEN) + JSON, DEEP.encode()),
    ("PUT", "/api/mod/rules", bearer(MOD_TOKEN) + JSON, ('{"words": ' + DEEP + "}").encode()),
    ("PUT", "/api/mod/rules", bearer(MOD_TOKEN) + JSON, b'{"words": ["\\ud800"]}'),
    ("PUT", "/api/mod/rules", bearer(MOD_TOKEN) + JSON, b'{"accounts": ["x:\\udfff"]}'),
    ("PUT", "/api/mod/rules", bearer(MOD_TOKEN) + JSON, b'{"chats": {"\\ud800": {"words": ["x"]}}}'),
    ("POST", "/api/mod/hide", bearer(MOD_TOKEN) + JSON, b'{"id": "abc"}'),
    ("POST", "/api/mod/hide", bearer(MOD_TOKEN) + JSON, f'{{"id": "{2**64}-0"}}'.encode()),
    ("POST", "/api/mod/pin", bearer(MOD_TOKEN) + JSON, f'{{"id": "{ARABIC_123}-0"}}'.encode()),
    ("POST", "/api/mod/hide", bearer(MOD_TOKEN) + JSON, b'{"id": 5}'),
    ("POST", "/api/mod/hide", bearer(MOD_TOKEN) + JSON, DEEP.encode()),
    ("POST", "/api/mod/block", bearer(MOD_TOKEN) + JSON, b'{"account": "x:bob", "chat": 5}'),
    ("POST", "/api/mod/block", bearer(MOD_TOKEN) + JSON, b'{"account": "x:bob", "chat": ""}'),
    ("POST", "/api/mod/block", bearer(MOD_TOKEN) + JSON, b'{"account": "x:bob", "chat": ["edchat"]}'),
    ("POST", "/api/mod/block", bearer(MOD_TOKEN) + JSON, b'{"account": "x:\\ud800"}'),
    ("POST", "/api/mod/block", bearer(MOD_TOKEN) + JSON, b'{"account": "x:bob", "key": "\\ud800"}'),
    ("POST", "/api/mod/hide", bearer(MOD_TOKEN) + JSON, b'{"key": "\\ud800"}'),
    ("POST", "/api/mod/approve", bearer(MOD_TOKEN) + JSON, b'{"key": "x:\\udfff"}'),
    ("POST", "/api/mod/hide", bearer(MOD_TOKEN) + JSON, b'{"key": "' + b"k" * 3000 + b'"}'),
    ("GET", "/api/mod/changes?after=" + "9" * 20 + "-0", bearer(MOD_TOKEN), b""),
    ("GET", "/api/mod/changes?after=" + "9" * 20, bearer(MOD_TOKEN), b""),
    ("GET", f"/api/mod/changes?after={ARABIC_123}-0", bearer(MOD_TOKEN), b""),
    ("GET", "/api/mod/changes?after=abc", bearer(MOD_TOKEN), b""),
    ("GET", f"/api/mod/audit?limit={ARABIC_123}", bearer(MOD_TOKEN), b""),
    ("GET", "/api/mod/audit?limit=lots", bearer(MOD_TOKEN), b""),
]


@pytest.mark.parametrize(("method", "target", "headers", "body"), UNAUTHENTICATED + AUTHENTICATED)
async def test_bad_input_is_a_4xx_with_a_reason(
    redis: aioredis.Redis, keys: Keys, redis_url: str, method: str, target: str, headers: bytes, body: bytes
) -> None:
    async with guarded_app(keys, redis_url) as srv:
        status, reason = await raw_request(srv.url, method, target, headers, body)
    assert 400 <= status < 500, (status, reason[:300])
    assert reason.strip() and "Traceback" not in reason


async def test_a_plain_http_get_of_the_websocket_route_says_what_it_is(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    async with guarded_app(keys, redis_url) as srv:
        status, reason = await raw_request(srv.url, "GET", "/ws")
    assert status == 400 and reason.startswith("/ws is a websocket: connect with a websocket client"), reason


async def test_a_block_with_a_bad_chat_or_post_blocks_no_one(redis: aioredis.Redis, keys: Keys, redis_url: str) -> None:
    async with guarded_app(keys, redis_url) as srv:
        for body in (b'{"account": "x:bob", "chat": 5}', b'{"account": "x:bob", "id": "abc"}'):
            status, _ = await raw_request(srv.url, "POST", "/api/mod/block", bearer(MOD_TOKEN) + JSON, body)
            assert status == 400
        status, rules = await raw_request(srv.url, "GET", "/api/mod/rules", bearer(MOD_TOKEN))
    assert status == 200 and json.loads(rules)["accounts"] == []


async def test_the_largest_feed_id_is_a_since_with_nothing_after_it(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    async with guarded_app(keys, redis_url) as srv:
        status, body = await raw_request(srv.url, "GET", f"/api/feed?since={MAX_ID}")
        assert status == 200 and json.loads(body)["items"] == []
        status, body = await raw_request(srv.url, "GET", "/api/feed?before=0-0")
        assert status == 200 and json.loads(body)["items"] == []
        status, body = await raw_request(srv.url, "GET", f"/api/mod/changes?after={MAX_ID}", bearer(MOD_TOKEN))
        assert status == 200 and json.loads(body) == {"id": MAX_ID}


async def test_a_moderator_name_in_bytes_that_are_not_utf8_is_still_a_name(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    async with guarded_app(keys, redis_url) as srv:
        headers = bearer(MOD_TOKEN) + JSON + b"X-Moderator: Zo\xeb\xff\r\n"
        status, _ = await raw_request(srv.url, "POST", "/api/mod/hide", headers, b'{"key": "x:1"}')
        assert status == 202
        status, audit = await raw_request(srv.url, "GET", "/api/mod/audit", bearer(MOD_TOKEN))
    [entry] = json.loads(audit)["items"]
    assert entry["who"].startswith("Zo")


async def test_a_webhook_record_with_a_lone_surrogate_key_is_answered_not_a_500(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    """The answer names the skipped record's keys; a key JSON spells as a lone surrogate must not break it (the fuzz
    pass found the 500)."""
    async with guarded_app(keys, redis_url) as srv:
        status, reason = await raw_request(srv.url, "POST", "/api/posts", bearer(HOOK_TOKEN) + JSON, b'{"\\ud800":1}')
    assert status < 500, (status, reason[:300])
    assert "\\ud800" in reason


async def test_a_request_that_cannot_be_parsed_is_one_info_line_not_an_error_with_a_traceback(
    keys: Keys, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    chats = ",".join(f"c{n}" for n in range(3000))  # a request line over aiohttp's 8 KiB
    async with guarded_app(keys, redis_url) as srv:
        with caplog.at_level(logging.INFO, logger="aiohttp.server"):
            status, _ = await raw_request(srv.url, "GET", f"/api/feed?chats={chats}")
            status_again, _ = await raw_request(srv.url, "GET", "/api/feed", b"X-Bad\x01Header: 1\r\n")
    assert (status, status_again) == (400, 400)
    lines = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(lines) == 2 and all(r.levelno == logging.INFO and r.exc_info is None for r in lines)
    assert "Error handling request from 127.0.0.1: Got more than 8190 bytes" in lines[0].getMessage()
    assert lines[0].getMessage().endswith("(answered 400)")
