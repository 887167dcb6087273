"""The benchmark's naive baseline server (scripts/naive_broadcast.py) really broadcasts the feed."""

from __future__ import annotations

import asyncio
import json
import sys

import aiohttp
import redis.asyncio as aioredis

from mixer.codec import FIELD, pack_post
from mixer.keys import Keys
from tests.helpers import ROOT, make_post
from tests.processes import free_port

SCRIPT = ROOT / "scripts" / "naive_broadcast.py"


async def _listening(port: int, proc: asyncio.subprocess.Process) -> None:
    while True:
        assert proc.returncode is None, "naive_broadcast.py exited before listening"
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)  # polling: the process gives no readiness signal
            continue
        writer.close()
        await writer.wait_closed()
        return


async def test_a_feed_entry_reaches_every_connected_client_as_a_posts_frame(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), "--port", str(port), "--redis", redis_url, "--stream", keys.feed,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await asyncio.wait_for(_listening(port, proc), 20)
        async with aiohttp.ClientSession() as http:
            a = await http.ws_connect(f"http://127.0.0.1:{port}/ws")
            b = await http.ws_connect(f"http://127.0.0.1:{port}/ws")
            post = make_post("x:1", ("smbiz",))
            # the server reads from "$": keep adding until the first frame arrives, then check both got it
            frame_a: aiohttp.WSMessage | None = None
            while frame_a is None:
                await redis.xadd(keys.feed, {FIELD: pack_post(post)})
                try:
                    frame_a = await a.receive(timeout=0.5)
                except TimeoutError:
                    continue
            first = json.loads(frame_a.data)
            assert first["type"] == "posts" and first["items"][0]["key"] == "x:1"
            assert json.loads((await b.receive(timeout=5)).data) == first  # the same batch, to each client
            await a.close()
            await b.close()
    finally:
        proc.terminate()
        await proc.wait()
