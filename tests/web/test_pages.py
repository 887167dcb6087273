"""What every page of the server shares, in real Chromium: it loads without a failed request, our icon included.

The wall, the console, the widget's iframe page and the builder each link ``/static/favicon.svg``;
``/favicon.ico`` answers too, for browsers and tools that ask for it whatever a page links.
"""

from __future__ import annotations

import aiohttp
import pytest
from playwright.async_api import ConsoleMessage, Page, Response

from tests import browser
from tests.browser import LiveServer

chromium_page = browser.chromium_page
live_server = browser.live_server

WAIT_MS = 10_000


async def test_favicon_ico_answers_with_our_icon_as_an_image(live_server: LiveServer) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("favicon.ico", "static/favicon.svg"):
            async with http.get(live_server.url + path) as resp:
                assert resp.status == 200, path
                assert resp.content_type == "image/svg+xml", path
                assert b"<svg" in await resp.read()
                assert resp.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path", ["", "mod", "embed", "embed/builder"])
async def test_every_page_loads_its_icon_and_nothing_it_asks_for_fails(
    live_server: LiveServer, chromium_page: Page, path: str
) -> None:
    page = chromium_page
    failed: list[str] = []

    def note_response(response: Response) -> None:
        if response.status >= 400:
            failed.append(f"{response.status} {response.url}")

    def note_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            failed.append(message.text)

    page.on("response", note_response)
    page.on("console", note_console)
    async with page.expect_response(lambda r: r.url.endswith("/favicon.svg"), timeout=WAIT_MS) as icon:
        await page.goto(live_server.url + path)
    assert (await icon.value).status == 200
    await page.wait_for_load_state("networkidle", timeout=WAIT_MS)
    assert failed == []
