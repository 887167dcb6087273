"""A deliberately naive websocket broadcaster: the baseline `scripts/bench_fanout.py` measures chatmixer against.

It does what a first version usually does: one task XREADs the merged feed stream, and for
each batch it loops over the connected clients, ``json.dumps`` the batch once *per client*
and ``await``s ``ws.send_str`` for each in turn, so one slow client delays everyone behind it
and nothing bounds a client's backlog. Frames have the contract's shape
(``{"type":"posts","items":[...]}``, compact JSON) so the same load generator counts both
servers. It runs on uvloop when installed, like ``mixer serve``, so the comparison is about the
broadcast design, not the event loop. Not a product part: no filters, resume, hello or limits.

    python scripts/naive_broadcast.py --port 8090 --redis URL --stream 'mixer:{mixer}:feed'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
from typing import Any

import msgpack
import redis.asyncio as aioredis
from aiohttp import web

SOCKETS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("sockets")


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    try:
        async for _ in ws:
            pass
    finally:
        request.app[SOCKETS].discard(ws)
    return ws


async def follow(app: web.Application, redis_url: str, stream: str) -> None:
    """XREAD the stream from now on and send every batch to every client, one awaited send at a time."""
    redis = aioredis.Redis.from_url(redis_url, socket_timeout=10)
    last = "$"
    try:
        while True:
            reply: Any = await redis.xread({stream: last}, count=500, block=2000)
            for _name, entries in reply or ():
                items: list[dict[str, Any]] = []
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    raw = fields.get(b"p")
                    if raw is not None:
                        item = msgpack.unpackb(raw, raw=False)
                        item["id"] = last
                        items.append(item)
                if not items:
                    continue
                for ws in app[SOCKETS].copy():
                    if ws.closed:
                        continue
                    try:  # the naive part: encode per client, await each send
                        await ws.send_str(json.dumps({"type": "posts", "items": items}, separators=(",", ":")))
                    except (ConnectionError, RuntimeError):
                        app[SOCKETS].discard(ws)
    finally:
        await redis.aclose()


def create_app(redis_url: str, stream: str) -> web.Application:
    app = web.Application()
    app[SOCKETS] = set()
    app.router.add_get("/ws", ws_handler)

    async def follower(app: web.Application) -> Any:
        task = asyncio.create_task(follow(app, redis_url, stream))
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for ws in app[SOCKETS].copy():
            await ws.close()

    app.cleanup_ctx.append(follower)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True, metavar="URL")
    parser.add_argument("--stream", required=True, help="the merged feed stream key")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(create_app(args.redis, args.stream), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
