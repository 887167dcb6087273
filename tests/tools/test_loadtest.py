"""`mixer loadtest`: real clients in worker processes against the real app, a real merge stage, real Redis."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import select
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp import WSMsgType, web

from mixer.codec import FIELD, unpack_item
from mixer.keys import Keys
from mixer.settings import Settings
from mixer.streams import read_range
from mixer.tools.loadtest.client import WorkerPlan, WorkerStats, _raise_fd_limit
from mixer.tools.loadtest.count import CHUNK, FrameCounter
from mixer.tools.loadtest.drive import Driver
from mixer.tools.loadtest.options import LoadOptions, capped_ramp, check_url
from mixer.tools.loadtest.poll import PolledClient, connect, poll_clients, read_round
from mixer.tools.loadtest.procstat import (
    MIN_CONN_BYTES,
    bytes_per_connection,
    core_busy,
    core_times,
    cpu_model,
    describe_machine,
    process_ticks,
    rss_bytes,
)
from mixer.tools.loadtest.report import memory_per_connection, percentiles, report, verdict
from mixer.tools.loadtest.run import add_loadtest_parser, loadtest, loadtest_command, save_result
from mixer.tools.loadtest.sse import sse_url_of
from tests.helpers import FIXTURES as FIXTURES_DIR
from tests.processes import die_with_parent, free_port, start_mixer
from tests.servers import CHATS, running_deployment, serving, settings_for

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

RECORDING = FIXTURES_DIR / "recorded" / "pstweetchat_2019-03-01.jsonl"


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mixer")
    add_loadtest_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["loadtest", *argv])


def _quiet(message: str, progress: bool = False) -> None:
    pass


async def test_driven_run_reports_deliveries_no_loss_latency_and_a_plot(
    redis: aioredis.Redis, keys: Keys, redis_url: str, tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    settings = settings_for(keys.prefix, redis_url=redis_url)
    async with running_deployment(settings, redis_url) as srv:
        options = LoadOptions(
            url=srv.ws_url,
            clients=40,
            processes=2,
            sample=3,
            ramp=0.5,
            duration=2.0,
            drive="synth",
            rate=50,
            server_pid=os.getpid(),
        )
        out, plot = tmp_path / "result.json", tmp_path / "plot.png"
        save_result(await loadtest(settings, options, _quiet), out, plot)
    result = json.loads(out.read_text())
    assert result["connected_peak"] == 40 and result["failed"] == 0 and result["closes"] == 0
    assert result["published"] >= 50
    assert result["deliveries"] >= 40 * result["published"]
    assert result["deliveries_per_s"] > 0
    assert result["loss"] == {
        "published": result["published"],
        "sampled_clients": 6,
        "clients_missing": 0,
        "worst_missing": 0,
    }
    assert result["posts_per_client"]["min"] >= result["published"]
    lat = result["latency_ms"]
    assert lat["count"] >= 6 * result["published"]
    assert 0 <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    server = result["server"]
    assert server["cpu_percent"] > 0 and server["connected"] == 40
    # (the server is this test process: memory freed by earlier tests may be reused, and then it says so)
    per = bytes_per_connection(server["rss_before"], server["rss_connected"], 40)
    assert server["bytes_per_connection"] == per and (per is None or per >= MIN_CONN_BYTES)
    assert len(result["cores"]["busy_percent"]) == os.cpu_count()
    assert sum(row["deliveries"] for row in result["timeline"]) == result["deliveries"]
    assert "latency ms   p50" in report(result)
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


async def test_a_chats_filter_in_the_url_expects_only_the_driven_posts_of_those_chats(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    settings = settings_for(keys.prefix, redis_url=redis_url)
    async with running_deployment(settings, redis_url) as srv:
        options = LoadOptions(
            url=srv.ws_url + "?chats=%23EdChat",  # as the server reads it: normalised, `#` and case dropped
            clients=6,
            processes=1,
            sample=3,
            ramp=0.2,
            duration=1.2,
            drive="synth",
            rate=30,
            drain=3.0,
        )
        result = await loadtest(settings, options, _quiet)
    published = result["published"]
    assert published >= 30
    # synth posts go round the chats one by one: smbiz, edchat, journchat, ... (post n in chat n % 3)
    assert result["expected"] == len(range(1, published, 3)) < published
    assert result["loss"] == {
        "published": result["expected"],
        "sampled_clients": 3,
        "clients_missing": 0,
        "worst_missing": 0,
    }
    assert verdict(result) == []
    assert result["posts_per_client"]["min"] >= result["expected"]


def test_a_chats_filter_no_driven_post_can_pass_is_refused_before_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    chats = (*CHATS, CHATS[0].__class__("pstweetchat", "PSTweetChat", "#2f6fde"))
    settings = settings_for("never:", redis_url="redis://127.0.0.1:1/0", chats=chats)  # Redis never reached
    url = "ws://127.0.0.1:1/ws?chats=nochat,other"
    assert loadtest_command(settings, _args("--url", url, "--drive", "synth")) == 2
    assert capsys.readouterr().err == (
        "mixer loadtest: --url asks for chats=nochat,other but the driven posts are in edchat, journchat, pstweetchat, "
        "smbiz: no driven post would reach a client; filter on a driven chat or leave chats= out of --url\n"
    )
    assert loadtest_command(settings, _args("--url", url, "--drive", "replay", str(RECORDING))) == 2
    assert "--url asks for chats=nochat,other but the driven posts are in pstweetchat: no" in capsys.readouterr().err
    # undriven, a filter is the user's business; one a driven chat passes is measured (the test above)
    assert LoadOptions(url=url).chats == frozenset({"nochat", "other"})


async def test_replay_drive_loops_the_recording_with_fresh_keys_and_notes_each_pass(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    chats = (*CHATS, CHATS[0].__class__("pstweetchat", "PSTweetChat", "#2f6fde"))
    settings = settings_for(keys.prefix, redis_url=redis_url, chats=chats)
    driver = Driver(settings, 100, RECORDING, "loadtest:t1:")
    await driver.prepare()
    size = len(driver._posts)
    try:
        await driver.run(3.5 * size / 100)  # three and a half passes' worth at 100 posts/s
    finally:
        await driver.aclose()
    entries = await read_range(redis, keys.chat("pstweetchat"), "0-0", count=100_000)
    posts = [unpack_item(entry_id, payload) for entry_id, payload, kind in entries if kind == FIELD]
    assert len(posts) == driver.published == driver.expected() > 2 * size  # on past the end of the recording
    assert len(driver.pass_starts) == -(-driver.published // size)  # one start per pass begun
    assert driver.pass_starts == sorted(driver.pass_starts) and driver.pass_starts[0] > 1_700_000_000
    assert [p["key"] for p in posts] == [f"loadtest:t1:{n}" for n in range(len(posts))]
    assert len({p["text"] for p in posts}) == len(posts)
    assert all(p["at"] == p["created"] and p["at"] > 1_700_000_000_000 for p in posts)


class _Stop:
    """A stop flag for ``poll_clients`` that a test sets from its event loop."""

    def __init__(self) -> None:
        self.flag = False

    def is_set(self) -> bool:
        return self.flag

    def wait(self, timeout: float | None = None) -> bool:
        return self.flag


@asynccontextmanager
async def serving_ws(handler: Handler) -> AsyncIterator[str]:
    """A bare aiohttp app answering ``/ws`` with ``handler`` on 127.0.0.1; yields its websocket URL."""
    app = web.Application()
    app.router.add_get("/ws", handler)
    async with serving(app, shutdown_timeout=60.0) as url:
        yield url.replace("http://", "ws://") + "/ws"


async def test_counting_clients_count_posts_across_reads_lag_frames_pings_and_the_close_code() -> None:
    text = 'quoted \\"id\\": and "id": in text ' + "x" * 2000  # ~2 KB each: the big frame spans several reads
    posts = [{"key": f"k{n}", "text": text, "id": f"{n}-0"} for n in range(300)]
    pongs: list[tuple[WSMsgType, bytes]] = []
    closed = asyncio.Event()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        await ws.send_str(json.dumps({"type": "hello", "pinned": {"id": "9-0"}}, separators=(",", ":")))
        await ws.send_str(json.dumps({"type": "posts", "items": posts[:2]}, separators=(",", ":")))
        await ws.send_str('{"type":"lag","skipped":3}')
        await ws.send_str(json.dumps({"type": "posts", "items": posts[2:]}, separators=(",", ":")))  # ~600 KB
        await ws.ping(b"hb")
        msg = await ws.receive(timeout=5)
        pongs.append((msg.type, msg.data))
        await ws.close(code=4008)
        if len(pongs) == 3:
            closed.set()
        return ws

    async with serving_ws(handler) as url:
        stats, stop, reports = WorkerStats(), _Stop(), _Reports()
        # three clients in one round-paced worker; the later ones find the frames' counts already known
        plan = WorkerPlan(0, url, (0, 1, 2), 3, 0.0, 0, None, poll=0.005)
        worker = asyncio.create_task(asyncio.to_thread(poll_clients, plan, stats, reports, 0.0, stop))
        try:
            await asyncio.wait_for(closed.wait(), 10)
            await asyncio.wait_for(reports.until_closes(3), 5)  # its progress reports say when it saw all three close
        finally:
            stop.flag = True
            await worker
    assert sorted(stats.per_client.values()) == [300, 300, 300]  # the hello's pinned post is not counted
    assert stats.items == 900 and stats.lag_frames == 3
    assert dict(stats.close_codes) == {4008: 3} and stats.connected == 0 and stats.failed == 0
    assert pongs == [(WSMsgType.PONG, b"hb")] * 3


class _Reports:
    """A worker's message sink that hands each message to the test's event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.got: asyncio.Queue[tuple[str, int, dict[str, int]]] = asyncio.Queue()

    def put(self, message: tuple[str, int, dict[str, int]]) -> None:
        self.loop.call_soon_threadsafe(self.got.put_nowait, message)

    async def until_closes(self, closes: int) -> None:
        while (await self.got.get())[2]["closes"] < closes:
            pass


