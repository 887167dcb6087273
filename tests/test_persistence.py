"""`mixer run` keeps the night: real processes on a real embedded redis-server with its state dir, killed
(SIGKILL, the run and its Redis) or stopped (SIGTERM) under a steady replay and started again; the lock on the
state dir, --fresh, --ephemeral, and a state dir that cannot hold the night."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from mixer.keys import Keys
from mixer.statedir import LOCK_NAME
from tests.fake_mastodon import STATUSES, key_of, serving_mastodon
from tests.helpers import eventually, feed_posts, make_post, now_ms
from tests.processes import free_port, mixer_env, read_until, start_mixer


@dataclass
class Run:
    """A started `mixer run`: its process, port, printed lines, its Redis (URL, pid) and a client on it."""

    proc: asyncio.subprocess.Process
    port: int
    lines: list[str]
    url: str
    redis_pid: int
    redis: aioredis.Redis

    @property
    def out(self) -> str:
        return "".join(self.lines)


def alive(pid: int) -> bool:
    """A live process (a zombie nobody reaps counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


async def start_run(env: dict[str, str], *args: str) -> Run:
    port = free_port()
    proc = await start_mixer("run", "--port", str(port), *args, env=env)
    lines = await read_until(proc, "live at", timeout=30)
    match = re.search(r"embedded redis-server \(pid (\d+)\) at (unix://\S+)", "".join(lines))
    assert match, "".join(lines)
    url = match.group(2)
    return Run(proc, port, lines, url, int(match.group(1)), aioredis.Redis.from_url(url))


async def stop_run(run: Run, sig: signal.Signals = signal.SIGTERM) -> None:
    """Stop ``run`` with ``sig``; SIGKILL kills its redis-server first, as a power cut would, and the run itself."""
    await run.redis.aclose()
    if run.proc.returncode is None:
        if sig == signal.SIGKILL:
            os.kill(run.redis_pid, signal.SIGKILL)
        run.proc.send_signal(sig)
    code = await asyncio.wait_for(run.proc.wait(), 40)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 0)
    await eventually(lambda: not alive(run.redis_pid), timeout=10)  # never a redis-server left behind


@pytest.fixture
async def stopping() -> AsyncIterator[list[Run]]:
    """Runs to stop at the end of the test, whatever happened."""
    runs: list[Run] = []
    yield runs
    for run in runs:
        if run.proc.returncode is None:
            await stop_run(run, signal.SIGKILL)


def steady_night(path: Path, count: int, every_ms: int = 100, pad: int = 0) -> None:
    """A recording of ``count`` posts ``every_ms`` apart (each text ``pad`` characters longer): replayed at 1x, a
    steady stream."""
    start = now_ms()
    filler = " lorem ipsum" * (pad // 12) + " " * (pad % 12)
    posts = [
        make_post(f"steady:{i}", ("smbiz",), created=start + i * every_ms, text=f"post steady:{i}{filler}")
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(post.to_dict()) + "\n" for post in posts))


