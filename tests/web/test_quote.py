"""A quote post's "quoting" line on the wall and in the widget (its /embed page), in real headless Chromium: a real
X v2 quote tweet parsed as ingest does, its line a link to the quoted post, and a hostile quote shown only as text."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import redis.asyncio as aioredis
from playwright.async_api import Locator, Page, expect

from mixer.ingest.hashtags import ChatMatcher
from mixer.ingest.sources.x_v2 import parse_v2
from mixer.keys import Keys
from mixer.models import Post
from tests import browser
from tests.browser import LiveServer, publish
from tests.helpers import FIXTURES, now_ms, wall_post

chromium_page = browser.chromium_page
live_server = browser.live_server

WAIT_MS = 10_000
QUOTING_ID = "1440715332310630403"  # "#Trade with USA #Brexit ..." quoting 1440527117482020869 (brexit.jsonl)


def real_quote() -> tuple[Post, Post]:
    """The quoted tweet and the quote tweet of a real v2 search response, in chat smbiz, created now."""
    [message] = [json.loads(line) for line in (FIXTURES / "x-v2" / "brexit.jsonl").read_bytes().splitlines()]
    tweet = next(t for t in message["data"] if t["id"] == QUOTING_ID)
    message = {"data": [tweet], "includes": message["includes"]}
    quoted, quoting = (
        p.replace(chats=("smbiz",), created=now_ms())
        for p in parse_v2(message, ChatMatcher(None), now_ms())
        if isinstance(p, Post)
    )
    assert quoting.quote_of == quoted.key
    return quoted, quoting


def hostile(quoting: Post) -> Post:
    return quoting.replace(key="x:hostile", quote_url="javascript:alert(1)<img src=x onerror=alert(2)>")


async def expect_quote_lines(scope: Page | Locator, line: str, quoting_id: str, plain_id: str, hostile_id: str) -> None:
    quote = scope.locator(f'article[data-id="{quoting_id}"] {line}')
    await expect(quote).to_have_text(
        "\u21aa quoting twitter.com/RepBrendanBoyle/status/1440527117482020869", timeout=WAIT_MS
    )
    link = quote.locator("a")
    await expect(link).to_have_attribute("href", "https://twitter.com/RepBrendanBoyle/status/1440527117482020869")
    await expect(link).to_have_attribute("rel", "noopener nofollow noreferrer")
    await expect(scope.locator(f'article[data-id="{plain_id}"]')).to_be_visible()
    await expect(scope.locator(f'article[data-id="{plain_id}"] {line}')).to_have_count(0)  # not a quote: no line
    bad = scope.locator(f'article[data-id="{hostile_id}"] {line}')
    await expect(bad).to_have_text("\u21aa quoting a post")  # not http(s): no link, and never markup
    await expect(bad.locator("a, img")).to_have_count(0)


async def test_a_quote_tweet_shows_a_quoting_line_linking_to_the_quoted_post_on_the_wall_and_the_widget(
    live_server: LiveServer, chromium_page: Page, redis: aioredis.Redis, keys: Keys
) -> None:
    quoted, quoting = real_quote()  # (the quoted tweet quotes another one in turn)
    plain = wall_post("x:plain", ("smbiz",), "A1: no quote here")
    _, quoting_id, plain_id, hostile_id = await publish(redis, keys, quoted, quoting, plain, hostile(quoting))
    page = chromium_page
    await page.goto(live_server.url + "?" + urlencode({"profile": "full", "min_seconds": "0"}))
    await expect_quote_lines(page, ".post-quote", quoting_id, plain_id, hostile_id)
    await page.goto(live_server.url + "embed?" + urlencode({"chats": "smbiz", "profile": "full"}))
    await expect_quote_lines(page.locator("chatmixer-feed"), ".quote", quoting_id, plain_id, hostile_id)
