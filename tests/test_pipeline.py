"""The whole pipeline: recorded file -> chat streams -> merge -> feed -> websocket, and its processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from mixer.codec import FIELD, unpack_post
from mixer.ingest.publish import Publisher
from mixer.ingest.recorded import read_records
from mixer.ingest.replay import Replayer, ReplayOptions
from mixer.keys import Keys
from mixer.merge.stage import MergeStage
from mixer.models import Edit
from mixer.runner import LISTEN_BACKLOG
from mixer.streams import dedicated_client, id_key, read_range
from tests.helpers import FIXTURES as FIXTURES_DIR
from tests.helpers import make_post, now_ms
from tests.processes import free_port, mixer_env, read_until, start_mixer
from tests.servers import CHATS, running_app, settings_for

FIXTURES = FIXTURES_DIR / "recorded"
TAGS = tuple(c.tag for c in CHATS)


async def test_replayed_posts_reach_a_websocket_tagged_with_their_chats(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    settings = settings_for(keys.prefix, chats=(*CHATS, CHATS[0].__class__("pstweetchat", "PSTweetChat", "#2f6fde")))
    recording = FIXTURES / "pstweetchat_2019-03-01.jsonl"
    expected = [p for p in read_records(recording) if not isinstance(p, Exception)]
    merge_conn = dedicated_client(redis_url, 1000)
    merge = MergeStage(merge_conn, keys, settings.chat_tags, window=0.05)
    async with running_app(settings, redis_url) as srv, aiohttp.ClientSession() as http:
        merging = asyncio.create_task(merge.run())
        try:
            async with http.ws_connect(srv.ws_url) as ws:
                assert (await ws.receive_json(timeout=5))["type"] == "hello"
                publisher = Publisher(redis, keys, settings.chat_tags, 1000)
                await Replayer(publisher, [recording], ReplayOptions(speed=0)).run()
                items: list[dict[str, object]] = []
                while len(items) < len(expected):
                    frame = await ws.receive_json(timeout=10)
                    items += frame["items"] if frame["type"] == "posts" else []
        finally:
            merging.cancel()
            await asyncio.gather(merging, return_exceptions=True)
            await merge_conn.aclose()
    assert sorted(i["key"] for i in items) == sorted(p.key for p in expected)
    for item in items:
        assert "pstweetchat" in item["chats"]  # type: ignore[operator]
        assert re.fullmatch(r"\d+-\d+", str(item["id"]))


async def _wait_feed_length(redis: aioredis.Redis, keys: Keys, at_least: int, timeout: float = 30) -> int:
    """Block on the feed stream (XREAD BLOCK, an event, not a sleep) until it holds ``at_least`` posts (cards)."""
    deadline = time.monotonic() + timeout
    last, count = "0-0", 0
    while count < at_least:
        assert time.monotonic() < deadline, f"feed stuck at {count} of {at_least}"
        reply = await redis.xread({keys.feed: last}, count=10_000, block=1000)
        for _, entries in reply:
            count += sum(1 for _, fields in entries if FIELD in fields)
            last = entries[-1][0]
    return count


async def test_merge_killed_mid_stream_and_restarted_loses_and_repeats_nothing(
    redis: aioredis.Redis, keys: Keys, redis_url: str, tmp_path: Path
) -> None:
    publisher = Publisher(redis, keys, TAGS, 1_000_000)
    total = 12_000  # the kill comes at 3,000: the rest (and the assert below) makes sure it is mid-stream
    posts = [make_post(f"x:{i}", (TAGS[i % 3],), created=1_700_000_000_000 + i) for i in range(total)]
    # every tenth post is also in a second chat: the same key through two streams
    posts += [make_post(f"x:{i}", (TAGS[(i + 1) % 3],), created=1_700_000_000_000 + i) for i in range(0, total, 10)]
    for start in range(0, len(posts), 2000):
        await publisher.publish(posts[start : start + 2000])
    env = mixer_env(redis_url, keys, ",".join(TAGS), MIXER_MERGE_WINDOW_MS="20")
    with (tmp_path / "merge.log").open("wb") as log:  # a file, not a pipe nobody reads
        first = await start_mixer("merge", env=env, log=log)
        try:
            await _wait_feed_length(redis, keys, 3000)
        finally:
            first.send_signal(signal.SIGKILL)
            await asyncio.wait_for(first.wait(), 10)
        written_before_restart = await redis.xlen(keys.feed)
        assert written_before_restart < total, "the merge finished before it was killed: raise the count"
        second = await start_mixer("merge", env=env, log=log)
        try:
            await _wait_feed_length(redis, keys, total)
        finally:
            second.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(second.wait(), 15) == 0
    entries = await read_range(redis, keys.feed, "0-0", count=1_000_000)
    feed = [unpack_post(eid, raw) for eid, raw, kind in entries if kind == FIELD]  # cards; updates aside
    assert len(feed) == total
    assert sorted(int(p.key[2:]) for p in feed) == list(range(total))


async def test_merge_process_stops_promptly_on_sigterm_mid_stream(
    redis: aioredis.Redis, keys: Keys, redis_url: str, tmp_path: Path
) -> None:
    """redis-py can swallow a cancellation delivered mid-read; the merge loop must still stop."""
    publisher = Publisher(redis, keys, TAGS, 1_000_000)
    for start in range(0, 30_000, 2000):
        await publisher.publish([make_post(f"x:{i}", (TAGS[i % 3],)) for i in range(start, start + 2000)])
    env = mixer_env(redis_url, keys, ",".join(TAGS), MIXER_MERGE_WINDOW_MS="20")
    written = 0
    for _ in range(3):
        with (tmp_path / "merge.log").open("wb") as log:
            proc = await start_mixer("merge", env=env, log=log)
            # 2,000 cards written by this process (not counting the last one's after its SIGTERM): mid-stream
            await _wait_feed_length(redis, keys, written + 2000)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 15) == 0
            written = sum(1 for _, fields in await redis.xrange(keys.feed) if FIELD in fields)  # all, once stopped


@dataclass
class DemoRun:
    """A `mixer run` of the bundled demo on its embedded Redis, as a user starts it."""

    proc: asyncio.subprocess.Process
    port: int
    redis_pid: int  # the embedded redis-server it said it started
    socket_path: Path


@contextlib.asynccontextmanager
async def demo_run(tmp_path: Path) -> AsyncIterator[DemoRun]:
    """`mixer run` of the demo (50x), once it says it is live; stopped with SIGTERM at the end, which must exit 0."""
    port = free_port()
    env = mixer_env(None, Keys("demo"), "pstweetchat,powershell", MIXER_DEMO_SPEED="50", XDG_RUNTIME_DIR=str(tmp_path))
    env.pop("MIXER_CHATS")  # the bundled demo config's chats
    proc = await start_mixer("run", "--port", str(port), env=env)
    try:
        lines = await read_until(proc, "live at")
        match = re.search(r"embedded redis-server \(pid (\d+)\) at unix://(\S+)", "".join(lines))
        assert match, "".join(lines)
        yield DemoRun(proc, port, int(match.group(1)), Path(match.group(2)))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0


async def next_posts(ws: aiohttp.ClientWebSocketResponse, timeout: float = 20) -> list[dict[str, Any]]:
    """The items of the next ``posts`` frame (other frames skipped)."""
    while (frame := await ws.receive_json(timeout=timeout))["type"] != "posts":
        pass
    return list(frame["items"])


async def test_mixer_run_serves_the_demo_and_leaves_no_redis_behind_after_sigterm(tmp_path: Path) -> None:
    started = time.monotonic()
    async with demo_run(tmp_path) as run:
        assert run.socket_path.exists()
        async with aiohttp.ClientSession() as http, http.ws_connect(f"http://127.0.0.1:{run.port}/ws") as ws:
            hello = await ws.receive_json(timeout=10)
            assert "pstweetchat" in [c["tag"] for c in hello["chats"]]
            assert (await next_posts(ws))[0]["chats"]
        print(f"mixer run: first post on a websocket after {time.monotonic() - started:.2f} s")
    assert not _alive(run.redis_pid)
    assert not run.socket_path.exists() and not run.socket_path.parent.exists()


async def test_mixer_run_starts_its_redis_again_when_it_is_killed_and_the_feed_goes_on(tmp_path: Path) -> None:
    async with demo_run(tmp_path) as run, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"http://127.0.0.1:{run.port}/ws") as ws:
            before = (await next_posts(ws))[-1]["id"]
        os.kill(run.redis_pid, signal.SIGKILL)
        back = "".join(await read_until(run.proc, "embedded redis-server is back", 30))
        new_pid = int(re.findall(r"is back \(pid (\d+)\)", back)[-1])
        assert new_pid != run.redis_pid and run.socket_path.exists()
        # the night was kept (append-only file): a client resuming after the last post it saw gets newer ones
        async with http.ws_connect(f"http://127.0.0.1:{run.port}/ws?since={before}") as ws:
            items = await next_posts(ws, 30)
            assert items and all(id_key(item["id"]) > id_key(before) for item in items)
        async with http.get(f"http://127.0.0.1:{run.port}/readyz") as resp:
            assert resp.status == 200
    assert not _alive(new_pid)
    assert not run.socket_path.exists()


def _somaxconn() -> int:
    return int(Path("/proc/sys/net/core/somaxconn").read_text())


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"  # a zombie is dead, waiting for init to reap it
    except FileNotFoundError:
        return False
    except OSError:
        return os.path.exists(f"/proc/{pid}")


async def test_a_post_in_two_chat_streams_reaches_the_websocket_once_with_both_chats(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    settings = settings_for(keys.prefix)
    merge_conn = dedicated_client(redis_url, 1000)
    merge = MergeStage(merge_conn, keys, settings.chat_tags, window=0.1)
    async with running_app(settings, redis_url) as srv, aiohttp.ClientSession() as http:
        merging = asyncio.create_task(merge.run())
        try:
            async with http.ws_connect(srv.ws_url) as ws:
                await ws.receive_json(timeout=5)
                publisher = Publisher(redis, keys, settings.chat_tags, 1000)
                await publisher.publish([make_post("x:twin", ("smbiz",))])  # one follower saw it in #smbiz
                await publisher.publish([make_post("x:twin", ("edchat",))])  # another in #edchat
                await publisher.publish([make_post("x:after", ("journchat",))])
                items: list[dict[str, object]] = []
                while not any(i["key"] == "x:after" for i in items):
                    frame = await ws.receive_json(timeout=10)
                    items += frame["items"] if frame["type"] == "posts" else []
        finally:
            merging.cancel()
            await asyncio.gather(merging, return_exceptions=True)
            await merge_conn.aclose()
    twins = [i for i in items if i["key"] == "x:twin"]
    assert len(twins) == 1
    assert sorted(twins[0]["chats"]) == ["edchat", "smbiz"]  # type: ignore[type-var]


async def test_a_post_that_joins_a_chat_after_its_release_reaches_a_client_filtered_on_it_as_a_new_card(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    settings = settings_for(keys.prefix)
    merge_conn = dedicated_client(redis_url, 1000)
    merge = MergeStage(merge_conn, keys, settings.chat_tags, window=0.05)
    publisher = Publisher(redis, keys, settings.chat_tags, 1000)
    twin, edited = make_post("webhook:twin1", ("smbiz",)), make_post("webhook:edit1", ("smbiz",))
    async with running_app(settings, redis_url) as srv, aiohttp.ClientSession() as http:
        merging = asyncio.create_task(merge.run())
        try:
            async with (
                http.ws_connect(srv.ws_url) as everything,
                http.ws_connect(srv.ws_url + "?chats=edchat,journchat") as joined,
            ):
                for ws in (everything, joined):
                    await ws.receive_json(timeout=5)  # hello
                await publisher.publish([twin, edited])
                released: list[dict[str, Any]] = []
                while len(released) < 2:  # both left the reorder buffer: what follows is late
                    released += await next_posts(everything)
                assert sorted(p["key"] for p in released) == ["webhook:edit1", "webhook:twin1"]
                await publisher.publish([twin.replace(chats=("edchat",))])  # a union twin, after the window
                await publisher.publish([Edit(edited.replace(chats=("journchat",), text="now #journchat"))])
                got: list[tuple[str, str, list[str]]] = []
                while len(got) < 2:
                    frame = await joined.receive_json(timeout=10)
                    got += [(frame["type"], i["key"], i["chats"]) for i in frame.get("items", ())]
        finally:
            merging.cancel()
            await asyncio.gather(merging, return_exceptions=True)
            await merge_conn.aclose()
    assert got == [
        ("posts", "webhook:twin1", ["smbiz", "edchat"]),
        ("posts", "webhook:edit1", ["smbiz", "journchat"]),
    ]


async def test_serve_with_workers_shares_the_port_between_processes(
    redis: aioredis.Redis, keys: Keys, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = mixer_env(redis_url, keys, ",".join(TAGS))
    with (tmp_path / "serve.log").open("wb") as log:
        proc = await start_mixer("serve", "--no-merge", "--workers", "2", "--port", str(port), env=env, log=log)
        try:
            first = await _answering_pid(port, avoid=set())
            pids = {first, await _answering_pid(port, avoid={first})}
            assert proc.pid in pids
            # each process listens with a deep accept queue (ss shows a listener's backlog as its Send-Q)
            ss = await asyncio.create_subprocess_exec("ss", "-ltnH", f"sport = :{port}", stdout=subprocess.PIPE)
            listing, _ = await ss.communicate()
            backlogs = [int(line.split()[2]) for line in listing.decode().splitlines()]
            assert backlogs == [min(LISTEN_BACKLOG, _somaxconn())] * 2
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 20) == 0
    for pid in pids - {proc.pid}:
        assert not _alive(pid)
    said = (tmp_path / "serve.log").read_text()
    assert said.count("chatmixer is live at") == 1 and "(fan-out in 2 processes on " in said  # once, not per worker


async def _answering_pid(port: int, avoid: set[int]) -> int:
    """The pid of a process, none of ``avoid``, that answers /api/stats on the shared port."""
    async with asyncio.timeout(30):
        while True:
            connector = aiohttp.TCPConnector(force_close=True)  # a new connection each time: any process may take it
            async with aiohttp.ClientSession(connector=connector) as http:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/api/stats") as resp:
                        if (pid := int((await resp.json())["pid"])) not in avoid:
                            return pid
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)  # not listening yet: the processes are starting


async def test_serve_with_workers_starts_another_in_place_of_a_killed_one_and_says_so(
    redis: aioredis.Redis, keys: Keys, redis_url: str, tmp_path: Path
) -> None:
    # a killed worker used to be left a zombie, unlogged, while the parent served on with half the processes
    port = free_port()
    env = mixer_env(redis_url, keys, ",".join(TAGS))
    with (tmp_path / "serve.log").open("wb") as log:
        proc = await start_mixer("serve", "--no-merge", "--workers", "2", "--port", str(port), env=env, log=log)
        try:
            worker = await _answering_pid(port, avoid={proc.pid})
            os.kill(worker, signal.SIGKILL)
            replacement = await _answering_pid(port, avoid={proc.pid, worker})
            assert proc.returncode is None  # the parent and its clients served on
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 20) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    said = (tmp_path / "serve.log").read_text()
    assert f"ERROR [{proc.pid}] mixer.workers: fan-out worker pid {worker} ended (killed by SIGKILL); starting" in said
    assert f"fan-out worker pid {replacement} started in place of pid {worker}" in said
    assert not _alive(replacement)  # stopped with the parent
    assert "Traceback" not in said


async def test_run_no_demo_replays_the_given_file_and_speed_0_publishes_it_as_fast_as_possible(
    redis: aioredis.Redis, keys: Keys, redis_url: str, tmp_path: Path
) -> None:
    hour = 3_600_000
    night = tmp_path / "night.jsonl"  # two posts an hour apart: at the demo's 20x the second would take 3 minutes
    posts = [make_post(f"x:{i}", ("smbiz",), created=now_ms() + i * hour) for i in (0, 1)]
    night.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in posts))
    env = mixer_env(redis_url, keys, "smbiz,pstweetchat")
    args = ("--no-demo", "--replay", str(night), "--speed", "0", "--port", str(free_port()))
    with (tmp_path / "run.log").open("wb") as log:
        proc = await start_mixer("run", *args, env=env, log=log)
        try:
            published: list[str] = []
            async with asyncio.timeout(20):
                while len(published) < 2:
                    last = published[-1] if published else "0-0"
                    for _, entries in await redis.xread({keys.chat("smbiz"): last}, block=1000):
                        published += [entry_id.decode() for entry_id, _ in entries]
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 20) == 0
    assert await redis.xlen(keys.chat("pstweetchat")) == 0  # and the bundled demo was not replayed
