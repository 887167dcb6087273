"""A moderator's pin and unpin on the wall of every profile, in real Chromium, with the real stages.

Posts go through the merge and shaping stages as `mixer run` starts them (``merge_forever``), so the
paced ``wall`` profile gets its own stream and ids; the wall page is opened on ``full`` and on ``wall``.
A pin must reach an open page at once, a reloaded page must show it from its hello, and after an unpin
neither an open nor a reloaded page may show it, also when the page was reloaded before the unpin landed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import redis.asyncio as aioredis
from playwright.async_api import Page, expect

from mixer.ingest.publish import Publisher
from mixer.keys import Keys
from mixer.runner import merge_forever
from mixer.settings import Settings
from tests import browser
from tests.browser import LiveServer, browser_settings
from tests.helpers import eventually, wall_post

chromium_page = browser.chromium_page

MOD_TOKEN = "m0d"
MOD_HEADERS = {"Authorization": f"Bearer {MOD_TOKEN}", "X-Moderator": "Dana"}
WAIT_MS = 10_000
CARDS = "#posts article.post"
PINNED = "#pinned:not([hidden]) article.post"


@dataclass
class Stages:
    """The merge and shaping stages as `mixer run` runs them; ``stop`` and ``start`` pause and resume them."""

    settings: Settings
    redis_url: str
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(merge_forever(self.settings, self.redis_url))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None


@dataclass
class Night:
    server: LiveServer
    stages: Stages
    publisher: Publisher


@asynccontextmanager
async def night_with_stages(redis_url: str, keys: Keys) -> AsyncIterator[Night]:
    settings = browser_settings(keys.prefix, moderation_token=MOD_TOKEN)
    server = LiveServer(settings, redis_url)
    client = aioredis.Redis.from_url(redis_url)
    stages = Stages(settings, redis_url)
    await server.start()
    stages.start()
    try:
        yield Night(server, stages, Publisher(client, keys, settings.chat_tags, 1000))
    finally:
        await stages.stop()
        await server.stop()
        await client.aclose()


@pytest.fixture
async def night(redis_url: str, keys: Keys) -> AsyncIterator[Night]:
    async with night_with_stages(redis_url, keys) as night:
        yield night


async def mod_action(server: LiveServer, action: str, body: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}api/mod/{action}", json=body, headers=MOD_HEADERS) as resp:
            assert resp.status == 202, await resp.text()


async def open_wall(page: Page, server: LiveServer, profile: str) -> None:
    await page.goto(server.url + "?" + urlencode({"profile": profile, "min_seconds": "0"}))
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=WAIT_MS)


async def reload(page: Page) -> None:
    await page.reload()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=WAIT_MS)


@pytest.mark.parametrize("profile", ["full", "wall"])
async def test_a_pin_and_an_unpin_reach_an_open_wall_and_a_reloaded_one_of_every_profile(
    night: Night, chromium_page: Page, profile: str
) -> None:
    page, server = chromium_page, night.server
    await open_wall(page, server, profile)
    await night.publisher.publish([wall_post("x:pin", text="Welcome! Questions come at :00, :15, :30")])
    await expect(page.locator(CARDS)).to_have_count(1, timeout=WAIT_MS)
    shown_id = await page.locator(CARDS).get_attribute("data-id")

    await mod_action(server, "pin", {"key": "x:pin"})
    await expect(page.locator(PINNED)).to_contain_text("Welcome!", timeout=WAIT_MS)
    # Under the id of the card it pins (each profile has its own), so the card's edits and hiding reach it.
    await expect(page.locator(PINNED)).to_have_attribute("data-id", shown_id or "")
    await reload(page)
    await expect(page.locator(PINNED)).to_contain_text("Welcome!")  # from the hello
    await expect(page.locator(PINNED)).to_have_attribute("data-id", shown_id or "")

    await mod_action(server, "unpin", {})
    await expect(page.locator("#pinned")).to_be_hidden(timeout=WAIT_MS)
    await reload(page)
    await expect(page.locator("#pinned")).to_be_hidden()
    await expect(page.locator("#pinned article")).to_have_count(0)


@pytest.mark.parametrize("profile", ["full", "wall"])
async def test_a_wall_reloaded_before_the_unpin_landed_drops_the_pin_when_it_lands(
    night: Night, chromium_page: Page, redis: aioredis.Redis, keys: Keys, profile: str
) -> None:
    page, server = chromium_page, night.server
    await night.publisher.publish([wall_post("x:pin", text="Tonight's host: @dana")])
    # (Redis keys the merge stage sets: nothing to await.) A pin names a post the feed already holds.
    await eventually(lambda: redis.hexists(keys.index, "x:pin"))
    await mod_action(server, "pin", {"key": "x:pin"})
    await eventually(lambda: redis.exists(keys.pinned))
    await open_wall(page, server, profile)
    await expect(page.locator(PINNED)).to_contain_text("Tonight's host")

    await night.stages.stop()  # the unpin waits for the merge stage: a reload now still gets the pin in its hello
    await mod_action(server, "unpin", {})
    await reload(page)
    await expect(page.locator(PINNED)).to_contain_text("Tonight's host")
    night.stages.start()
    await expect(page.locator("#pinned")).to_be_hidden(timeout=WAIT_MS)
    await reload(page)
    await expect(page.locator("#pinned")).to_be_hidden()
