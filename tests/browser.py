"""Fixtures for real-browser tests: the fan-out app on a real port, and headless Chromium.

``live_server`` runs the fan-out app (``build_app``) in-process (``AppRunner`` + ``TCPSite`` on 127.0.0.1,
port 0) on the test's Redis prefix, is ready (``/readyz``) before the test starts, and can
be stopped and started again on the same port. ``chromium_page`` is a Playwright page
(async API, so it shares the pytest-asyncio loop with the server) in a fresh Chromium
profile; an uncaught JavaScript error on the page fails the test at teardown.
``moderated_night`` serves the app with the merge stage running (moderation applies), and
``record_dialogs`` catches any dialog a hostile post manages to open. ``looks_the_same_without`` compares a part of
the page as shown with and without one element (``pixels_apart``, ``box_of``), as for ``zalgo`` text.

Use them from a test module by binding them as module attributes (``live_server = browser.live_server``).
Not here: the wall's own assertions (``test_web_wall.py``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import msgpack
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from playwright.async_api import Dialog, Locator, Page, Route, WebSocketRoute, async_playwright, expect
from playwright.async_api import Error as PlaywrightError

from mixer.codec import EDIT_FIELD, FIELD, pack, pack_post
from mixer.ingest.publish import Publisher
from mixer.keys import Keys
from mixer.merge.stage import MergeStage
from mixer.models import Post
from mixer.runner import build_app
from mixer.settings import ChatSettings, Settings
from mixer.streams import dedicated_client
from tests.helpers import live_all_day_now, wall_post

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
READY_TIMEOUT = 10.0
WAIT_MS = 10_000  # for anything a page should show promptly
RECONNECT_WAIT_MS = 30_000  # a reconnect waits out the backoff

# The chats every browser test's server knows: a few from the brief plus those of the demo recording.
TEST_CHATS = (
    ChatSettings("smbiz", "Small business marketing", "#4fc3f7", schedule=live_all_day_now()),
    ChatSettings("edchat", "Teachers and education", "#ffb74d"),
    ChatSettings("journchat", "Journalists and PR", "#e57373", schedule="Mon 20:00-22:00 America/New_York"),
    ChatSettings("blogchat", "Bloggers", "#81c784"),
    ChatSettings("pstweetchat", "PowerShell tweet chat", "#2f6fce"),
    ChatSettings("powershell", "PowerShell", "#ba68c8"),
    ChatSettings("pshsummit", "PowerShell Summit", "#fff176"),
)


class LiveServer:
    """The fan-out app served on 127.0.0.1; ``stop()`` then ``start()`` keeps the same port."""

    def __init__(self, settings: Settings, redis_url: str) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.port = 0  # 0 until the first start picks a free one
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        """Serve a new app (fresh hub and follower) and return once ``/readyz`` answers 200."""
        runner = web.AppRunner(build_app(self.settings, self.redis_url))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        await self._wait_ready()

    async def stop(self) -> None:
        """Close every websocket (GOING_AWAY) and stop listening."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _wait_ready(self) -> None:
        async with aiohttp.ClientSession() as session, asyncio.timeout(READY_TIMEOUT):
            while True:
                async with session.get(f"{self.url}readyz") as response:
                    if response.status == 200:
                        return
                await asyncio.sleep(0.05)  # polling the probe, as a load balancer would


def browser_settings(prefix: str, **changes: Any) -> Settings:
    """The settings every browser test's server starts from (``TEST_CHATS``, the event), with ``changes``."""
    base: dict[str, Any] = {
        "chats": TEST_CHATS,
        "key_prefix": prefix,
        "event_name": "#chatmixer night",
        "event_hashtag": "chatmixer",
        "stats_seconds": 1.0,  # the legend's rates and sparklines update within a second
    }
    return Settings(**(base | changes))


@pytest.fixture
async def live_server(redis_url: str, keys: Keys) -> AsyncIterator[LiveServer]:
    server = LiveServer(browser_settings(keys.prefix), redis_url)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@dataclass
class Night:
    """A live server with the merge stage running, and a publisher into its chat streams, so posts pass
    through moderation and the approval queue as on a real night."""

    server: LiveServer
    publisher: Publisher

    @property
    def url(self) -> str:
        return self.server.url.rstrip("/")

    async def publish(self, *posts: Post) -> None:
        await self.publisher.publish(list(posts))


@asynccontextmanager
async def moderated_night(settings: Settings, redis_url: str, keys: Keys) -> AsyncIterator[Night]:
    """Serve ``settings`` (give them a ``moderation_token``) with a merge stage running beside the server."""
    conn = dedicated_client(redis_url, 1000)  # the merge stage blocks in XREAD on it
    client = aioredis.Redis.from_url(redis_url)
    merge = MergeStage(conn, keys, settings.chat_tags, window=0.05)
    server = LiveServer(settings, redis_url)
    await server.start()
    task = asyncio.create_task(merge.run())
    try:
        yield Night(server, Publisher(client, keys, settings.chat_tags, 1000))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.stop()
        await conn.aclose()
        await client.aclose()


