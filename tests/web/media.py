"""Helpers for the image and glide browser tests: a local image server and posts with attachments.

``ImageHost`` is a real aiohttp server on 127.0.0.1 (its own port, so another origin) serving one small
PNG at any ``/img/...`` path and recording every path asked for, so a test can tell which images a page
really requested; it also serves host pages (a blog embedding the widget) at ``/page/...``.
``publish_items`` appends raw Post dicts (with ``attachments``) to the merged feed as the merge stage
writes them; the fan-out passes stored items on as they are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from mixer.codec import FIELD
from mixer.keys import Keys
from tests.browser import png_bytes
from tests.helpers import wall_post
from tests.servers import serving

PNG = png_bytes(64, 48, (90, 170, 220), (30, 60, 120))


class ImageHost:
    """Serves ``PNG`` at ``/img/<anything>`` and remembers each path requested, in order."""

    def __init__(self) -> None:
        self.base = ""  # http://127.0.0.1:PORT once served
        self.requested: list[str] = []
        self.pages: dict[str, str] = {}

    def page(self, name: str, body: str) -> str:
        """Serve ``body`` as an HTML page; returns its URL."""
        self.pages[name] = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>A blog</title></head>'
            f"<body>{body}</body></html>"
        )
        return f"{self.base}/page/{name}"

    async def serve_page(self, request: web.Request) -> web.Response:
        if request.match_info["name"] not in self.pages:
            raise web.HTTPNotFound()
        return web.Response(text=self.pages[request.match_info["name"]], content_type="text/html")

    def url(self, name: str) -> str:
        return f"{self.base}/img/{name}"

    async def handle(self, request: web.Request) -> web.Response:
        if request.path.startswith("/img/"):
            self.requested.append(request.path)
        return web.Response(body=PNG, content_type="image/png", headers={"Cache-Control": "no-store"})


@pytest.fixture
async def image_host() -> AsyncIterator[ImageHost]:
    host = ImageHost()
    app = web.Application()
    app.router.add_get("/img/{name}", host.handle)
    app.router.add_get("/page/{name}", host.serve_page)
    app.router.add_get("/favicon.ico", host.handle)  # the host page's own icon: no 404 in the console
    async with serving(app) as base:
        host.base = base
        yield host


def image(url: str, alt: str | None = None, width: int = 640, height: int = 480, kind: str = "image") -> dict[str, Any]:
    """One attachment as the Post contract writes it."""
    item: dict[str, Any] = {"kind": kind, "url": url, "width": width, "height": height}
    if alt is not None:
        item["alt"] = alt
    return item


def item_with(
    key: str, text: str, attachments: list[dict[str, Any]], chats: tuple[str, ...] = ("smbiz",)
) -> dict[str, Any]:
    """A post's contract dict (no id) carrying ``attachments``."""
    data = wall_post(key, chats, text).to_dict()
    del data["id"]
    return data | {"attachments": attachments}


async def publish_items(redis: aioredis.Redis, keys: Keys, *items: dict[str, Any]) -> list[str]:
    """Append raw post dicts to the merged feed; returns their feed ids in order."""
    ids = []
    for item in items:
        entry_id = await redis.xadd(keys.feed, {FIELD: msgpack.packb(item, use_bin_type=True)})
        ids.append(entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id))
    return ids
