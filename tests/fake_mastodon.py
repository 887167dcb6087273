"""A Mastodon instance on 127.0.0.1 serving real statuses (tests/fixtures/mastodon/ORIGIN.md): tag timelines
(min_id/since_id paging, scripted errors), the streaming websocket and server-sent events. To make the real
statuses belong to the followed chat, each is tagged #hoot (its ``tags`` list; nothing else is changed)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from tests.helpers import FIXTURES

MASTODON = FIXTURES / "mastodon"


def load(name: str) -> Any:
    return json.loads((MASTODON / name).read_text())


def real_statuses() -> list[dict[str, Any]]:
    """Every distinct public status in the fixtures (latest version), tagged #hoot, oldest first."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(MASTODON.glob("test_*.json")):
        body = load(path.name)
        for status in body if isinstance(body, list) else [body]:
            if not isinstance(status, dict) or "account" not in status or status.get("content") is None:
                continue
            if status.get("reblog") or status.get("quote") or status["visibility"] not in ("public", "unlisted"):
                continue
            found[status["id"]] = status
    tagged = []
    for status in sorted(found.values(), key=lambda s: int(s["id"])):
        status = copy.deepcopy(status)
        status["tags"] = [{"name": "hoot", "url": "http://localhost:3000/tags/hoot"}]
        tagged.append(status)
    return tagged


STATUSES = real_statuses()


def key_of(status: dict[str, Any]) -> str:
    return "mastodon:" + status["uri"]


def iso_in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


class FakeMastodon:
    """A Mastodon instance on 127.0.0.1: tag timelines, streaming over websocket (optional) and SSE."""

    def __init__(self, websocket: bool = True) -> None:
        self.timeline: list[dict[str, Any]] = []
        self.websocket = websocket
        self.requests: list[tuple[float, dict[str, str]]] = []  # (wall time, query) of each timeline GET
        self.scripted: list[tuple[int, dict[str, str]]] = []  # next timeline answers: (status, extra headers)
        self.held = 0  # how many of the next timeline requests get no answer at all (a stalled server)
        self.hanging: set[str] = set()  # tags whose timeline requests never get an answer (one slow tag)
        self.asked: Counter[str] = Counter()  # timeline requests, by tag
        self.waiting: Counter[str] = Counter()  # timeline requests not answered yet, by tag
        self.on_subscribe: list[tuple[str, str]] = []  # events streamed right after every subscription
        self.subscribed = asyncio.Event()
        self.connections: Counter[str] = Counter()  # streaming connections accepted, by transport
        self._sse: list[asyncio.Queue[bytes | None]] = []
        self._ws: list[web.WebSocketResponse] = []
        self.url = ""
        app = web.Application()
        app.router.add_get("/api/v2/instance", self.instance)
        app.router.add_get("/api/v1/timelines/tag/{tag}", self.tag_timeline)
        app.router.add_get("/api/v1/streaming", self.streaming_ws)
        app.router.add_get("/api/v1/streaming/hashtag", self.streaming_sse)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        await self.drop()
        await self._runner.cleanup()

    async def instance(self, request: web.Request) -> web.Response:
        doc = load("test_hashtag_tl.01.json")  # the real /api/v2/instance answer, pointed at this server
        doc["configuration"]["urls"]["streaming"] = self.url.replace("http://", "ws://")
        return web.json_response(doc)

    async def tag_timeline(self, request: web.Request) -> web.Response:
        tag = request.match_info["tag"]
        self.asked[tag] += 1
        if tag in self.hanging:
            self.waiting[tag] += 1
            try:
                await asyncio.Event().wait()  # until the client gives up (or the server closes)
            finally:
                self.waiting[tag] -= 1
        self.requests.append((time.time(), dict(request.query)))
        if self.held:
            self.held -= 1
            await asyncio.Event().wait()
        status, headers = self.scripted.pop(0) if self.scripted else (200, {})
        if status != 200:
            return web.json_response({"error": "Too many requests"}, status=status, headers=headers)
        if "X-Fake-Body" in headers:  # a proxy's error page instead of the timeline
            return web.Response(text=headers["X-Fake-Body"], content_type="text/html")
        query = request.query
        limit = min(40, int(query.get("limit", "20")))
        statuses = sorted(self.timeline, key=lambda s: int(s["id"]))
        if "min_id" in query:  # the oldest `limit` after min_id (answered newest first, as Mastodon does)
            page = [s for s in statuses if int(s["id"]) > int(query["min_id"])][:limit]
        else:
            since = int(query.get("since_id", "0"))
            page = [s for s in statuses if int(s["id"]) > since][-limit:]
        return web.Response(text=json.dumps(page[::-1]), content_type="application/json", headers=headers)

    async def streaming_ws(self, request: web.Request) -> web.StreamResponse:
        if not self.websocket:
            raise web.HTTPNotFound()
        assert request.headers.get("Authorization") == "Bearer t0ken"
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections["ws"] += 1
        self._ws.append(ws)
        async for message in ws:
            if message.type is WSMsgType.TEXT and json.loads(message.data).get("type") == "subscribe":
                for event, payload in self.on_subscribe:
                    await ws.send_json({"stream": ["hashtag", "hoot"], "event": event, "payload": payload})
                self.subscribed.set()
        return ws

    async def streaming_sse(self, request: web.Request) -> web.StreamResponse:
        assert request.query["tag"] == "hoot" and request.headers.get("Authorization") == "Bearer t0ken"
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b":)\n")
        self.connections["sse"] += 1
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        for event, payload in self.on_subscribe:
            queue.put_nowait(f"event: {event}\ndata: {payload}\n\n".encode())
        self._sse.append(queue)
        self.subscribed.set()
        while (chunk := await queue.get()) is not None:
            await response.write(chunk)
        with contextlib.suppress(ConnectionError):
            await response.write(b'event: update\ndata: {"id":"1170')  # dropped mid-event
        return response

    async def push(self, event: str, payload: str) -> None:
        """Stream an event to every subscriber, as the streaming server does."""
        for queue in self._sse:
            queue.put_nowait(f":thump\nevent: {event}\ndata: {payload}\n\n".encode())
        for ws in self._ws:
            if not ws.closed:
                await ws.send_json({"stream": ["hashtag", "hoot"], "event": event, "payload": payload})

    async def post(self, status: dict[str, Any]) -> None:
        """A new status: in the timeline and on the stream."""
        self.timeline.append(status)
        await self.push("update", json.dumps(status))

    async def drop(self) -> None:
        """Cut every streaming connection."""
        self.subscribed.clear()
        for queue in self._sse:
            queue.put_nowait(None)
        for ws in self._ws:
            await ws.close(code=WSCloseCode.SERVICE_RESTART)
        self._sse, self._ws = [], []


@contextlib.asynccontextmanager
async def serving_mastodon(websocket: bool = True) -> AsyncIterator[FakeMastodon]:
    """A started ``FakeMastodon``, closed on exit."""
    server = FakeMastodon(websocket)
    await server.start()
    try:
        yield server
    finally:
        await server.close()