# Installed before the page's own scripts: every websocket message the page gets is noted in window.socketFrames
# before the page's handlers see it (one dispatch), so a test can await a frame whose effect is not visible.
WATCH_SOCKET_FRAMES = """(() => {
  const Native = window.WebSocket;
  window.socketFrames = [];
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (event) => window.socketFrames.push(String(event.data)));
    }
  };
})()"""


async def watch_socket_frames(page: Page) -> None:
    """From the next load on, note the page's websocket messages (see ``socket_frame_handled``)."""
    await page.add_init_script(WATCH_SOCKET_FRAMES)


async def socket_frame_handled(page: Page, text: str) -> None:
    """Return once the page has handled a websocket message containing ``text`` (``watch_socket_frames`` first)."""
    await page.wait_for_function("text => window.socketFrames.some((frame) => frame.includes(text))", arg=text)


class HeldResponse:
    """Route the page's next request matching a pattern: read from the server at once, handed to the page only
    once ``release()`` is called, so a test can act while the page waits for it."""

    def __init__(self) -> None:
        self.fetched = asyncio.Event()
        self._released = asyncio.Event()

    async def route(self, page: Page, pattern: str) -> None:
        await page.route(pattern, self._handle, times=1)

    async def _handle(self, route: Route) -> None:
        response = await route.fetch()
        self.fetched.set()
        await self._released.wait()
        await route.fulfill(response=response)

    def release(self) -> None:
        self._released.set()


async def reset_during_reload(
    page: Page, redis: aioredis.Redis, keys: Keys, open_feed: Callable[[], Awaitable[Page | Locator]], cards: str
) -> None:
    """A page showing the feed (the wall, the widget: ``open_feed`` loads it, returns the scope holding its
    ``cards``) keeps a post that arrives while it reloads after a ``reset``, once, and resumes from the reset's
    cursor. The websocket is relayed through Playwright, which adds a post the feed then loses (as in a Redis
    failover) and the reset; the reload's answer is held while the socket drops, comes back and a live post arrives.
    """
    # The reload used to wipe a post that arrived before its answer, and a resume asked from the lost post's id.
    sockets: asyncio.Queue[tuple[WebSocketRoute, WebSocketRoute]] = asyncio.Queue()
    await page.route_web_socket("**/ws?*", lambda ws: sockets.put_nowait((ws, ws.connect_to_server())))
    await watch_socket_frames(page)
    older, newest = await publish(redis, keys, wall_post("x:older", text="older"), wall_post("x:newest", text="newest"))
    feed = await open_feed()

    def card(post_id: str) -> Locator:
        return feed.locator(f'{cards}[data-id="{post_id}"]')

    async def shown_ids() -> list[str]:
        return await feed.locator(cards).evaluate_all("cards => cards.map(c => c.dataset.id)")

    await expect(feed.locator(cards)).to_have_count(2, timeout=WAIT_MS)
    page_side, server_side = sockets.get_nowait()
    lost = {**wall_post("x:lost", text="lost in a failover").to_dict(), "id": "99999999999999-0"}
    page_side.send(json.dumps({"type": "posts", "items": [lost]}))
    await expect(card(lost["id"])).to_be_visible(timeout=WAIT_MS)

    # Hidden as the merge stage records it in the index, with no live frame: only the reload can show it.
    await redis.hset(keys.index, "x:older", msgpack.packb({"key": "x:older", "retracted": True}))
    reload = HeldResponse()
    await reload.route(page, "**/api/feed?*")
    page_side.send(json.dumps({"type": "reset", "cursor": newest}))
    await asyncio.wait_for(reload.fetched.wait(), WAIT_MS / 1000)
    await page_side.close(code=1001)
    await server_side.close()
    resumed, _ = await asyncio.wait_for(sockets.get(), RECONNECT_WAIT_MS / 1000)
    assert parse_qs(urlsplit(resumed.url).query)["since"] == [newest], "a resume carries on from the reset's cursor"
    (live,) = await publish(redis, keys, wall_post("x:live", text="live while the page reloads"))
    await socket_frame_handled(page, "live while the page reloads")

    reload.release()
    await expect(card(older)).to_have_count(0, timeout=WAIT_MS)  # the reload is applied
    await expect(card(live)).to_be_visible(timeout=WAIT_MS)
    assert await shown_ids() == [live, newest]
    (after,) = await publish(redis, keys, wall_post("x:after", text="after the reset"))
    await expect(card(after)).to_be_visible(timeout=WAIT_MS)
    assert await shown_ids() == [after, live, newest]