async def test_one_read_of_a_paced_client_takes_every_frame_that_arrived_since_the_last() -> None:
    frames = 200
    sent = asyncio.Event()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for n in range(frames):
            await ws.send_str(f'{{"type":"posts","items":[{{"key":"p{n}","id":"{n}-0"}}]}}')
        await ws.send_str('{"type":"end"}')
        sent.set()
        await ws.receive()
        return ws

    async with serving_ws(handler) as url:
        stats = WorkerStats()
        client = connect(WorkerPlan(0, url, (0,), 1, 0.0, 0, None), 0, stats, 0.0)
        assert client is not None
        try:
            await asyncio.wait_for(sent.wait(), 10)
            while True:  # wait (off the loop) until the last frame is in the socket
                await asyncio.to_thread(select.select, [client.sock], [], [], 1)
                if client.sock.recv(1 << 20, socket.MSG_PEEK).endswith(b'{"type":"end"}'):
                    break
            client.read()  # ONE read: the 101 answer and all 201 frames
        finally:
            client.drop(stopping=True)
    assert stats.per_client == {0: frames} and stats.items == frames and stats.connected == 0


def test_one_round_reads_every_ready_socket_even_past_a_thousand() -> None:
    _raise_fd_limit()  # 2 x 1,100 sockets
    stats, live, peers = WorkerStats(), {}, []
    epoll = select.epoll()
    frame = b"\x81" + bytes([len(POSTS_FRAME)]) + POSTS_FRAME
    try:
        for n in range(1100):
            ours, theirs = socket.socketpair()
            ours.setblocking(False)
            client = PolledClient(ours, n, stats, 0.0)
            client.upgraded = True
            stats.per_client[n] = 0
            live[ours.fileno()] = client
            epoll.register(ours.fileno(), select.EPOLLIN)
            theirs.sendall(frame)
            peers.append(theirs)
        read_round(epoll, live)
    finally:
        for client in live.values():
            client.sock.close()
        for peer in peers:
            peer.close()
        epoll.close()
    assert stats.items == 1100 and set(stats.per_client.values()) == {1}


