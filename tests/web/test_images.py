"""Post images with their alt text on the wall and in the widget, in real Chromium.

The images come from a local image server on its own port (tests/web/media.py), which records every
request: so "nothing is loaded" (``?images=off``, a post hidden before it was shown, a post held for
approval) is checked on the wire, not only in the DOM.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import aiohttp
import msgpack
import pytest
import redis.asyncio as aioredis
from playwright.async_api import Locator, Page, expect

from mixer.codec import RETRACT_FIELD
from mixer.keys import Keys
from mixer.models import Post
from tests import browser
from tests.browser import LiveServer, Night, browser_settings, moderated_night
from tests.web import media
from tests.web.media import ImageHost, image, item_with, publish_items

chromium_page = browser.chromium_page
live_server = browser.live_server
image_host = media.image_host

WAIT_MS = 10_000
MOD_HEADERS = {"Authorization": "Bearer m0d", "X-Moderator": "Dana"}


def photos(host: ImageHost, prefix: str) -> list[dict[str, Any]]:
    """Six attachments of which three show: a described photo, one without alt, a video's preview."""
    return [
        image(host.url(f"{prefix}-counter.png"), alt="A bakery counter with bread rolls", width=640, height=480),
        image(host.url(f"{prefix}-plain.png"), width=300, height=600),
        image(host.url(f"{prefix}-clip.mp4"), alt="A clip of the oven", kind="video")
        | {"preview": host.url(f"{prefix}-clip-preview.png")},
        image(host.url(f"{prefix}-song.mp3"), alt="a song", kind="audio"),
        image("javascript:alert(1)", alt="not a URL"),
        image(host.url(f"{prefix}-noprev.mp4"), kind="gifv"),  # a GIF without a preview: nothing to show
    ]


async def wall(page: Page, server: LiveServer, **query: str) -> None:
    await page.goto(server.url + "?" + urlencode({"profile": "full", "min_seconds": "0"} | query))
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=WAIT_MS)


