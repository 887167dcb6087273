"""Measure: seconds from starting `mixer run` to the first post on a websocket.

Starts `mixer run` (embedded Redis, the bundled demo at its configured speed) on a free
port, connects to /ws as soon as the server listens, and prints the time from process
start to the first `posts` frame, next to the time to the listening socket. Repeats
--runs times and stops every process it started.

    .venv/bin/python scripts/bench_startup.py [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import sys
import time

import aiohttp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def once() -> tuple[float, float]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIXER_")}
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mixer.cli", "run", "--port", str(port), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        while b"live at" not in await proc.stdout.readline():
            pass
        listening = time.perf_counter() - started
        async with aiohttp.ClientSession() as http, http.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
            while (await ws.receive_json(timeout=30))["type"] != "posts":
                pass
        return listening, time.perf_counter() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()


async def main(runs: int) -> None:
    results = [await once() for _ in range(runs)]
    for listening, first in results:
        print(f"listening after {listening:.2f} s, first post on /ws after {first:.2f} s")
    print(f"median first post: {statistics.median(r[1] for r in results):.2f} s over {runs} runs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main(parser.parse_args().runs))