POSTS_FRAME = b'{"type":"posts","items":[{"key":"k","id":"1-0"}]}'


def _posts_frame(tag: str, posts: int) -> bytes:
    items = [{"key": f"{tag}-{n}", "id": f"{n}-0", "text": "x" * 300} for n in range(posts)]
    payload = json.dumps({"type": "posts", "items": items}, separators=(",", ":")).encode()
    return bytes([0x81, 127]) + len(payload).to_bytes(8, "big") + payload


@contextmanager
def _polled_pairs(stats: WorkerStats, count: int) -> Iterator[tuple[list[PolledClient], list[socket.socket]]]:
    """``count`` upgraded counting clients on real loopback sockets, each with the server side of its socket."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        clients: list[PolledClient] = []
        peers: list[socket.socket] = []
        try:
            for n in range(count):
                sock = socket.create_connection(server.getsockname())
                sock.setblocking(False)
                peers.append(server.accept()[0])
                client = PolledClient(sock, n, stats, 0.0)
                client.upgraded = True
                stats.per_client[n] = 0
                clients.append(client)
            yield clients, peers
        finally:
            for sock in [c.sock for c in clients] + peers:
                sock.close()


def _read_all(client: PolledClient, stats: WorkerStats, posts: int) -> None:
    """Read rounds whenever the socket has data, until the client counted ``posts``."""
    while stats.per_client[client.n] < posts:
        assert select.select([client.sock], [], [], 5)[0], "no data within 5 s"
        client.read()


def test_a_frame_counted_once_is_dropped_unread_by_every_other_client_with_the_same_counts() -> None:
    big, small, other = _posts_frame("big", 300), _posts_frame("small", 2), _posts_frame("other", 200)
    ping = b"\x89\x02hi"
    stream = big + ping + small + other
    stats = WorkerStats()
    with _polled_pairs(stats, 2) as (clients, peers):
        first, second = clients
        peers[0].sendall(stream)
        _read_all(first, stats, 502)  # the first client scans every frame: nothing known yet
        assert first.unread == 0
        cut = len(big) // 3  # the second gets the same frames, the first one in two parts
        peers[1].sendall(stream[:cut])
        assert select.select([second.sock], [], [], 5)[0]
        second.read()
        peers[1].sendall(stream[cut:])
        _read_all(second, stats, 502)
        for peer in peers:  # both answered the ping: a masked pong with its payload
            assert peer.recv(64) == b"\x8a\x82\0\0\0\0hi"
    assert stats.per_client == {0: 502, 1: 502} and stats.items == 1004
    # the second client read what came first (a third of the big frame) and then, frames being big, the headers
    # and first bytes of each: the rest of the known frames stayed unread
    assert second.unread > len(big) - cut + len(other) - 2 * CHUNK


def test_small_frames_are_read_whole_in_one_read_even_when_known() -> None:
    small = b"".join(_posts_frame(f"s{n}", 3) for n in range(50))  # 50 frames of ~1 KB
    stats = WorkerStats()
    with _polled_pairs(stats, 2) as (clients, peers):
        for client, peer in zip(clients, peers, strict=True):  # the first scans them, the second knows them
            peer.sendall(small)
            _read_all(client, stats, 150)
    assert stats.per_client == {0: 150, 1: 150}
    assert clients[1].unread == 0  # an extra read per small frame costs more than copying it


async def test_counting_client_finds_a_mark_split_between_two_reads_at_any_offset() -> None:
    for cut in range(1, 200):
        items = [{"key": f"cut{cut}-{n}", "id": f"{n}-0"} for n in range(5)]
        payload = json.dumps({"type": "posts", "items": items}, separators=(",", ":")).encode()
        frame = bytes([0x81, 126]) + len(payload).to_bytes(2, "big") + payload
        got: list[int] = []
        client = FrameCounter(lambda n, _at, got=got: got.append(n), lambda: None)
        client.upgraded = True
        for part in (frame[:cut], frame[cut:]):  # the same bytes, read in two pieces
            buffer = client.get_buffer(-1)
            buffer[: len(part)] = part
            client.buffer_updated(len(part))
        assert got == [5], cut


def test_another_host_is_refused_unless_allowed_and_the_url_must_be_a_websocket_url() -> None:
    assert check_url("ws://127.0.0.1:8080/ws") == "ws://127.0.0.1:8080/ws"
    assert check_url("ws://localhost:9000/ws?chats=smbiz")
    assert check_url("ws://[::1]:8080/ws")
    for url in ("ws://10.0.0.5:8080/ws", "ws://example.com/ws", "ws://0.0.0.0/ws", "ws://staging.invalid/ws"):
        with pytest.raises(ValueError, match="add --allow-remote to load-test another host"):
            check_url(url)
        assert check_url(url, allow_remote=True) == url  # a check of the URL alone: nothing is resolved or opened
    for url in ("http://127.0.0.1:8080/ws", "ws:///ws", "127.0.0.1:8080"):
        with pytest.raises(ValueError, match="--url must be a ws:// URL"):
            check_url(url, allow_remote=True)


def test_a_ramp_faster_than_the_connection_cap_is_stretched_to_it() -> None:
    assert capped_ramp(100, 5.0, 500.0) == 5.0  # 20 connections/s: under the cap
    assert capped_ramp(5000, 2.0, 500.0) == 10.0  # 2,500/s asked: 10 s at 500/s
    assert capped_ramp(5, 0.0, 500.0) == 0.01
    with pytest.raises(ValueError, match="--max-connect-rate must be a positive number"):
        LoadOptions(max_connect_rate=0)


def test_a_tls_url_is_refused_when_counting_clients_would_read_it() -> None:
    with pytest.raises(ValueError, match="the counting clients speak plain ws:// only"):
        LoadOptions(url="wss://localhost/ws", clients=100, processes=2, sample=5)
    assert LoadOptions(url="wss://localhost/ws", clients=10, processes=2, sample=5).clients == 10  # all sampled


def test_a_msgpack_url_is_refused_and_the_events_url_leaves_format_out(capsys: pytest.CaptureFixture[str]) -> None:
    # msgpack frames are binary: the sampled clients skipped them and the counting ones found no post in them, so
    # the run read as total loss; and the /events clients, sent the same query, were all refused with a 400
    refused = "--url asks for format=msgpack: the load test's clients read JSON frames only"
    assert loadtest_command(Settings(), _args("--url", "ws://127.0.0.1:8080/ws?chats=smbiz&format=msgpack")) == 2
    assert capsys.readouterr().err.startswith(f"mixer loadtest: {refused}")
    for url in ("ws://127.0.0.1:8080/ws?format=json", "ws://127.0.0.1:8080/ws?format=", "ws://127.0.0.1:8080/ws"):
        assert LoadOptions(url=url).url == url
    assert sse_url_of("ws://127.0.0.1:8080/ws?chats=smbiz&format=json&profile=wall") == (
        "http://127.0.0.1:8080/events?chats=smbiz&profile=wall"
    )
    assert sse_url_of("wss://example.org/mixer/ws?format=json") == "https://example.org/mixer/events"


async def test_the_stretched_ramp_is_said_and_used(keys: Keys) -> None:
    said: list[str] = []
    dead = f"ws://127.0.0.1:{free_port()}/ws"  # nothing listens: every client fails at its slot
    options = LoadOptions(url=dead, clients=4, processes=1, ramp=0, duration=0, max_connect_rate=10)
    result = await loadtest(settings_for(keys.prefix), options, lambda m, p=False: said.append(m))
    assert said[0] == "--ramp stretched from 0 to 0.4 s: 4 clients at --max-connect-rate 10/s at most"
    assert result["ramp_s"] == 0.4 and result["failed"] == 4
    assert result["elapsed_s"] >= 0.3  # the last client's slot came at 0.3 s: the cap held


def test_command_refuses_another_host_without_the_flag_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = loadtest_command(Settings(), _args("--url", "ws://192.0.2.7:8080/ws", "--clients", "2"))
    assert code == 2
    assert capsys.readouterr().err == (
        "mixer loadtest: refusing '192.0.2.7': it is not this machine; add --allow-remote to load-test another host\n"
    )
    # with the flag the URL passes: the next check (a missing recording) is the one that stops it, before any connect
    settings = Settings(redis_url="redis://127.0.0.1:1/0")
    remote = ("--url", "ws://192.0.2.7:8080/ws", "--allow-remote")
    assert loadtest_command(settings, _args(*remote, "--drive", "replay", "/nonexistent/night.jsonl")) == 2
    err = capsys.readouterr().err
    assert "recording not found" in err and "allow-remote" not in err


def test_command_refuses_driving_without_redis_and_a_bad_drive(capsys: pytest.CaptureFixture[str]) -> None:
    assert loadtest_command(Settings(), _args("--drive", "synth")) == 2
    assert "--redis" in capsys.readouterr().err
    assert loadtest_command(Settings(redis_url="redis://127.0.0.1:1/0"), _args("--drive", "replay")) == 2
    assert "FILE" in capsys.readouterr().err
    assert loadtest_command(Settings(), _args("--drive", "fast")) == 2


def test_percentiles_are_nearest_rank_and_ordered() -> None:
    assert percentiles([]) is None
    values = [float(v) for v in range(1, 101)]
    assert percentiles(reversed(values)) == {"count": 100, "p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
    assert percentiles([7.0]) == {"count": 1, "p50": 7.0, "p95": 7.0, "p99": 7.0, "max": 7.0}


def test_proc_readings_give_per_core_busy_process_ticks_and_rss() -> None:
    before = core_times("cpu  1 0 1 10 0 0 0 0 0 0\ncpu0 100 0 0 100 0 0 0 0 0 0\ncpu1 0 0 0 200 0 0 0 0 0 0\nintr 1\n")
    after = core_times("cpu  1 0 1 10 0 0 0 0 0 0\ncpu0 190 0 10 100 0 0 0 0 0 0\ncpu1 10 0 0 290 0 0 0 0 0 0\n")
    assert core_busy(before, after) == [100.0, 10.0]
    assert process_ticks("42 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 1 0 9 9 9") == 175
    assert rss_bytes("Name:\tpython\nVmRSS:\t  2048 kB\n") == 2 * 1024 * 1024


def test_memory_per_connection_is_the_rss_growth_or_not_measured_when_freed_memory_was_reused() -> None:
    mib = 1 << 20
    assert bytes_per_connection(50 * mib, 51 * mib, 512) == 2048
    server = {"pid": 7, "rss_before": 50 * mib, "rss_connected": 51 * mib, "connected": 512}
    assert memory_per_connection(server | {"bytes_per_connection": 2048}) == "2.0 KiB per connection"
    # a second run against the same server: the first run's clients left memory the new ones fit in
    for grown in (0, 40_000, -4096):
        assert bytes_per_connection(50 * mib, 50 * mib + grown, 500) is None  # never "0 per connection"
    server = {"pid": 7, "rss_before": 50 * mib, "rss_connected": 50 * mib + 41_000, "connected": 500}
    assert memory_per_connection(server | {"bytes_per_connection": None}) == (
        "memory per connection not measured (RSS grew 82 B per connection: the server reused memory its earlier "
        "clients freed; measure on a freshly started server)"
    )
    assert bytes_per_connection(None, 51 * mib, 500) is None and bytes_per_connection(50 * mib, 51 * mib, 0) is None


def test_a_load_test_that_could_not_connect_exits_non_zero_saying_so(capsys: pytest.CaptureFixture[str]) -> None:
    dead = f"ws://127.0.0.1:{free_port()}/ws"  # nothing listens there
    args = _args("--url", dead, "--clients", "5", "--processes", "1", "--ramp", "0", "--duration", "0")
    assert loadtest_command(Settings(), args) == 1
    captured = capsys.readouterr()
    assert "0 connected of 5 (5 failed" in captured.out
    assert f"FAILED: no client could connect to {dead} (5 of 5 failed)" in captured.err


def test_a_result_that_cannot_be_written_is_refused_before_the_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dead = f"ws://127.0.0.1:{free_port()}/ws"  # never connected to: every case stops before the run
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o500)
    cases = [
        (("--json", "/nonexistent/x.json"), "--json /nonexistent/x.json: no such directory /nonexistent"),
        (("--plot", "/nonexistent/x.png"), "--plot /nonexistent/x.png: no such directory /nonexistent"),
        (("--json", str(tmp_path)), f"--json {tmp_path}: is a directory, give a file name"),
    ]
    if os.geteuid() != 0:  # root may write anywhere
        cases.append((("--plot", str(read_only / "x.png")), f"--plot {read_only / 'x.png'}: not writable"))
    for flags, message in cases:
        assert loadtest_command(Settings(), _args("--url", dead, "--clients", "1", *flags)) == 2
        captured = capsys.readouterr()
        assert captured.err == f"mixer loadtest: {message}\n" and captured.out == ""


def test_a_result_that_fails_to_save_after_the_run_still_gets_its_summary(capsys: pytest.CaptureFixture[str]) -> None:
    dead = f"ws://127.0.0.1:{free_port()}/ws"  # nothing listens there
    args = _args("--url", dead, "--clients", "2", "--processes", "1", "--ramp", "0", "--duration", "0")
    args.json = Path("/dev/full")  # writable, so it passes the check; every write fails (ENOSPC)
    assert loadtest_command(Settings(), args) == 1
    captured = capsys.readouterr()
    assert "0 connected of 2 (2 failed" in captured.out  # the summary, printed before the save was tried
    assert "mixer loadtest: the result could not be saved: [Errno 28] No space left on device" in captured.err


def _result(connected: int, failed: int, published: int | None = None, worst: int = 0) -> dict[str, object]:
    loss = None if published is None else {"published": published, "worst_missing": worst}
    return {"url": "ws://127.0.0.1:8080/ws", "clients": 10, "connected_peak": connected, "failed": failed, "loss": loss}


def test_the_verdict_fails_failed_connections_and_lost_posts_beyond_their_thresholds() -> None:
    assert verdict(_result(10, 0, published=1000)) == []
    assert verdict(_result(9, 1)) == ["1 of 10 clients could not connect (--max-failed 0)"]
    assert verdict(_result(9, 1), max_failed=1) == []
    assert verdict(_result(10, 0, published=1000, worst=3)) == [
        "a sampled client missed 3 of 1,000 driven posts (0.30% > --max-loss 0%)"
    ]
    assert verdict(_result(10, 0, published=1000, worst=3), max_loss=0.5) == []


def test_command_refuses_bad_thresholds_and_a_missing_recording(capsys: pytest.CaptureFixture[str]) -> None:
    assert loadtest_command(Settings(), _args("--max-loss", "120")) == 2
    assert "--max-loss" in capsys.readouterr().err
    settings = Settings(redis_url="redis://127.0.0.1:1/0")
    assert loadtest_command(settings, _args("--drive", "replay", "/nonexistent/night.jsonl")) == 2
    assert "recording not found: /nonexistent/night.jsonl" in capsys.readouterr().err


def test_driving_with_no_client_that_parses_posts_is_refused_rather_than_judged_as_total_loss(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0")  # never reached
    assert loadtest_command(settings, _args("--drive", "synth", "--sample", "0")) == 2
    assert capsys.readouterr().err == (
        "mixer loadtest: --sample 0 leaves no client that parses what it gets, so the loss and latency of the driven "
        "posts cannot be measured: give --sample 1 or more (or --sse-clients)\n"
    )
    assert LoadOptions(sample=0).drive == "none"  # undriven, counting clients alone still measure deliveries
    assert LoadOptions(sample=0, sse_clients=2, drive="synth").sse_clients == 2  # /events clients parse every event


def test_the_machine_line_names_the_cpu_model_and_clock_and_a_reference_time() -> None:
    cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2445.430\n\nprocessor\t: 1\nmodel name\t: Other\n"
    assert cpu_model(cpuinfo) == "AMD EPYC at 2445 MHz"
    assert cpu_model("model name\t: ARMv8\n") == "ARMv8" and cpu_model("cpu MHz\t: fast\n") == ""
    line = describe_machine()
    assert f"{os.cpu_count()} cores" in line and f"Python {platform.python_version()}" in line
    assert re.search(r"reference loop \d+ ms", line)


class HeldSockets:
    """A /ws endpoint that keeps every websocket open and says when as many as asked are open at once."""

    def __init__(self) -> None:
        self.open = 0
        self.changed = asyncio.Event()

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.open += 1
        self.changed.set()
        try:
            async for _ in ws:
                pass
        finally:
            self.open -= 1
            self.changed.set()
        return ws

    async def until(self, count: int, timeout: float) -> None:
        async def wait() -> None:
            while self.open != count:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), timeout)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "sigkill"])
async def test_a_stopped_or_killed_load_test_leaves_no_client_connected(how: str) -> None:
    held = HeldSockets()
    app = web.Application()
    app.router.add_get("/ws", held.handler)
    async with serving(app) as url:
        ws_url = url.replace("http://", "ws://") + "/ws"
        # one sampled client and one counting client, each in a worker process of its own, for a minute
        argv = ("loadtest", "--url", ws_url, "--clients", "2", "--sample", "1", "--processes", "1", "--ramp", "0.5")
        proc = await start_mixer(*argv, "--duration", "60", env=dict(os.environ), preexec=_own_group())
        try:
            await held.until(2, 45)
            if how == "ctrl-c":  # a terminal sends it to every process of the foreground group
                os.killpg(proc.pid, signal.SIGINT)
            else:
                proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
            code = await asyncio.wait_for(proc.wait(), 30)
            await held.until(0, 15)  # every worker went with the command: no socket left open
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.stdout is not None
    output = (await proc.stdout.read()).decode()
    if how == "sigkill":
        return
    assert code == 130
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    name = "SIGINT" if how == "ctrl-c" else "SIGTERM"
    assert output == f"mixer loadtest: stopped by {name} before the end: no result\n"


def _own_group() -> Callable[[], None]:
    """A preexec_fn: the child leads a process group of its own (as a terminal's foreground job) and dies with the
    test process."""
    dies = die_with_parent()

    def preexec() -> None:
        os.setpgid(0, 0)
        if dies is not None:
            dies()

    return preexec
