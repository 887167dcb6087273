"""What the fault suite measures: the input keys against the feed (lost, twice), screens that follow the feed
across faults (gap-free or told ``reset``), and clients that never read.

``Ledger`` reads the chat streams (what ingest published: the input) and the feed incrementally. A post key
is accounted for when the feed holds its card, or the merge stage's index holds a stub for it (a boost, a
collapsed repeat: shown on another card by design); a key indexed as a card whose feed entry is missing is
lost, and so is a key of the replayed file that ingest read and skipped (``holes``). ``Screen`` is a real
websocket client that reconnects to the other replica with ``since`` = the last id it holds, as the wall does;
what it received is compared with the feed's cards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgpack
import redis.asyncio as aioredis

from mixer.codec import FIELD
from mixer.ingest.replay import RUN_TAG
from mixer.keys import Keys
from mixer.streams import id_key, read_range

RUN_PASS = re.compile(rf"{RUN_TAG.pattern}\.\d+")  # a looping replay's key suffix after the "~": <run tag>.<pass>


@dataclass
class Ledger:
    """Input keys from the chat streams, cards from the feed; ``lost``/``twice`` as of the last ``settle``."""

    redis: aioredis.Redis
    keys: Keys
    chats: tuple[str, ...]
    inputs: set[str] = field(default_factory=set)
    cards: Counter[str] = field(default_factory=Counter)
    card_ids: list[str] = field(default_factory=list)  # feed order
    accounted: set[str] = field(default_factory=set)
    recording: list[str] = field(default_factory=list)  # the ingest's replay file's keys, in file (= publish) order
    _chat_last: dict[str, str] = field(default_factory=dict)
    _feed_last: str = "0-0"

    async def read(self) -> None:
        for chat in self.chats:
            stream = self.keys.chat(chat)
            while entries := await read_range(self.redis, stream, self._chat_last.get(chat, "0-0"), count=5000):
                self._chat_last[chat] = entries[-1][0]
                self.inputs.update(msgpack.unpackb(raw)["key"] for _, raw, kind in entries if kind == FIELD)
        while entries := await read_range(self.redis, self.keys.feed, self._feed_last, count=5000):
            self._feed_last = entries[-1][0]
            for entry_id, raw, kind in entries:
                if kind == FIELD:
                    key = msgpack.unpackb(raw)["key"]
                    self.cards[key] += 1
                    self.card_ids.append(entry_id)
                    self.accounted.add(key)

    async def _account_by_index(self, pending: list[str]) -> None:
        ids = set(self.card_ids)
        for start in range(0, len(pending), 2000):
            batch = pending[start : start + 2000]
            stored: list[Any] = await self.redis.hmget(self.keys.index, batch)
            for key, raw in zip(batch, stored, strict=True):
                if raw is None:
                    continue
                entry = msgpack.unpackb(raw)
                if entry.get("stub") or entry.get("id") in ids:
                    self.accounted.add(key)

    def holes(self) -> list[str]:
        """Keys the ingest skipped: a replay publishes its file in order, each loop pass under keys of its own
        (``key~<run>.<pass>``, or ``key~<pass>`` after the first), so what one pass published is a prefix of the
        file; a key missing before the furthest one published was read and never published."""
        passes: dict[str, set[str]] = {}
        for key in self.inputs:
            base, tilde, number = key.rpartition("~")
            if tilde and (number.isdigit() or RUN_PASS.fullmatch(number)):
                passes.setdefault(tilde + number, set()).add(base)
            else:
                passes.setdefault("", set()).add(key)
        position = {key: i for i, key in reversed(list(enumerate(self.recording)))}
        missing = []
        for suffix, published in passes.items():
            furthest = max((position[k] for k in published if k in position), default=-1)
            missing += [k + suffix for k in dict.fromkeys(self.recording[: furthest + 1]) if k not in published]
        return missing

    async def settle(self, timeout: float) -> list[str]:
        """Wait (polling: the index offers nothing to await) until every input key read so far is accounted for
        and the ingest has left no hole; what is still missing after ``timeout`` seconds is returned: lost."""
        await self.read()
        wanted = set(self.inputs)
        deadline = time.monotonic() + timeout
        while True:
            pending = sorted(wanted - self.accounted)
            if pending:
                await self._account_by_index(pending)
                pending = sorted(wanted - self.accounted)
            pending += self.holes()
            if not pending or time.monotonic() > deadline:
                return pending
            await asyncio.sleep(0.25)
            await self.read()

    def twice(self) -> list[str]:
        return sorted(key for key, count in self.cards.items() if count > 1)

    async def newest_feed_id(self) -> str:
        reply: Any = await self.redis.xrevrange(self.keys.feed, count=1)
        return reply[0][0].decode() if reply else "0-0"

    async def wait_feed_after(self, after: str, timeout: float) -> float | None:
        """Seconds until the feed has an entry after ``after`` (XREAD BLOCK), None if none came within ``timeout``;
        rides out a Redis that is still coming back."""
        started = time.monotonic()
        while (left := timeout - (time.monotonic() - started)) > 0:
            try:
                reply = await self.redis.xread({self.keys.feed: after}, count=1, block=max(1, int(min(left, 5) * 1000)))
            except (aioredis.ConnectionError, aioredis.TimeoutError, OSError):
                await asyncio.sleep(0.2)  # Redis is away: the next read reconnects
                continue
            if reply:
                return time.monotonic() - started
        return None


@dataclass
class Screen:
    """A websocket screen: follows the feed, moves to another replica with ``since`` when its socket drops."""

    name: str
    urls: list[str]  # replica base URLs, preferred first
    since: str  # the feed's newest id when the screen started: it asks for everything after it
    segments: list[list[str]] = field(default_factory=lambda: [[]])  # ids received; a new segment after a reset
    starts: list[str] = field(default_factory=list)  # the id each segment follows
    resets: int = 0
    lags: int = 0
    resumes: list[tuple[float, float]] = field(default_factory=list)  # (dropped at, resumed after s)
    repeats: int = 0
    dropped: float | None = None  # when its socket dropped, while it is looking for a replica
    _task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.starts.append(self.since)

    @property
    def last(self) -> str:
        """The id to resume after: the last post received, else where the current segment starts."""
        return self.segments[-1][-1] if self.segments[-1] else self.starts[-1]

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        turn = 0
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    await self._session(http, self.urls[turn % len(self.urls)])
                except (aiohttp.ClientError, TimeoutError, OSError, ValueError, TypeError, KeyError):
                    pass
                if self.dropped is None:
                    self.dropped = time.monotonic()
                turn += 1  # the next attempt goes to the other replica
                await asyncio.sleep(0.1)

    def _resumed(self) -> None:
        if self.dropped is not None:
            self.resumes.append((self.dropped, time.monotonic() - self.dropped))
            self.dropped = None

    async def _session(self, http: aiohttp.ClientSession, url: str) -> None:
        """One connection: hello, then frames until the socket drops or the server says ``lag``."""
        async with http.ws_connect(f"{url.replace('http', 'ws', 1)}/ws?since={self.last}") as ws:
            await ws.receive_json(timeout=10)  # hello
            self._resumed()
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT or not self._frame(msg.json()):
                    return

    def _frame(self, frame: dict[str, Any]) -> bool:
        """Take one frame in; False when the screen must reconnect (``lag``: posts were skipped, fetch them
        with ``since`` as docs/api.md says)."""
        if frame["type"] == "posts":
            for item in frame["items"]:
                if id_key(item["id"]) <= id_key(self.last):
                    self.repeats += 1
                    continue
                self.segments[-1].append(item["id"])
        elif frame["type"] == "reset":
            self.resets += 1
            self.segments.append([])
            self.starts.append(frame["cursor"])
        elif frame["type"] == "lag":
            self.lags += 1
            return False
        return True

    def gaps(self, card_ids: list[str]) -> int:
        """Feed cards this screen should have had but did not: after each segment's start, up to its last id (a
        ``reset`` ended it), and for the current segment up to the newest card in ``card_ids`` (a screen that
        fell behind and stayed behind misses those too)."""
        missing = 0
        ends = [segment[-1] if segment else start for start, segment in zip(self.starts, self.segments, strict=True)]
        ends[-1] = max([ends[-1], *card_ids[-1:]], key=id_key)
        for start, end, segment in zip(self.starts, ends, self.segments, strict=True):
            lo, hi = id_key(start), id_key(end)
            missing += len({i for i in card_ids if lo < id_key(i) <= hi} - set(segment))
        return missing

    @property
    def received(self) -> int:
        return sum(len(segment) for segment in self.segments)


@dataclass
class EventsScreen(Screen):
    """The same screen over SSE (``/events``), resuming with ``Last-Event-ID`` as ``EventSource`` does."""

    async def _session(self, http: aiohttp.ClientSession, url: str) -> None:
        headers = {"Last-Event-ID": self.last, "Accept": "text/event-stream"}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=30)  # a comment comes every 15 s
        async with http.get(f"{url}/events", headers=headers, timeout=timeout) as resp:
            resp.raise_for_status()
            name, event_id, data = "message", "", ""
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith(":"):
                    continue
                if line:
                    field_name, _, value = line.partition(": ")
                    name, event_id, data = (
                        (value, event_id, data) if field_name == "event" else
                        (name, value, data) if field_name == "id" else
                        (name, event_id, data + value) if field_name == "data" else
                        (name, event_id, data)
                    )  # fmt: skip
                    continue
                if name == "hello":
                    self._resumed()
                elif name == "post":
                    self._frame({"type": "posts", "items": [{"id": event_id}]})
                elif name in ("reset", "lag") and not self._frame({"type": name, **json.loads(data)}):
                    return
                name, event_id, data = "message", "", ""


class SlowClients:
    """Clients that send a request (a /ws upgrade or /events) and then never read a byte."""

    def __init__(self) -> None:
        self.socks: list[socket.socket] = []

    async def attach(self, host_port: tuple[str, int], path: str, websocket: bool) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # small window: the server's bytes pile up there
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, host_port)
        head = f"GET {path} HTTP/1.1\r\nHost: {host_port[0]}:{host_port[1]}\r\n"
        if websocket:
            head += "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            head += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        else:
            head += "Accept: text/event-stream\r\n"
        await asyncio.get_running_loop().sock_sendall(sock, (head + "\r\n").encode())
        self.socks.append(sock)

    async def still_held(self) -> int:
        """How many the servers still hold open: their side of the connection is ESTABLISHED (``ss``). A server
        that closed gracefully behind unsent bytes still holds them too: the close never completes."""
        ports = {sock.getsockname()[1] for sock in self.socks}
        proc = await asyncio.create_subprocess_exec(
            "ss", "-tnH", "state", "established", stdout=asyncio.subprocess.PIPE
        )
        listing, _ = await proc.communicate()
        held = 0
        for line in listing.decode().splitlines():
            columns = line.split()
            if len(columns) >= 4 and int(columns[-1].rsplit(":", 1)[1]) in ports:
                held += 1  # the server's side: its peer is one of our clients
        return held

    def close(self) -> None:
        for sock in self.socks:
            with contextlib.suppress(OSError):
                sock.close()
        self.socks.clear()