async def wait_feed(redis: aioredis.Redis, keys: Keys, at_least: int, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while await redis.xlen(keys.feed) < at_least:
            await redis.xread({keys.feed: "$"}, block=500)  # waits on Redis, not a bare sleep


async def ws_posts(port: int, count: int, since: str | None = None) -> list[dict[str, object]]:
    """The first ``count`` posts a /ws client gets (with ``since``: resuming after that id)."""
    query = f"?since={since}" if since else ""
    items: list[dict[str, object]] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(f"http://127.0.0.1:{port}/ws{query}") as ws:
        while len(items) < count:
            frame = await ws.receive_json(timeout=20)
            items += frame["items"] if frame["type"] == "posts" else []
    return items


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
async def test_a_restarted_run_has_every_post_once_and_a_wall_resumes_from_since_without_a_gap(
    sig: signal.Signals, tmp_path: Path, state_home: Path, stopping: list[Run]
) -> None:
    keys = Keys(f"kept-{uuid.uuid4().hex[:8]}")
    night = tmp_path / "night.jsonl"
    steady_night(night, 2000, every_ms=20)  # 50 posts a second, for longer than the test (40 s)
    env = mixer_env(None, keys, "smbiz", XDG_RUNTIME_DIR=str(tmp_path), MIXER_MERGE_WINDOW_MS="20")
    args = ("--no-demo", "--replay", str(night), "--speed", "1")
    first = await start_run(env, *args)
    stopping.append(first)
    assert f"the night is kept in {state_home}/chatmixer/chatmixer-night" in first.out
    seen = await ws_posts(first.port, 15)  # a wall showing the night
    await wait_feed(first.redis, keys, 20)
    before = [(post.id, post.key) for post in await feed_posts(first.redis, keys)]
    clock, started = asyncio.get_running_loop().time, asyncio.get_running_loop().time()
    while clock() - started < 1.0:  # the stream goes on for more than a second before the kill
        await wait_feed(first.redis, keys, len(before) + 15)
        await first.redis.xread({keys.feed: "$"}, block=200)
    if sig == signal.SIGTERM:  # a clean stop loses nothing at all: everything in the feed when it is asked to stop
        before = [(post.id, post.key) for post in await feed_posts(first.redis, keys)]
    await stop_run(first, sig)
    assert (state_home / "chatmixer" / "chatmixer-night" / LOCK_NAME).exists()

    second = await start_run(env, *args)
    stopping.append(second)
    assert "resuming the night:" in second.out
    assert ("did not stop" in second.out) == (sig == signal.SIGKILL)
    after = [(post.id, post.key) for post in await feed_posts(second.redis, keys)]
    assert set(before) <= set(after)  # every post, under the same id
    # the replay starts over under a run tag of its own: texts already shown fold into their cards, news come
    await wait_feed(second.redis, keys, len(after) + 10)
    after = [(post.id, post.key) for post in await feed_posts(second.redis, keys)]
    assert len({key for _, key in after}) == len(after)  # none twice
    resumed = await ws_posts(second.port, 10, since=str(seen[-1]["id"]))  # the wall comes back with its last id
    ids = [post.id for post in await feed_posts(second.redis, keys)]
    following = ids[ids.index(str(seen[-1]["id"])) + 1 :]
    assert [item["id"] for item in resumed] == following[: len(resumed)]  # no gap, no repeat
    await stop_run(second)


async def test_a_killed_run_takes_its_redis_server_with_it_and_the_next_run_takes_over_at_once(
    tmp_path: Path, stopping: list[Run]
) -> None:
    env = mixer_env(None, Keys(f"kept-{uuid.uuid4().hex[:8]}"), "smbiz", XDG_RUNTIME_DIR=str(tmp_path))
    first = await start_run(env, "--no-demo")
    stopping.append(first)
    await first.redis.set("before-the-kill", "kept")
    first.proc.send_signal(signal.SIGKILL)  # the run only: the kernel sends its Redis the parent-death signal
    assert await asyncio.wait_for(first.proc.wait(), 20) == -signal.SIGKILL
    await first.redis.aclose()
    await eventually(lambda: not alive(first.redis_pid), timeout=10)  # no redis-server left holding the dir
    second = await start_run(env, "--no-demo")
    stopping.append(second)
    assert f"the last run on this night (pid {first.proc.pid}) did not stop; taking over its lock" in second.out
    assert await second.redis.get("before-the-kill") == b"kept"
    await stop_run(second)


async def test_followers_resume_from_their_cursors_after_a_kill_without_republishing(
    tmp_path: Path, stopping: list[Run]
) -> None:
    keys = Keys(f"kept-{uuid.uuid4().hex[:8]}")
    async with serving_mastodon(websocket=False) as fake:
        fake.timeline = STATUSES[:5]
        env = mixer_env(
            None, keys, "hoot", XDG_RUNTIME_DIR=str(tmp_path), MIXER_MERGE_WINDOW_MS="20",
            MIXER_MASTODON_INSTANCES=fake.url, MIXER_MASTODON_POLL_SECONDS="0.2",
        )  # fmt: skip
        first = await start_run(env, "--no-demo")
        stopping.append(first)
        await wait_feed(first.redis, keys, 5)
        await stop_run(first, signal.SIGKILL)
        fake.timeline = STATUSES[:8]
        fake.requests.clear()
        second = await start_run(env, "--no-demo")
        stopping.append(second)
        await wait_feed(second.redis, keys, 8)
        assert fake.requests[0][1].get("min_id") == STATUSES[4]["id"]  # from the cursor the first run left
        assert await second.redis.xlen(keys.chat("hoot")) == 8  # the first five were not fetched again
        assert [post.key for post in await feed_posts(second.redis, keys)] == [key_of(s) for s in STATUSES[:8]]
        await stop_run(second)


async def test_a_second_run_on_the_same_night_is_refused_naming_the_first(tmp_path: Path, stopping: list[Run]) -> None:
    env = mixer_env(None, Keys(f"kept-{uuid.uuid4().hex[:8]}"), "smbiz", XDG_RUNTIME_DIR=str(tmp_path))
    first = await start_run(env, "--no-demo")
    stopping.append(first)
    second = await start_mixer("run", "--no-demo", "--port", str(free_port()), env=env)
    out, _ = await asyncio.wait_for(second.communicate(), 30)
    assert second.returncode == 2
    assert f"is in use by another mixer run (pid {first.proc.pid})" in out.decode()
    assert "Traceback" not in out.decode()
    assert await first.redis.ping()  # the first one carries on
    await stop_run(first)


async def test_fresh_moves_the_night_aside_and_says_where(
    tmp_path: Path, state_home: Path, stopping: list[Run]
) -> None:
    env = mixer_env(None, Keys(f"kept-{uuid.uuid4().hex[:8]}"), "smbiz", XDG_RUNTIME_DIR=str(tmp_path))
    first = await start_run(env, "--no-demo")
    stopping.append(first)
    await first.redis.set("last-night", "kept")
    await stop_run(first)
    second = await start_run(env, "--no-demo", "--fresh")
    stopping.append(second)
    match = re.search(r"--fresh: the previous night was moved to (\S+)", second.out)
    assert match, second.out
    moved = Path(match.group(1))
    assert moved.parent == state_home / "chatmixer" and moved.name.startswith("chatmixer-night.")
    assert await second.redis.get("last-night") is None  # a new night
    await stop_run(second)
    third = await start_run(
        {**env, "XDG_STATE_HOME": str(tmp_path / "elsewhere")}, "--no-demo", "--state-dir", str(moved)
    )
    stopping.append(third)
    assert await third.redis.get("last-night") == b"kept"  # the old night, whole, where it was said to be
    await stop_run(third)


async def test_ephemeral_leaves_nothing_on_disk(tmp_path: Path, state_home: Path, stopping: list[Run]) -> None:
    env = mixer_env(None, Keys(f"kept-{uuid.uuid4().hex[:8]}"), "smbiz", XDG_RUNTIME_DIR=str(tmp_path))
    run = await start_run(env, "--no-demo", "--ephemeral")
    stopping.append(run)
    assert "the night is kept" not in run.out
    assert await run.redis.config_get("appendonly") == {"appendonly": "no"}
    await run.redis.set("gone", "soon")
    await stop_run(run)
    assert list(state_home.iterdir()) == []


async def mixer_exit(*args: str, env: dict[str, str]) -> tuple[int, str]:
    proc = await start_mixer(*args, env=env)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_a_state_dir_that_cannot_hold_the_night_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = mixer_env(None, Keys(f"kept-{uuid.uuid4().hex[:8]}"), "smbiz", XDG_RUNTIME_DIR=str(tmp_path))
    (tmp_path / "a-file").write_text("not a dir")
    code, out = await mixer_exit("run", "--no-demo", "--state-dir", str(tmp_path / "a-file" / "night"), env=env)
    assert (code, out) == (2, f"mixer run: cannot use {tmp_path}/a-file/night for the night: Not a directory\n")
    code, out = await mixer_exit("run", "--ephemeral", "--fresh", env=env)
    assert (code, out.strip()) == (
        2,
        "mixer run: --ephemeral keeps nothing on disk: give it or --state-dir/--fresh, not both",
    )


def _can_unshare_mounts() -> bool:
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    flags = ["--mount"] if os.geteuid() == 0 else ["--map-root-user", "--mount"]
    probe = subprocess.run(["unshare", *flags, "true"], capture_output=True)
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(not _can_unshare_mounts(), reason="cannot mount a small disk (unshare --mount)")


def on_small_disk(size: str, mountpoint: Path, *args: str) -> list[str]:
    """``mixer ARGS`` run with a fresh tmpfs of ``size`` at ``mountpoint``, seen by that process only."""
    flags = ["--mount", "--propagation", "private"] if os.geteuid() == 0 else ["--map-root-user", "--mount"]
    script = f'mount -t tmpfs -o size={size} tmpfs "$0" && exec "$@"'
    return ["unshare", *flags, "sh", "-c", script, str(mountpoint), sys.executable, "-m", "mixer.cli", *args]


@needs_mounts
async def test_a_nearly_full_disk_is_refused_at_start(tmp_path: Path) -> None:
    env = mixer_env(None, Keys(f"kept-{uuid.uuid4().hex[:8]}"), "smbiz", XDG_RUNTIME_DIR=str(tmp_path))
    disk = tmp_path / "disk"
    disk.mkdir()
    proc = await asyncio.create_subprocess_exec(
        *on_small_disk("1m", disk, "run", "--no-demo", "--state-dir", str(disk / "night")),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert re.fullmatch(
        rf"mixer run: only 1\.0 MB free on the disk of {disk}/night: a night needs room to grow \(at least 32 MB\); "
        r"free some space, or give --state-dir on another disk\n",
        out.decode(),
    ), out.decode()


@needs_mounts
async def test_a_disk_filling_up_during_the_night_is_logged_and_refused_writes_lose_nothing(
    tmp_path: Path, stopping: list[Run]
) -> None:
    keys = Keys(f"kept-{uuid.uuid4().hex[:8]}")
    night = tmp_path / "night.jsonl"
    # ~6 times what fills the disk's ~2 MB above the 32 MB a night needs at start (each post's ~4 KB of text goes to
    # the chat stream and again to the feed): the disk is full about a second in (60,000 short posts took ~8 s)
    steady_night(night, 3_000, every_ms=1, pad=4_000)
    disk = tmp_path / "disk"
    disk.mkdir()
    env = mixer_env(None, keys, "smbiz", XDG_RUNTIME_DIR=str(tmp_path), MIXER_MERGE_WINDOW_MS="20")
    port = free_port()
    args = ("run", "--port", str(port), "--no-demo", "--replay", str(night), "--speed", "0")
    log_path = tmp_path / "run.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *on_small_disk("34m", disk, *args, "--state-dir", str(disk / "night")), env=env, stdout=log, stderr=log
        )
    run = Run(proc, port, [], "", 0, aioredis.Redis())
    stopping.append(run)
    await eventually(lambda: "live at" in log_path.read_text(), timeout=30)
    match = re.search(r"embedded redis-server \(pid (\d+)\) at (unix://\S+)", log_path.read_text())
    assert match
    run.redis_pid, run.url = int(match.group(1)), match.group(2)
    run.redis = aioredis.Redis.from_url(run.url)
    warning = "WARNING mixer.statedir: Redis cannot write the night to"
    await eventually(lambda: warning in log_path.read_text(), timeout=50)
    assert (await run.redis.info("persistence"))["aof_last_write_status"] == "err"
    kept = [(post.id, post.key) for post in await feed_posts(run.redis, keys)]
    assert kept  # what the feed had stays readable
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
            assert resp.status == 503, await resp.text()
        async with http.get(f"http://127.0.0.1:{port}/api/feed?limit=5") as resp:
            assert resp.status == 200 and len((await resp.json())["items"]) == 5
    assert proc.returncode is None  # the run carries on, serving what it has
    if os.geteuid() == 0:  # room again: Redis writes again by itself, the refused posts come in, nothing was lost
        flags = ["--target", str(proc.pid), "--mount"]
        remount = await asyncio.create_subprocess_exec("nsenter", *flags, "mount", "-o", "remount,size=256m", str(disk))
        assert await remount.wait() == 0
        await eventually(lambda: "Redis writes the night to" in log_path.read_text(), timeout=20)
        await wait_feed(run.redis, keys, len(kept) + 100)
    after = {(post.id, post.key) for post in await feed_posts(run.redis, keys)}
    assert set(kept) <= after
    await stop_run(run)
