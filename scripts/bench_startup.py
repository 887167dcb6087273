"""Measure: seconds from starting `mixer run` to the first post on a websocket, on an empty night or a long one.

Starts `mixer run` (embedded Redis keeping its night in a temp state dir, the bundled demo at its configured
speed) on a free port, connects to /ws as soon as the server listens, and prints the time from process start
to the first `posts` frame, next to the time to the listening socket. With --history N the state dir first
gets a night of N posts (`mixer synth`, replayed as fast as possible through `mixer run`, then stopped), so
each timed start loads that night from its append-only file. Repeats --runs times and stops every process it
started; the temp dir is removed at the end.

    .venv/bin/python scripts/bench_startup.py [--runs 3] [--history 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from mixer.keys import Keys


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIXER_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


async def mixer(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mixer.cli", *args, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


async def lines_until(proc: asyncio.subprocess.Process, marker: bytes) -> bytes:
    assert proc.stdout is not None
    seen = b""
    while marker not in seen:
        line = await proc.stdout.readline()
        if not line:
            raise SystemExit(f"mixer run ended before {marker!r}:\n{seen.decode()}")
        seen += line
    return seen


async def fill(state_dir: Path, posts: int) -> None:
    """Give ``state_dir`` a night of at least ``posts`` posts in the feed, and stop cleanly."""
    chats = 10
    recording = state_dir.parent / "night.jsonl"
    minutes = str(math.ceil(posts / (chats * 100)))
    synth = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mixer.cli", "synth", "--chats", str(chats), "--minutes", minutes, "--rate", "100",
        "--out", str(recording), stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert await synth.wait() == 0
    env = clean_env(MIXER_CHATS=",".join(f"chat{i:02d}" for i in range(1, chats + 1)))
    args = ("--state-dir", str(state_dir), "--no-demo", "--replay", str(recording), "--speed", "0")
    proc = await mixer("run", "--port", str(free_port()), *args, env=env)
    started = time.perf_counter()
    try:
        found = re.search(rb"at (unix://\S+)", await lines_until(proc, b"live at"))
        assert found is not None
        redis = aioredis.Redis.from_url(found.group(1).decode())
        try:
            while (length := await redis.xlen(Keys("mixer").feed)) < posts:
                print(f"  filling: {length} posts in the feed after {time.perf_counter() - started:.0f} s", end="\r")
                await asyncio.sleep(1)
        finally:
            await redis.aclose()
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.communicate()
    size = disk_size(state_dir)
    print(f"filled: {length} posts in the feed in {time.perf_counter() - started:.0f} s; {size / 1e6:.0f} MB on disk")


def disk_size(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


async def once(state_dir: Path) -> tuple[float, float]:
    port = free_port()
    started = time.perf_counter()
    proc = await mixer("run", "--port", str(port), "--state-dir", str(state_dir), env=clean_env())
    try:
        await lines_until(proc, b"live at")
        listening = time.perf_counter() - started
        async with aiohttp.ClientSession() as http, http.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
            while (await ws.receive_json(timeout=60))["type"] != "posts":
                pass
        return listening, time.perf_counter() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.communicate()


async def main(runs: int, history: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as temp:
        state_dir = Path(temp) / "night"
        if history:
            await fill(state_dir, history)
        results = []
        for _ in range(runs):
            if not history:  # each start on an empty night
                shutil.rmtree(state_dir, ignore_errors=True)
            results.append(await once(state_dir))
    for listening, first in results:
        print(f"listening after {listening:.2f} s, first post on /ws after {first:.2f} s")
    what = f"a {history}-post night" if history else "an empty night"
    print(f"median on {what}: listening {statistics.median(r[0] for r in results):.2f} s, first post "
          f"{statistics.median(r[1] for r in results):.2f} s over {runs} runs")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--history", type=int, default=0, metavar="N", help="start on a night of N posts")
    options = parser.parse_args()
    asyncio.run(main(options.runs, options.history))