def record_dialogs(page: Page) -> list[str]:
    """The messages of every dialog ``page`` opens from now on (each dismissed): script a hostile post ran."""
    dialogs: list[str] = []

    async def record_and_dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", record_and_dismiss)
    return dialogs


@pytest.fixture
async def chromium_page(tmp_path: Path) -> AsyncIterator[Page]:
    if not CHROMIUM.exists():
        pytest.skip(f"browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    errors: list[str] = []
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile",
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800},
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            yield page
        finally:
            try:
                await context.close()
            except PlaywrightError:
                pass  # the browser already went away; nothing left to close
    assert not errors, f"uncaught JavaScript errors on the page: {errors}"


async def publish(redis: aioredis.Redis, keys: Keys, *posts: Post) -> list[str]:
    """Append posts to the merged feed, as the merge stage would; returns their feed ids in order."""
    ids = []
    for post in posts:
        entry_id = await redis.xadd(keys.feed, {FIELD: pack_post(post)})
        ids.append(entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id))
    return ids


async def publish_join(redis: aioredis.Redis, keys: Keys, post: Post, post_id: str, joined: list[str]) -> None:
    """What the merge stage writes when ``post`` (in the feed under ``post_id``) gains the chats ``joined`` after it
    was released (a union twin, an edit adding a hashtag): the index updated, and an update entry naming them."""
    now = {**post.to_dict(), "id": post_id, "chats": [*post.chats, *(c for c in joined if c not in post.chats)]}
    await redis.hset(keys.index, post.key, pack(now))
    await redis.xadd(keys.feed, {EDIT_FIELD: msgpack.packb({**now, "joined": joined})})


def png_bytes(width: int, height: int, top: tuple[int, int, int], bottom: tuple[int, int, int]) -> bytes:
    """A small vertical-gradient PNG, to serve as an avatar or media image without any network."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack("!I", len(data)) + body + struct.pack("!I", zlib.crc32(body))

    rows = bytearray()
    for y in range(height):
        mix = y / max(1, height - 1)
        pixel = bytes(round(a + (b - a) * mix) for a, b in zip(top, bottom, strict=True))
        rows += b"\x00" + pixel * width
    header = struct.pack("!IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(rows))) + chunk(b"IEND", b"")
    )


MARKS_ABOVE = "\u0301\u0300\u0308" * 8  # combining acute, grave and diaeresis, stacked over a letter
MARKS_BELOW = "\u0316\u0317\u0324" * 8  # and grave, acute and diaeresis below, under it


def zalgo(word: str) -> str:
    return "".join(letter + MARKS_ABOVE + MARKS_BELOW for letter in word)


# Run in the page: how many pixels of two PNG screenshots (base64) differ by more than the shade an antialiased edge
# may take from one screenshot to the next.
PIXELS_APART = """async ([a, b]) => {
  const pixels = async (png) => {
    const bytes = Uint8Array.from(atob(png), (c) => c.charCodeAt(0));
    const bitmap = await createImageBitmap(new Blob([bytes], { type: "image/png" }));
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    canvas.getContext("2d").drawImage(bitmap, 0, 0);
    return canvas.getContext("2d").getImageData(0, 0, bitmap.width, bitmap.height).data;
  };
  const [one, two] = await Promise.all([pixels(a), pixels(b)]);
  let apart = 0;
  for (let i = 0; i < one.length; i += 4) {
    if ([0, 1, 2].some((k) => Math.abs(one[i + k] - two[i + k]) > 16)) apart += 1;
  }
  return apart;
}"""


async def pixels_apart(page: Page, one: bytes, two: bytes) -> int:
    return int(await page.evaluate(PIXELS_APART, [base64.b64encode(one).decode(), base64.b64encode(two).decode()]))


async def looks_the_same_without(page: Page, box: dict[str, float], hidden: Locator) -> bool:
    """Whether the page within ``box`` looks the same with ``hidden`` made invisible (its place kept)."""
    seen = await page.screenshot(clip=box)
    await hidden.evaluate("el => el.style.setProperty('visibility', 'hidden')")
    without = await page.screenshot(clip=box)
    await hidden.evaluate("el => el.style.removeProperty('visibility')")
    return await pixels_apart(page, seen, without) == 0


async def box_of(locator: Locator, *, top: float = 0, bottom: float = 0) -> dict[str, float]:
    """The locator's box on the page, taller by ``top`` above and ``bottom`` below."""
    box = await locator.bounding_box()
    assert box is not None
    return {"x": box["x"], "y": box["y"] - top, "width": box["width"], "height": box["height"] + top + bottom}
