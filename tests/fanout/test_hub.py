"""The hub's flush policy and heartbeats, through the real app, real sockets and a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from mixer.fanout.appkeys import HUB
from mixer.fanout.clients import HEARTBEAT_PARTS, Client
from mixer.fanout.frames import wire, wire_memo
from mixer.fanout.hub import Hub, first_of, lap_interval
from mixer.fanout.messages import BATCH_POSTS, frames_for
from mixer.feed import FeedItem
from mixer.keys import Keys
from tests.helpers import make_post
from tests.servers import add_to_feed, receive_posts, running_app, settings_for


def test_a_busy_lap_takes_four_thirds_of_the_last_ones_writing_within_one_to_six_flush_intervals() -> None:
    assert lap_interval(0.0, 0.05) == 0.05
    assert lap_interval(0.06, 0.05) == pytest.approx(0.08)  # writing stays at 3/4 of the time
    assert lap_interval(0.5, 0.05) == pytest.approx(0.3)  # capped at STRETCH_MAX intervals


def test_a_post_that_joins_a_chat_counts_for_it_once_when_it_joins() -> None:
    # a chat's total and rate left out every post that joined it late (an update with joined)
    hub = Hub(clock=lambda: 100.0)
    hub.publish([("p", {"key": "a", "chats": ["smbiz"]})], "1-0")
    hub.publish([("u", {"key": "a", "chats": ["smbiz", "edchat"], "joined": ["edchat"]})], "2-0")
    hub.publish([("u", {"key": "a", "chats": ["smbiz", "edchat"], "text": "edited"})], "3-0")  # no chat added
    assert hub.rates.totals == {"smbiz": 1, "edchat": 1}
    assert hub.rates.per_minute(100.0) == {"smbiz": 1, "edchat": 1}


def _batch(*keys: str) -> list[FeedItem]:
    return [("p", {"key": key, "chats": ["smbiz"]}) for key in keys]


def _frames(peer: socket.socket) -> list[list[str]]:
    """The posts frames a client's peer has received so far (unmasked text frames), as lists of post keys."""
    data = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := peer.recv(1 << 16):
            data += chunk
    frames = []
    while data:
        size, at = data[1] & 0x7F, 2
        if size == 126:
            size, at = struct.unpack("!H", data[2:4])[0], 4
        message = json.loads(data[at : at + size])
        frames.append([item["key"] for item in message["items"]])
        data = data[at + size :]
    return frames


@contextlib.asynccontextmanager
async def _subscribed(hub: Hub, count: int) -> AsyncIterator[list[socket.socket]]:
    """``count`` clients on socket pairs, subscribed to ``hub`` in order; yields the peers they write to."""
    pairs = [socket.socketpair() for _ in range(count)]
    writers = [(await asyncio.open_connection(sock=ours))[1] for ours, _ in pairs]
    try:
        for writer in writers:
            hub.add(Client(writer.transport))  # type: ignore[arg-type]
        for _, theirs in pairs:
            theirs.setblocking(False)
        yield [theirs for _, theirs in pairs]
    finally:
        for writer in writers:
            writer.close()
        for _, theirs in pairs:
            theirs.close()


async def test_a_batch_published_mid_lap_reaches_the_rest_of_the_lap_and_the_others_first_thing_next_lap() -> None:
    now = [0.0]
    hub = Hub(clock=lambda: now[0], flush_interval=0.1)
    async with _subscribed(hub, 4) as peers:
        hub.publish(_batch("b1"), "1-0")
        assert hub.due() == 0.0  # idle: at once
        assert hub.write(2) is False and hub.due() == 0.0  # ... and at full speed
        assert hub.write(2) is True
        assert [_frames(p) for p in peers] == [[["b1"]]] * 4
        now[0] = 0.01
        hub.publish(_batch("b2"), "2-0")
        assert hub.due() == pytest.approx(0.1)  # busy: each client's next turn an interval after its last
        now[0] = 0.1
        hub.write(1)
        assert hub.due() == pytest.approx(0.1)
        hub.publish(_batch("b3"), "3-0")  # mid-lap
        assert hub.write(3) is True
        assert [_frames(p) for p in peers] == [[["b2"]], [["b2", "b3"]], [["b2", "b3"]], [["b2", "b3"]]]
        assert hub.due() == pytest.approx(0.2)  # the next lap goes on from the same start, an interval later
        now[0] = 0.2
        hub.write(1)
        assert [_frames(p) for p in peers] == [[["b3"]], [], [], []]
        assert hub.due() == pytest.approx(0.2)  # the others had theirs at 0.1
        hub.write()
        assert hub.due() is None and hub.held == 0  # everyone has seen everything: nothing held
        now[0] = 0.25
        hub.publish(_batch("b4"), "4-0")
        assert hub.due() == pytest.approx(0.3)  # quiet, but within an interval of the last turns: paced
        hub.write()
        assert [_frames(p) for p in peers] == [[["b4"]]] * 4
        now[0] = 1.0
        hub.publish(_batch("b5"), "5-0")
        assert hub.due() == 1.0  # idle: at once, and from another start
        hub.write(1)
        firsts = [p for p in peers if _frames(p) == [["b5"]]]
        assert firsts == [peers[first_of(hub.counters["laps"], 4)]]
        hub.write()
        assert hub.counters["broadcasts"] == 5 and hub.counters["frames_sent"] == 4 + 4 + 1 + 4 + 4


