"""The ``/events`` clients of a load test: Server-Sent Events read with aiohttp in a worker process of their own.

``run_sse`` is what ``mixer.tools.loadtest.client.worker_main`` runs for a plan of kind ``sse``: each client opens
``GET /events`` (the ``/ws`` URL's host, port and query, less ``format``) at its slot of the ramp and reads the stream
line by line; every ``post`` event is counted, its latency measured and its key remembered when driven
(``client.took``), every ``lag`` event counted, and a stream the server ends before the stop is a close (code 0: SSE
has none). They parse every event, as the sampled websocket clients do, so hold hundreds of them, not tens of
thousands.
Not here: the websocket clients, the parent's pool.
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp

from mixer.tools.loadtest.client import (
    PROGRESS_EVERY,
    Flag,
    Sink,
    WorkerPlan,
    WorkerStats,
    _ended,
    _opened,
    _slot,
    took,
)


def sse_url_of(url: str) -> str:
    """The ``/events`` URL beside a ``/ws`` URL: same host, port and query, http(s) instead of ws(s), without
    ``format`` (an event stream is JSON: /events refuses any other format with a 400)."""
    parts = urlsplit(url)
    scheme = "https" if parts.scheme == "wss" else "http"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "format"])
    return urlunsplit((scheme, parts.netloc, parts.path.rsplit("/", 1)[0] + "/events", query, ""))


async def run_sse(plan: WorkerPlan, stats: WorkerStats, out: Sink, t0: float, stop: Flag) -> None:
    """Run ``plan``'s /events clients from ``t0`` until ``stop``, reporting progress twice a second."""
    stopping = asyncio.Event()
    url = sse_url_of(plan.url)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)  # one connection per stream, for life
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(_client(plan, n, session, url, stats, t0, stopping)) for n in plan.clients]
        while not stop.is_set():
            out.put(("progress", plan.worker, stats.progress()))
            await asyncio.sleep(PROGRESS_EVERY)  # polling: a multiprocessing Event cannot be awaited
        stopping.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _client(
    plan: WorkerPlan,
    n: int,
    session: aiohttp.ClientSession,
    url: str,
    stats: WorkerStats,
    t0: float,
    stopping: asyncio.Event,
) -> None:
    await _slot(plan, n, t0)
    if stopping.is_set():
        return
    try:
        resp = await session.get(url, headers={"Accept": "text/event-stream"})
    except (TimeoutError, aiohttp.ClientError, OSError):
        stats.failed += 1
        return
    if resp.status != 200:
        stats.failed += 1
        resp.release()
        return
    _opened(stats, n)
    seen = stats.seen[n] = set()
    event, data = "message", b""
    try:
        async for raw in resp.content:  # one line a step
            line = raw.rstrip(b"\r\n")
            if line:
                name, _, value = line.partition(b":")
                if name == b"event":
                    event = value.strip().decode()
                elif name == b"data":
                    data += value[1:] if value.startswith(b" ") else value
                continue
            if event == "post" and data:
                now = time.time()
                took([json.loads(data)], now, t0, plan.marker, seen, stats)
                stats.items += 1
                stats.per_client[n] += 1
                stats.per_second[int(now - t0)] += 1
            elif event == "lag":
                stats.lag_frames += 1
            event, data = "message", b""
    except (aiohttp.ClientError, OSError, ValueError):
        pass  # dropped (or a line too long to be an event): counted as a close below
    finally:
        resp.release()
        _ended(stats, None, stopping)
