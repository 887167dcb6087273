"""The fan-out benchmark's second opinion: N websocket clients that count post deliveries on their own.

`scripts/bench_fanout.py --cross-check N` runs this beside `mixer loadtest`, on the same ``/ws``, to check the
load test's counts with code that shares nothing with it nor with the server: websocket-client (a synchronous
library, one thread per client, its own handshake, framing and pong answers) against the load test's aiohttp
sampled clients and raw-socket counters and the server's aiohttp. It imports nothing from ``mixer``.

Counting, per client, as the load test counts: every item of a ``posts`` frame is one delivery (a post sent
twice counts twice); besides that, the distinct keys starting with ``--marker`` (the posts the benchmark drove:
a duplicate or a stranger shows as deliveries != keys), ``lag`` frames, closes by the server (with their code),
and each post's latency (receive time minus its ``at``, ms). The first frame must be the ``hello`` (unless
``--no-hello``: the benchmark's naive server sends none).

Talking to the parent: one line ``ready CONNECTED FAILED`` on stdout once every client has its hello (or has
failed); then the clients count until stdin ends (or, with ``--until K``, until every client has K keys), and one
line of JSON with the counts ends the output.

    python scripts/xcheck_client.py --url ws://127.0.0.1:8080/ws --clients 20 --marker bench:abc:
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from typing import Any

import websocket  # websocket-client: not aiohttp, not our counters

OPCODE_TEXT, OPCODE_CLOSE = 0x1, 0x8


class Counter:
    """One client: its socket and what arrived on it."""

    def __init__(self) -> None:
        self.deliveries = 0  # items of posts frames
        self.keys: set[str] = set()  # distinct keys under the marker
        self.lag_frames = 0
        self.close_code: int | None = None  # set when the server closed (or dropped) the socket
        self.latency_ms: list[float] = []
        self.ws: websocket.WebSocket | None = None

    def connect(self, url: str, hello: bool) -> bool:
        """Open the socket and (with ``hello``) read the hello; False when either fails."""
        try:
            ws = websocket.create_connection(url, timeout=10, skip_utf8_validation=True)
            first = json.loads(ws.recv()) if hello else {"type": "hello"}
        except (OSError, websocket.WebSocketException, ValueError):
            return False
        if first.get("type") != "hello":
            ws.shutdown()
            return False
        ws.settimeout(None)  # from now on a read waits for the next frame, however long
        self.ws = ws
        return True

    def run(self, marker: str, until: int | None, stopping: threading.Event, reached: threading.Semaphore) -> None:
        """Count frames until the socket ends (``stopping`` set: our end; otherwise the server's). ``reached`` is
        released once: when this client has ``until`` keys, or when its socket ends before that."""
        assert self.ws is not None
        released = until is None
        try:
            while True:
                opcode, frame = self.ws.recv_data_frame()
                if opcode == OPCODE_CLOSE:
                    data = frame.data
                    self.close_code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                    return
                if opcode == OPCODE_TEXT:
                    self.take(json.loads(frame.data), time.time() * 1000, marker)
                    if not released and len(self.keys) >= (until or 0):
                        released = True
                        reached.release()  # and keep counting: a duplicate after the last key still shows
        except (OSError, websocket.WebSocketException):
            if not stopping.is_set():
                self.close_code = 1006  # gone without a close frame
        finally:
            self.ws.shutdown()
            if not released:
                reached.release()  # this one never will: do not keep the others waiting

    def take(self, frame: dict[str, Any], now_ms: float, marker: str) -> None:
        kind = frame.get("type")
        if kind == "lag":
            self.lag_frames += 1
        if kind != "posts":
            return
        items = frame.get("items") or []
        self.deliveries += len(items)
        for item in items:
            at, key = item.get("at"), item.get("key")
            if isinstance(at, int):
                self.latency_ms.append(now_ms - at)
            if isinstance(key, str) and key.startswith(marker):
                self.keys.add(key)


def percentiles(values: list[float]) -> dict[str, float | int]:
    """Nearest-rank p50, p95, p99 and the max of ``values`` (ms, to 0.1), with their count."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))]

    figures = {"p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "max": ordered[-1]}
    return {"count": len(ordered), **{name: round(ms, 1) for name, ms in figures.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Independent websocket clients counting post deliveries.")
    parser.add_argument("--url", required=True, help="the /ws URL")
    parser.add_argument("--clients", type=int, default=20, help="clients to hold (default 20)")
    parser.add_argument("--marker", default="", help="the prefix of the keys of the posts to collect")
    parser.add_argument("--until", type=int, metavar="K", help="stop once every client has K keys (else: stdin's end)")
    parser.add_argument("--no-hello", action="store_true", help="the server sends no hello: do not wait for one")
    args = parser.parse_args(argv)
    clients = [Counter() for _ in range(args.clients)]
    connected = [c for c in clients if c.connect(args.url, not args.no_hello)]
    print(f"ready {len(connected)} {len(clients) - len(connected)}", flush=True)
    stopping, reached = threading.Event(), threading.Semaphore(0)
    threads = [
        threading.Thread(target=c.run, args=(args.marker, args.until, stopping, reached), daemon=True)
        for c in connected
    ]
    for thread in threads:
        thread.start()
    if args.until is None:
        sys.stdin.read()  # the parent closes it when its run is over
    else:
        for _ in connected:
            reached.acquire()
    stopping.set()
    for client in connected:
        assert client.ws is not None
        client.ws.abort()  # wakes its reader
    for thread in threads:
        thread.join(10)
    codes: dict[str, int] = {}
    for client in connected:
        if client.close_code is not None:
            codes[str(client.close_code)] = codes.get(str(client.close_code), 0) + 1
    result = {
        "clients": len(clients),
        "connected": len(connected),
        "failed": len(clients) - len(connected),
        "closes": sum(codes.values()),
        "close_codes": codes,
        "lag_frames": sum(c.lag_frames for c in connected),
        "per_client": [c.deliveries for c in connected],
        "keys_per_client": [len(c.keys) for c in connected],
        "latency_ms": percentiles([ms for c in connected for ms in c.latency_ms]),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