async def test_broadcast_writes_every_subscriber_at_once_even_with_a_lap_under_way() -> None:
    hub = Hub()
    async with _subscribed(hub, 3) as peers:
        hub.publish(_batch("a"), "1-0")
        hub.write(1)  # a lap under way: the first client has had its turn
        hub.broadcast(_batch("b"), "2-0")
        assert [_frames(p) for p in peers] == [[["a"], ["b"]], [["a", "b"]], [["a", "b"]]]
        assert not hub.pending


async def test_a_turn_sends_at_most_batch_posts_per_frame_split_between_batches() -> None:
    hub = Hub()
    async with _subscribed(hub, 1) as (peer,):
        for n, size in enumerate((100, 100, 100, 200, 50, 50, 50, 50)):
            hub.publish(_batch(*(f"{n}.{k}" for k in range(size))), f"{n + 1}-0")
        hub.write()
        assert [len(frame) for frame in _frames(peer)] == [100, 100, 100, 200, 150, 50]
        assert hub.held == 0


async def test_posts_arriving_within_the_flush_interval_go_out_in_one_frame(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        srv.app[HUB].flush_interval = 0.5
        async with http.ws_connect(srv.ws_url) as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "hello"
            await add_to_feed(redis, keys, make_post("first"))
            first = await ws.receive_json(timeout=5)
            assert [i["key"] for i in first["items"]] == ["first"]  # idle: sent at once, alone
            await add_to_feed(redis, keys, make_post("second"))  # two XADDs, each its own feed read if read at once
            await add_to_feed(redis, keys, make_post("third"))
            frame = await ws.receive_json(timeout=5)
            assert frame["type"] == "posts"
            assert [i["key"] for i in frame["items"]] == ["second", "third"]  # busy: coalesced
            assert srv.app[HUB].counters["broadcasts"] == 2


async def test_a_backlog_goes_out_in_batches_of_at_most_batch_posts_without_waiting_between_them(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        hub = srv.app[HUB]
        async with http.ws_connect(srv.ws_url) as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "hello"
            hub.flush_interval = 1.0
            await add_to_feed(redis, keys, make_post("first"))
            assert [p["key"] for p in await receive_posts(ws, 1)] == ["first"]  # idle: at once; now a 1 s pause
            posts = [make_post(f"b{n}") for n in range(2 * BATCH_POSTS + 50)]
            await add_to_feed(redis, keys, *posts)  # during the pause: the hub finds them all waiting
            hub.flush_interval = 30.0  # any further pause would outlast the receive timeouts below
            sizes: list[int] = []
            while sum(sizes) < len(posts):
                frame = await ws.receive_json(timeout=5)
                if frame["type"] == "posts":
                    sizes.append(len(frame["items"]))
            assert max(sizes) <= BATCH_POSTS and len(sizes) >= 3


async def _silent_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A websocket client that upgrades, then never answers anything (a half-open peer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await reader.readuntil(b"\r\n\r\n")
    return reader, writer


async def _until_eof(reader: asyncio.StreamReader) -> bytes:
    received = b""
    while chunk := await reader.read(4096):
        received += chunk
    return received


async def test_heartbeat_drops_a_client_that_never_answers_and_keeps_one_that_does(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    settings = settings_for(keys.prefix, heartbeat_seconds=0.2)
    async with running_app(settings, redis_url) as srv, aiohttp.ClientSession() as http:
        hub = srv.app[HUB]
        port = int(srv.url.rsplit(":", 1)[1])
        async with http.ws_connect(srv.ws_url) as ws:  # aiohttp answers pings while it reads (autoping)
            assert (await ws.receive_json(timeout=5))["type"] == "hello"
            answering = asyncio.create_task(receive_posts(ws, 1))
            reader, writer = await _silent_client(port)
            try:
                received = await asyncio.wait_for(_until_eof(reader), 5)  # the server hangs up on it
            finally:
                writer.close()
            assert b"\x89\x00" in received  # it was pinged before being dropped
            assert hub.counters["heartbeat_dropped"] == 1
            assert hub.counters["heartbeats"] >= 2  # so the answering client was pinged too, and kept
            await add_to_feed(redis, keys, make_post("still-here"))
            assert [i["key"] for i in await answering] == ["still-here"]
            assert len(hub) == 1


async def test_a_client_ping_frame_gets_a_pong(redis: aioredis.Redis, keys: Keys, redis_url: str) -> None:
    async with running_app(settings_for(keys.prefix), redis_url) as srv:
        reader, writer = await _silent_client(int(srv.url.rsplit(":", 1)[1]))
        try:
            writer.write(b"\x89\x84\0\0\0\0ping")  # a masked ping with payload "ping" (zero mask key)
            received = b""
            while b"\x8a\x04ping" not in received:
                chunk = await asyncio.wait_for(reader.read(4096), 5)
                assert chunk, "the server closed instead of answering the ping"
                received += chunk
        finally:
            writer.close()


async def test_the_websocket_upgrade_carries_no_page_headers_but_pages_still_do(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    # headers of the upgrade response live as long as the socket: per-connection memory, for nothing
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(srv.url + "/ws") as ws:
            upgrade = ws._response.headers  # the 101 answer
            assert upgrade["Upgrade"].lower() == "websocket"
            assert "X-Content-Type-Options" not in upgrade and "Referrer-Policy" not in upgrade
        async with http.get(srv.url + "/healthz") as resp:
            assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_a_heartbeat_round_is_dealt_out_in_parts_so_each_client_is_pinged_once_per_round() -> None:
    hub = Hub()
    async with _subscribed(hub, 2 * HEARTBEAT_PARTS) as peers:
        clients = hub.clients()  # in the order they joined, as the peers
        assert sorted(c.slot for c in clients) == sorted(list(range(HEARTBEAT_PARTS)) * 2)  # dealt in turn
        hub.heartbeat(3, HEARTBEAT_PARTS)
        assert [c for c in clients if not c.answered] == [c for c in clients if c.slot == 3]  # pinged: 2 of 40
        for client, peer in zip(clients, peers, strict=True):
            if client.slot == 3:
                assert peer.recv(16) == b"\x89\x00"  # the shared ping frame
        for part in range(HEARTBEAT_PARTS):  # the next round: only the two silent ones are dropped
            hub.heartbeat(part, HEARTBEAT_PARTS)
        assert hub.counters["heartbeat_dropped"] == 2
        assert len(hub) == 2 * HEARTBEAT_PARTS - 2


def test_a_lap_from_idle_starts_at_another_client_and_each_is_first_about_as_often() -> None:
    firsts = [first_of(turn, 10) for turn in range(1000)]
    assert all(0 <= first < 10 for first in firsts)
    assert all(80 <= firsts.count(m) <= 120 for m in range(10))  # 100 each if perfectly even


@pytest.mark.parametrize("fmt", ["json", "msgpack", "sse"])
def test_frames_built_from_posts_encoded_once_are_byte_for_byte_those_encoded_whole(fmt: str) -> None:
    posts = [("p", {"id": f"{n}-0", "key": f"k{n}", "chats": ["smbiz"], "text": "Zoë ✓ \u202e"}) for n in range(20)]
    entries: list[FeedItem] = [
        *posts[:3],
        ("u", {"id": "1-0", "key": "k1", "chats": ["smbiz"], "text": "edited"}),
        ("r", {"ids": ["2-0"]}),
        ("n", {"post": posts[0][1]}),
        *posts[3:],  # 17 in a row: a msgpack array16 header
    ]
    memo: dict[int, bytes] = {}
    messages = frames_for(None, entries)
    assert wire_memo(messages, fmt, memo) == wire(messages, fmt)
    assert len(memo) == 21  # each post and update once
    assert wire_memo(frames_for(None, entries[3:]), fmt, memo) == wire(frames_for(None, entries[3:]), fmt)
    assert len(memo) == 21  # the second frame reused them


class _BrokenTransport(asyncio.WriteTransport):
    """A connection whose every write fails (a bug or an OS error we did not foresee)."""

    aborted = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        raise RuntimeError("broken")

    def abort(self) -> None:
        self.aborted = True


async def test_a_client_whose_writes_fail_is_dropped_and_the_others_still_get_their_posts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = Hub()
    broken = _BrokenTransport()
    async with _subscribed(hub, 1) as (before,):
        hub.add(Client(broken))
        async with _subscribed(hub, 1) as (after,):
            hub.broadcast(_batch("a"), "1-0")
            assert _frames(before) == _frames(after) == [["a"]]
            assert broken.aborted and len(hub) == 2 and hub.counters["write_errors"] == 1
            assert "writing to a client failed" in caplog.text


async def test_an_entry_that_cannot_be_encoded_is_skipped_and_logged_and_its_neighbours_delivered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = Hub()
    async with _subscribed(hub, 1) as (peer,):
        bad: FeedItem = ("p", {"key": "bad", "chats": ["smbiz"], "tags": {"a set"}})
        hub.broadcast([*_batch("good1"), bad, *_batch("good2")], "1-0")
        hub.broadcast(_batch("next"), "2-0")
        assert _frames(peer) == [["good1", "good2"], ["next"]]
        assert hub.counters["entries_unencodable"] == 1
        assert "1 feed entries cannot be encoded as json" in caplog.text


@pytest.mark.parametrize("failing", ["write", "_begin_lap"])  # a step, or beginning a lap
async def test_the_writer_task_logs_a_failed_step_and_goes_on_with_the_next_batch(
    caplog: pytest.LogCaptureFixture, failing: str
) -> None:
    hub = Hub()
    async with _subscribed(hub, 1) as (peer,):
        method, failed = getattr(hub, failing), asyncio.Event()

        def fail_once(*args: Any) -> Any:
            if not failed.is_set():
                failed.set()
                raise RuntimeError("a bug")
            return method(*args)

        setattr(hub, failing, fail_once)
        task = asyncio.create_task(hub.run())
        try:
            hub.publish(_batch("lost"), "1-0")
            await failed.wait()
            hub.publish(_batch("kept"), "2-0")
            loop = asyncio.get_running_loop()
            readable = loop.create_future()
            loop.add_reader(peer.fileno(), readable.set_result, None)
            try:
                await asyncio.wait_for(readable, 5)
            finally:
                loop.remove_reader(peer.fileno())
            assert _frames(peer) == [["kept"]]  # the failed step's batch is lost to its clients (and logged)
            assert hub.counters["write_errors"] == 1 and "a step of writing failed" in caplog.text
        finally:
            task.cancel()


@pytest.mark.parametrize("seed", range(5))
async def test_with_clients_coming_and_going_mid_lap_each_gets_every_batch_after_it_joined_once_in_order(
    seed: int,
) -> None:
    rng = random.Random(seed)
    now = [0.0]
    hub = Hub(clock=lambda: now[0], flush_interval=0.05)
    live: dict[int, tuple[Client, socket.socket, int]] = {}  # n -> client, its peer, seq when it joined
    got: dict[int, list[str]] = {}
    gone: list[socket.socket] = []
    writers = []
    try:
        for op in range(600):
            now[0] += rng.choice((0.0, 0.001, 0.02))
            roll = rng.random()
            if roll < 0.15 or not live:
                ours, theirs = socket.socketpair()
                theirs.setblocking(False)
                writer = (await asyncio.open_connection(sock=ours))[1]
                writers.append(writer)
                client = Client(writer.transport)  # type: ignore[arg-type]
                hub.add(client)
                live[op], got[op] = (client, theirs, hub.seq), []
            elif roll < 0.22:
                n = rng.choice(list(live))
                client, theirs, _ = live.pop(n)
                hub.remove(client)
                gone.append(theirs)
            elif roll < 0.5:
                hub.publish(_batch(*(f"{hub.seq + 1}.{k}" for k in range(rng.randint(1, 3)))), f"{hub.seq + 1}-0")
            else:
                hub.write(rng.randint(1, 4))
            for n, (_, theirs, _) in live.items():
                got[n] += [key for frame in _frames(theirs) for key in frame]
        while hub.pending:
            hub.write()
        for n, (_, theirs, joined) in live.items():
            got[n] += [key for frame in _frames(theirs) for key in frame]
            batches = [int(key.split(".")[0]) for key in got[n]]
            assert batches == sorted(batches) and len(set(got[n])) == len(got[n])  # in order, each once
            assert set(batches) == set(range(joined + 1, hub.seq + 1))  # every batch after it joined
        assert hub.held == 0
    finally:
        for writer in writers:
            writer.close()
        for sock in gone + [theirs for _, theirs, _ in live.values()]:
            sock.close()
