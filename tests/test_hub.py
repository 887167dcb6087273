"""The hub's flush policy and heartbeats, through the real app, real sockets and a real Redis."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import redis.asyncio as aioredis

from mixer.app import BATCH_POSTS, HUB
from mixer.hub import HEARTBEAT_PARTS, Client, Hub, rotated
from mixer.keys import Keys

from .helpers import make_post
from .servers import running_app, settings_for
from .test_app import add_to_feed, receive_posts


def test_an_idle_hub_flushes_at_once_and_a_busy_one_waits_out_the_interval() -> None:
    now = [100.0]
    hub = Hub(clock=lambda: now[0], flush_interval=0.05)
    assert hub.pause() == 0.0  # nothing sent yet: idle
    hub.broadcast([("p", {"chats": ["smbiz"], "at": 0})], "1-0")
    now[0] += 0.01
    assert abs(hub.pause() - 0.04) < 1e-9  # busy: the rest of the interval
    now[0] += 0.05
    assert hub.pause() == 0.0  # quiet for a whole interval: idle again
    assert hub.counters["broadcasts"] == 1 and hub.counters["posts_timed"] == 1


def test_a_slow_broadcast_stretches_the_interval_to_four_thirds_of_its_duration_up_to_a_cap() -> None:
    # clock readings: broadcast begins, ends (took 0.06 s); pause(); pause(); then a 0.5 s broadcast; pause()
    readings = iter([100.0, 100.06, 100.07, 100.2, 101.0, 101.5, 101.5])
    hub = Hub(clock=lambda: next(readings), flush_interval=0.05)
    hub.broadcast([("p", {"chats": ["smbiz"]})], "1-0")
    assert abs(hub.pause() - 0.01) < 1e-9  # interval 0.08 s from 100.0: broadcasting stays at 3/4 of the time
    assert hub.pause() == 0.0
    hub.broadcast([("p", {"chats": ["smbiz"]})], "2-0")
    assert hub.pause() == 0.0  # capped at STRETCH_MAX intervals (0.3 s), already past: the next batch goes at once


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
    pairs = [socket.socketpair() for _ in range(2 * HEARTBEAT_PARTS)]
    writers = [(await asyncio.open_connection(sock=ours))[1] for ours, _ in pairs]
    try:
        clients = [Client(w.transport) for w in writers]  # type: ignore[arg-type]
        for client in clients:
            hub.add(client)
        assert sorted(c.slot for c in clients) == sorted(list(range(HEARTBEAT_PARTS)) * 2)  # dealt in turn
        hub.heartbeat(3, HEARTBEAT_PARTS)
        assert [c for c in clients if not c.answered] == [c for c in clients if c.slot == 3]  # pinged: 2 of 40
        for client in clients:
            if client.slot == 3:
                assert pairs[clients.index(client)][1].recv(16) == b"\x89\x00"  # the shared ping frame
        for part in range(HEARTBEAT_PARTS):  # the next round: only the two silent ones are dropped
            hub.heartbeat(part, HEARTBEAT_PARTS)
        assert hub.counters["heartbeat_dropped"] == 2
        assert len(hub) == 2 * HEARTBEAT_PARTS - 2
    finally:
        for writer in writers:
            writer.close()
        for _, theirs in pairs:
            theirs.close()


def test_each_broadcast_starts_at_another_client_and_each_is_first_about_as_often() -> None:
    members = [Client(None) for _ in range(10)]  # type: ignore[arg-type]
    firsts = [rotated(members, turn)[0] for turn in range(1000)]
    for turn in (0, 1, 7):
        order = rotated(members, turn)
        assert sorted(map(id, order)) == sorted(map(id, members))  # everyone, once
        start = members.index(order[0])
        assert order == members[start:] + members[:start]  # the same order, from another start
    assert all(80 <= firsts.count(m) <= 120 for m in members)  # 100 each if perfectly even
