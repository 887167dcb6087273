"""The fan-out benchmark's independent client (scripts/xcheck_client.py) counts what the real server delivers."""

from __future__ import annotations

import asyncio
import json
import sys

import redis.asyncio as aioredis

from mixer.keys import Keys
from tests.helpers import ROOT, make_post, now_ms
from tests.servers import add_to_feed, running_app, settings_for

SCRIPT = ROOT / "scripts" / "xcheck_client.py"


async def test_each_independent_client_counts_every_post_driven_once(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    async with running_app(settings_for(keys.prefix), redis_url) as server:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(SCRIPT), "--url", server.ws_url, "--clients", "3", "--marker", "xc:", "--until", "20",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            assert await asyncio.wait_for(proc.stdout.readline(), 20) == b"ready 3 0\n"
            await add_to_feed(redis, keys, make_post("other:1", created=now_ms()))  # not driven: a delivery, no key
            await add_to_feed(redis, keys, *(make_post(f"xc:{n}", created=now_ms()) for n in range(20)))
            out, _ = await asyncio.wait_for(proc.communicate(), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    counts = json.loads(out.splitlines()[-1])
    assert (counts["connected"], counts["failed"], counts["closes"], counts["lag_frames"]) == (3, 0, 0, 0)
    assert counts["per_client"] == [21, 21, 21]
    assert counts["keys_per_client"] == [20, 20, 20]
    assert counts["latency_ms"]["count"] == 63
