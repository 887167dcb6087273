"""A Jetstream on 127.0.0.1 for tests, serving the real golden events (tests/fixtures/bluesky/ORIGIN.md) and posts
built from them: ``FakeJetstream`` answers ``/subscribe`` from the requested cursor, with scripted refusals, cuts
and silences (``Plan``); ``post_event`` re-texts, re-tags or re-embeds the golden post."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.helpers import FIXTURES
from tests.servers import serving

GOLDEN: list[dict[str, Any]] = [
    json.loads(line) for line in (FIXTURES / "bluesky" / "subscribe_golden_v1.jsonl").read_text().splitlines()
]
GOLDEN_POST = GOLDEN[1]
POSTER = "did:plc:q235v55g5unth4zjjdpacfdr"
BASE_US = 1_779_719_011_000_000  # generated posts come after the golden events (time_us up to ...010_689_411)


def post_event(
    rkey: str,
    text: str = "Hello",
    tags: list[str] | tuple[str, ...] = (),
    *,
    time_us: int = BASE_US,
    outline: list[str] | None = None,
    embed: dict[str, Any] | None = None,
    operation: str = "create",
) -> dict[str, Any]:
    """The golden post (a real reply) with new text, facet tags, outline tags or embed."""
    event = copy.deepcopy(GOLDEN_POST)
    event["time_us"] = time_us
    event["commit"].update(rkey=rkey, operation=operation)
    record = event["commit"]["record"]
    record["text"] = text + "".join(f" #{tag}" for tag in tags)
    facets = []
    for tag in tags:
        start = record["text"].encode().index(f"#{tag}".encode())
        facets.append(
            {
                "index": {"byteStart": start, "byteEnd": start + len(f"#{tag}".encode())},
                "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": tag}],
            }
        )
    if facets:
        record["facets"] = facets
    if outline is not None:
        record["tags"] = outline
    if embed is not None:
        record["embed"] = embed
    return event


@dataclass
class Plan:
    """What the fake Jetstream does on one connection."""

    status: int = 0  # refuse the upgrade with this HTTP status (e.g. 429)
    headers: dict[str, str] = field(default_factory=dict)
    cut_after: int | None = None  # after this many messages, drop the TCP connection (no close frame)
    silent_after: int | None = None  # after this many messages, send nothing more (pings are still answered)


@dataclass
class FakeJetstream:
    """Serves ``messages`` (time_us, raw text) from the requested cursor, as Jetstream v1 does; records queries."""

    messages: list[tuple[int, str]]
    plans: list[Plan] = field(default_factory=list)
    queries: list[dict[str, str]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    async def subscribe(self, request: web.Request) -> web.StreamResponse:
        self.queries.append(dict(request.query))
        self.headers.append(dict(request.headers))
        self.times.append(asyncio.get_running_loop().time())
        plan = self.plans.pop(0) if self.plans else Plan()
        if plan.status:
            return web.Response(status=plan.status, headers=plan.headers, text="slow down")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        cursor = int(request.query.get("cursor", "0"))  # no cursor: live, and every message here is new
        for sent, (_, raw) in enumerate(m for m in list(self.messages) if m[0] >= cursor):
            if sent == plan.cut_after:
                assert request.transport is not None
                request.transport.close()  # flushes what was sent, then FIN: a dropped connection
                return ws
            if sent == plan.silent_after:
                break
            await ws.send_str(raw)
        async for _ in ws:  # stay open until the client leaves
            pass
        return ws


@asynccontextmanager
async def serving_jetstream(fake: FakeJetstream) -> AsyncIterator[str]:
    """``fake`` on a free 127.0.0.1 port; yields its ``ws://.../subscribe`` endpoint."""
    app = web.Application()
    app.router.add_get("/subscribe", fake.subscribe)
    async with serving(app) as url:
        yield url.replace("http://", "ws://") + "/subscribe"
