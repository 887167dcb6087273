"""Big frames go out by sendfile from one in-memory file, byte for byte what a write would send, in order."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import select
import socket
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from mixer.fanout import zerocopy
from mixer.fanout.appkeys import HUB
from mixer.fanout.clients import Client
from mixer.fanout.frames import wire
from mixer.fanout.hub import Hub
from mixer.fanout.messages import frames_for
from mixer.fanout.zerocopy import MIN_BYTES, SharedFrame, socket_fd
from mixer.feed import FeedItem
from mixer.keys import Keys
from tests.helpers import make_post
from tests.servers import add_to_feed, next_event, receive_posts, running_app, settings_for


def _batch(tag: str, posts: int) -> list[FeedItem]:
    return [("p", {"key": f"{tag}-{n}", "chats": ["smbiz"], "text": f"{tag} {n} " + "y" * 380}) for n in range(posts)]


async def test_frames_too_big_for_the_socket_arrive_whole_and_in_order_after_the_sendfile_part() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    theirs = socket.socket()
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 10)  # small buffers: sendfile takes part of a frame
    theirs.connect(server.getsockname())
    theirs.setblocking(False)
    ours = server.accept()[0]
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 << 10)
    server.close()
    _, writer = await asyncio.open_connection(sock=ours)
    loop = asyncio.get_running_loop()
    try:
        hub = Hub()
        client = Client(writer.transport)  # type: ignore[arg-type]
        hub.add(client)
        assert client.fd == ours.fileno()
        frames = []
        for n in range(4):  # four different ~160 KB frames, more than both socket buffers hold
            batch = _batch(f"b{n}", 400)
            hub.broadcast(batch, f"{n + 1}-0")
            frames.append(wire(frames_for(None, batch), "json"))
            if n == 0:
                assert hub.counters["frames_zero_copy"] == 1  # the first went partly by sendfile ...
                assert writer.transport.get_write_buffer_size() > 0  # ... the rest waits in the transport
                # the peer reads some (the loop does not run: the transport keeps its part): the socket has
                # room again, but the next frames must still queue behind the first one's rest
                assert select.select([theirs], [], [], 5)[0]
                early = theirs.recv(16 << 10)
        assert len(frames[0]) > MIN_BYTES
        expected = b"".join(frames)
        received = early
        while len(received) < len(expected):
            received += await asyncio.wait_for(loop.sock_recv(theirs, 1 << 16), 10)
        assert received == expected  # same bytes, same order; no frame changed by a later one
    finally:
        writer.close()
        theirs.close()


async def test_a_big_posts_frame_reaches_a_websocket_client_by_sendfile(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        hub = srv.app[HUB]
        hub.flush_interval = 1.0
        async with http.ws_connect(srv.ws_url) as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "hello"
            await add_to_feed(redis, keys, make_post("first"))  # idle: alone, at once, small
            assert [p["key"] for p in await receive_posts(ws, 1)] == ["first"]
            posts = [make_post(f"big{n}", text="z" * 400) for n in range(60)]  # busy: coalesced into ~30 KB
            await add_to_feed(redis, keys, *posts)
            got = await receive_posts(ws, 60)
            assert [p["key"] for p in got] == [p.key for p in posts]
            assert hub.counters["frames_zero_copy"] >= 1


def test_a_small_frame_is_written_as_usual() -> None:
    assert SharedFrame.of(b"x" * (MIN_BYTES - 1)) is None
    shared = SharedFrame.of(b"x" * MIN_BYTES)
    assert shared is not None
    shared.close()


async def test_a_tls_transport_is_never_bypassed(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    make = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1"]
    proc = await asyncio.create_subprocess_exec(
        *make, "-keyout", str(key), "-out", str(cert), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    assert await proc.wait() == 0
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    client_side = ssl.create_default_context(cafile=cert)
    fds: asyncio.Queue[int] = asyncio.Queue()

    async def accepted(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        fds.put_nowait(socket_fd(writer.transport))
        writer.close()

    server = await asyncio.start_server(accepted, "127.0.0.1", 0, ssl=server_side)
    port = server.sockets[0].getsockname()[1]
    async with server:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_side, server_hostname="localhost")
        assert await asyncio.wait_for(fds.get(), 10) == -1
        writer.close()


async def test_a_big_batch_reaches_an_sse_client_by_sendfile_event_for_event(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        hub = srv.app[HUB]
        hub.flush_interval = 1.0
        async with http.get(srv.url + "/events") as resp:
            assert (await next_event(resp))[1] == "hello"
            first = await add_to_feed(redis, keys, make_post("first"))  # idle: alone, small
            assert (await next_event(resp))[0] == first[0]
            ids = await add_to_feed(redis, keys, *(make_post(f"sse{n}", text="z" * 400) for n in range(60)))
            got = [await next_event(resp) for _ in ids]  # busy: coalesced into one ~35 KB chunk
            assert [(event_id, name, data["key"]) for event_id, name, data in got] == [
                (entry_id, "post", f"sse{n}") for n, entry_id in enumerate(ids)
            ]
            assert hub.counters["frames_zero_copy"] >= 1


def test_without_descriptors_frames_are_written_as_usual_and_the_failure_is_logged_sparingly(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zerocopy, "_failures", 0)  # counted per process: start from none
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    caplog.set_level(logging.WARNING, "mixer.fanout.zerocopy")
    try:
        lowest_free = os.dup(0)  # a new descriptor takes the lowest free number: allow none from there
        os.close(lowest_free)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
        shared = [SharedFrame.of(b"x" * MIN_BYTES) for _ in range(5)]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert shared == [None] * 5
    said = [r.getMessage() for r in caplog.records if "no in-memory file" in r.getMessage()]
    assert len(said) == 3  # the 1st, 2nd and 4th time, not every frame