async def widget(page: Page, server: LiveServer, host: ImageHost, **data: str) -> Locator:
    attributes = " ".join(f'data-{name}="{value}"' for name, value in ({"profile": "full"} | data).items())
    await page.goto(host.page("blog.html", f'<script src="{server.url}embed.js" {attributes} async></script>'))
    feed = page.locator("chatmixer-feed")
    await expect(feed.locator(".status")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    return feed


async def check_images(card: Locator, host: ImageHost, prefix: str, badge: str) -> None:
    """The card shows exactly the three showable images, described, lazy, loaded, in reserved boxes."""
    imgs = card.locator("img:not(.avatar)")
    await expect(imgs).to_have_count(3, timeout=WAIT_MS)
    assert await imgs.evaluate_all("imgs => imgs.map((i) => i.getAttribute('alt'))") == [
        "A bakery counter with bread rolls",
        "",
        "A clip of the oven",
    ]
    for img in await imgs.all():
        for name, value in (("loading", "lazy"), ("decoding", "async"), ("referrerpolicy", "no-referrer")):
            await expect(img).to_have_attribute(name, value)
    await expect(card.locator(badge)).to_have_text(["ALT", "ALT"])
    await card.page.wait_for_function(
        "(imgs) => imgs.every((img) => img.complete && img.naturalWidth === 64)", arg=await imgs.element_handles()
    )
    # The box was reserved from width/height, not taken from the 64x48 file: a 4:3 and a 1:2 box of one height.
    boxes = [await img.bounding_box() for img in await imgs.all()]
    assert all(box is not None for box in boxes)
    counter, plain = boxes[0], boxes[1]
    assert counter is not None and plain is not None
    assert counter["height"] == pytest.approx(plain["height"], abs=0.5) and counter["height"] > 60
    assert counter["width"] == pytest.approx(counter["height"] * 4 / 3, abs=1.5)
    assert plain["width"] == pytest.approx(plain["height"] * 0.5, abs=1.5)
    assert sorted(host.requested) == sorted(f"/img/{prefix}-{n}.png" for n in ("counter", "plain", "clip-preview"))


async def test_the_wall_shows_image_attachments_with_their_alt_text_lazily_and_only_http(
    live_server: LiveServer, chromium_page: Page, image_host: ImageHost, redis: aioredis.Redis, keys: Keys
) -> None:
    page = chromium_page
    await wall(page, live_server)
    (post_id,) = await publish_items(redis, keys, item_with("x:bakery", "Our counter!", photos(image_host, "w")))
    await check_images(page.locator(f'#posts [data-id="{post_id}"]'), image_host, "w", ".alt-badge")


async def test_the_widget_shows_image_attachments_with_their_alt_text_lazily_and_only_http(
    live_server: LiveServer, chromium_page: Page, image_host: ImageHost, redis: aioredis.Redis, keys: Keys
) -> None:
    feed = await widget(chromium_page, live_server, image_host)
    (post_id,) = await publish_items(redis, keys, item_with("x:bakery", "Our counter!", photos(image_host, "e")))
    await check_images(feed.locator(f'article[data-id="{post_id}"]'), image_host, "e", ".alt")


async def test_with_images_off_wall_and_widget_show_no_image_and_request_none(
    live_server: LiveServer, chromium_page: Page, image_host: ImageHost, redis: aioredis.Redis, keys: Keys
) -> None:
    page = chromium_page
    item = item_with("x:quiet", "text only tonight", photos(image_host, "off"))
    item["author"]["avatar"] = image_host.url("avatar.png")
    await wall(page, live_server, images="off")
    (post_id,) = await publish_items(redis, keys, item)
    shown = page.locator(f'#posts [data-id="{post_id}"]')
    await expect(shown).to_contain_text("text only tonight", timeout=WAIT_MS)
    await expect(shown.locator(".avatar-fallback")).to_have_text("A")
    assert await page.locator("#posts img").count() == 0

    feed = await widget(page, live_server, image_host, images="off")
    await expect(feed.locator(f'article[data-id="{post_id}"]')).to_contain_text("text only tonight")
    await expect(feed.locator(".initial")).to_have_text("A")
    assert await feed.locator("img").count() == 0
    assert image_host.requested == []


async def test_a_post_hidden_before_its_turn_loads_nothing_and_a_hidden_cards_images_go(
    live_server: LiveServer, chromium_page: Page, image_host: ImageHost, redis: aioredis.Redis, keys: Keys
) -> None:
    page = chromium_page
    await wall(page, live_server, min_seconds="600")  # the second post waits minutes for its turn
    shown_id, waiting_id = await publish_items(
        redis,
        keys,
        item_with("x:shown", "first", [image(image_host.url("shown.png"), alt="shown")]),
        item_with("x:waiting", "second", [image(image_host.url("hidden.png"), alt="hidden")]),
    )
    shown = page.locator(f'#posts [data-id="{shown_id}"] img.post-media')
    await expect(shown).to_have_attribute("alt", "shown", timeout=WAIT_MS)
    await expect(page.locator("#waiting")).to_have_text("1 more post coming up")
    await redis.xadd(keys.feed, {RETRACT_FIELD: msgpack.packb({"ids": [waiting_id, shown_id], "keys": []})})
    await expect(page.locator("#waiting")).to_be_hidden(timeout=WAIT_MS)
    await expect(page.locator("#posts img")).to_have_count(0)  # the shown card went, its image with it
    assert image_host.requested == ["/img/shown.png"]


@pytest.fixture
async def night(redis_url: str, keys: Keys) -> AsyncIterator[Night]:
    settings = browser_settings(keys.prefix, moderation_token="m0d")
    async with moderated_night(settings, redis_url, keys) as night:
        yield night


async def mod(night: Night, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    async with aiohttp.ClientSession(headers=MOD_HEADERS) as http:
        async with http.request(method, f"{night.url}/api/mod/{path}", json=body) as resp:
            assert resp.status < 300, await resp.text()
            return await resp.json()


async def test_a_post_held_for_approval_loads_no_image_until_a_moderator_approves_it(
    night: Night, chromium_page: Page, image_host: ImageHost
) -> None:
    held = Post.from_dict(
        item_with("x:held", "held for approval", [image(image_host.url("held.png"), alt="held")]) | {"id": "0-1"}
    )
    if "attachments" not in held.to_dict():
        pytest.skip("the Post model does not carry attachments yet")
    page = chromium_page
    await mod(night, "POST", "approval", {"on": True})
    await wall(page, night.server)
    await night.publish(held)
    async with asyncio.timeout(WAIT_MS / 1000):
        while not (await mod(night, "GET", "queue"))["items"]:  # noqa: ASYNC110 - polling the API, as a console does
            await asyncio.sleep(0.05)
    assert await page.locator("#posts article").count() == 0
    assert image_host.requested == []
    await mod(night, "POST", "approve", {"key": "x:held"})
    await expect(page.locator("#posts img.post-media")).to_have_attribute("alt", "held", timeout=WAIT_MS)
    await page.wait_for_function("() => document.querySelector('#posts img.post-media').complete")
    assert image_host.requested == ["/img/held.png"]
