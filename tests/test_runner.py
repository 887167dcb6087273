"""The process roles as `mixer` starts them: what `mixer ingest` follows, what each role loads and prints, how the
other commands find the Redis of a running `mixer run`, `--public`, and what scripts/setup says on a first run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from mixer.codec import unpack_post
from mixer.embedded import EmbeddedRedis, redis_binary
from mixer.ingest.publish import Publisher
from mixer.keys import Keys
from mixer.runner import keep_running
from mixer.runtime import local_addresses
from mixer.streams import read_range
from tests.fake_mastodon import STATUSES, FakeMastodon, key_of, serving_mastodon
from tests.helpers import FIXTURES, ROOT, eventually, make_post
from tests.processes import free_port, mixer_env, read_until, start_mixer


@pytest.fixture
async def fake() -> AsyncIterator[FakeMastodon]:
    async with serving_mastodon() as server:
        yield server


async def test_mixer_ingest_follows_the_configured_mastodon_instance_and_reports_counters(
    redis: aioredis.Redis, keys: Keys, redis_url: str, fake: FakeMastodon, tmp_path: Path
) -> None:
    fake.timeline = STATUSES[:5]
    env = mixer_env(redis_url, keys, "hoot", MIXER_MASTODON_INSTANCES=fake.url, MIXER_MASTODON_POLL_SECONDS="0.2")
    with (tmp_path / "ingest.log").open("wb") as log:
        proc = await start_mixer("ingest", env=env, log=log)
        try:
            async with asyncio.timeout(20):
                last = "0-0"
                while (await redis.xlen(keys.chat("hoot"))) < 5:
                    reply = await redis.xread({keys.chat("hoot"): last}, block=1000)
                    last = reply[0][1][-1][0] if reply else last
                while not await redis.hexists(keys.ingest_stats, f"mastodon:{fake.url.split('//')[1]}"):
                    await redis.xread({keys.chat("hoot"): "$"}, block=200)  # waits on Redis, not a bare sleep
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 15) == 0
    entries = await read_range(redis, keys.chat("hoot"), "0-0")
    assert [unpack_post(eid, raw).key for eid, raw, _ in entries] == [key_of(s) for s in STATUSES[:5]]
    [stats] = (await redis.hgetall(keys.ingest_stats)).values()
    assert json.loads(stats)["published"] == 5


async def _first_entry(redis: aioredis.Redis, stream: str) -> None:
    async with asyncio.timeout(20):
        while not await redis.xlen(stream):
            await redis.xread({stream: "$"}, block=500)  # waits on Redis, not a bare sleep


async def _modules_loaded(role: str, redis: aioredis.Redis, keys: Keys, redis_url: str, tmp_path: Path) -> set[str]:
    """Every module the `mixer ROLE` process imported while it did its work (python -X importtime)."""
    recording = FIXTURES / "recorded" / "pstweetchat_2019-03-01.jsonl"
    env = mixer_env(redis_url, keys, "pstweetchat", PYTHONPROFILEIMPORTTIME="1", MIXER_MERGE_WINDOW_MS="20")
    args = {"ingest": ["--replay", str(recording), "--speed", "0"], "serve": ["--no-merge", "--port", str(free_port())]}
    if role == "merge":
        await Publisher(redis, keys, ["pstweetchat"], 1000).publish([make_post("a", ("pstweetchat",))])
    log_path = tmp_path / f"{role}.log"
    with log_path.open("wb") as log:
        proc = await start_mixer(role, *args.get(role, []), env=env, log=None if role == "serve" else log)
        try:
            if role == "serve":
                log.write("".join(await read_until(proc, "live at")).encode())
            else:
                await _first_entry(redis, keys.feed if role == "merge" else keys.chat("pstweetchat"))
        finally:
            proc.send_signal(signal.SIGTERM)
            if role == "serve":
                out, _ = await proc.communicate()
                log.write(out)
            assert await asyncio.wait_for(proc.wait(), 15) == 0
    lines = log_path.read_text().splitlines()
    return {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:") and "|" in line}


@pytest.mark.parametrize("role", ["merge", "ingest"])
async def test_the_merge_and_ingest_processes_never_load_the_web_server(
    role: str, redis: aioredis.Redis, keys: Keys, redis_url: str, tmp_path: Path
) -> None:
    loaded = await _modules_loaded(role, redis, keys, redis_url, tmp_path)
    assert "mixer.runner" in loaded  # the listing works
    assert "aiohttp.web" not in loaded
    assert not any(name.startswith("mixer.fanout") for name in loaded)


async def test_the_fan_out_process_does_load_it(
    redis: aioredis.Redis, keys: Keys, redis_url: str, tmp_path: Path
) -> None:
    loaded = await _modules_loaded("serve", redis, keys, redis_url, tmp_path)
    assert {"aiohttp.web", "mixer.fanout.app"} <= loaded  # the check above would see it


RECORDING = FIXTURES / "recorded" / "pstweetchat_2019-03-01.jsonl"


async def mixer(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """Run `mixer ARGS` to its end; its exit code and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mixer.cli", *args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    return await proc.wait(), err.decode()


async def stopped(proc: asyncio.subprocess.Process) -> str:
    """SIGTERM ``proc``, check it exits 0, and return the rest of its output."""
    proc.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def test_the_tools_use_the_redis_of_a_running_mixer_run_until_it_stops(tmp_path: Path) -> None:
    keys = Keys(f"joined-{uuid.uuid4().hex[:8]}")
    env = mixer_env(None, keys, "pstweetchat", XDG_RUNTIME_DIR=str(tmp_path))
    run = await start_mixer("run", "--no-demo", "--port", str(free_port()), env=env)
    try:
        await read_until(run, "live at")
        [published] = (tmp_path / "chatmixer").glob("*.json")
        info = json.loads(published.read_text())
        assert (info["pid"], info["prefix"]) == (run.pid, keys.prefix) and info["url"].startswith("unix://")
        using = f"using the Redis of the mixer run (pid {run.pid}) at {info['url']}"
        code, err = await mixer("replay", str(RECORDING), "--speed", "0", env=env)
        assert code == 0 and f"mixer replay: {using}" in err, err
        inside = aioredis.Redis.from_url(info["url"])
        try:
            assert await inside.xlen(keys.chat("pstweetchat")) == 10  # in the run's own Redis
        finally:
            await inside.aclose()
        for tool in (["record", "--duration", "0.2"], ["transcript"]):
            code, err = await mixer(*tool, env=env)
            assert code == 0 and f"mixer {tool[0]}: {using}" in err, err
    finally:
        await stopped(run)
    assert not published.exists()  # removed on exit: nothing left to join
    code, err = await mixer("replay", str(RECORDING), env=env)
    assert code == 2 and "start `mixer run` first" in err


@pytest.mark.parametrize("role", ["serve", "ingest", "merge"])
async def test_a_split_role_without_a_shared_redis_or_a_mixer_run_refuses_instead_of_starting_its_own(
    role: str, tmp_path: Path
) -> None:
    keys = Keys(f"alone-{uuid.uuid4().hex[:8]}")
    stale = tmp_path / "chatmixer" / f"{keys.prefix}.json"
    stale.parent.mkdir()
    gone = await asyncio.create_subprocess_exec("true")
    await gone.wait()  # a run that died without removing its file
    url = "unix:///nonexistent/redis.sock"
    stale.write_text(json.dumps({"url": url, "pid": gone.pid, "event": "", "prefix": keys.prefix}))
    env = mixer_env(None, keys, "pstweetchat", XDG_RUNTIME_DIR=str(tmp_path))
    code, err = (
        await mixer(role, "--port", str(free_port()), env=env) if role == "serve" else await mixer(role, env=env)
    )
    assert code == 2
    assert err.strip() == (
        f"mixer {role}: runs on a shared Redis: give --redis URL or MIXER_REDIS_URL, or start `mixer run` first to "
        "join its Redis (only `mixer run` starts a Redis of its own)"
    )
    assert not stale.exists()  # the dead run's file is ignored and removed


@pytest.mark.parametrize("role", ["ingest", "merge", "serve"])
async def test_each_split_role_prints_one_line_saying_what_it_does_and_where_and_keeps_routine_chatter_at_debug(
    role: str, redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    env = mixer_env(redis_url, keys, "pstweetchat")
    port = free_port()
    args = {"ingest": ["--replay", str(RECORDING), "--speed", "0"], "serve": ["--port", str(port)]}
    line = {
        "ingest": f"mixer ingest: replaying {RECORDING.name} as fast as possible in a loop into #pstweetchat on "
        f"{redis_url}  (Ctrl-C stops it)",
        "merge": f"mixer merge: merging #pstweetchat into the feed and the wall stream on {redis_url}; one merge "
        "process leads at a time, others stand by  (Ctrl-C stops it)",
        "serve": f"chatmixer is live at http://localhost:{port}/  (fan-out and merge on {redis_url}; Ctrl-C stops it)",
    }[role]
    proc = await start_mixer(role, *args.get(role, []), env=env)
    try:
        out = "".join(await read_until(proc, line))
        if role == "ingest":  # two passes of the recording, a second apart
            async with asyncio.timeout(20):
                while await redis.xlen(keys.chat("pstweetchat")) < 20:
                    await redis.xread({keys.chat("pstweetchat"): "$"}, block=500)
        else:  # the lease is taken
            await eventually(lambda: redis.exists(keys.merge_lease), timeout=20)  # type: ignore[arg-type,return-value]
    finally:
        out += await stopped(proc)
    assert out.splitlines() == [line]  # the lease, the collector, each replay pass: DEBUG, not shown


async def test_run_public_answers_on_the_machines_own_address_and_prints_every_address(tmp_path: Path) -> None:
    addresses = local_addresses()
    if not addresses:
        pytest.skip("this machine has no non-loopback IPv4 address to open the wall from")
    port = free_port()
    env = mixer_env(
        None, Keys(f"public-{uuid.uuid4().hex[:8]}"), "pstweetchat", XDG_RUNTIME_DIR=str(tmp_path),
        MIXER_EVENT_LINK="https://example.org/join",
    )  # fmt: skip
    run = await start_mixer("run", "--public", "--no-demo", "--port", str(port), env=env)
    try:
        lines = await read_until(run, "QR code")
        printed = [line.strip() for line in lines]
        assert f"chatmixer is live at http://localhost:{port}/  (Ctrl-C stops it)" in printed
        for address in addresses:
            assert f"open it from another machine at http://{address}:{port}/" in printed
        assert "the wall's QR code sends people to https://example.org/join" in printed
        async with aiohttp.ClientSession() as http:
            for host in (*addresses, "127.0.0.1"):
                async with http.get(f"http://{host}:{port}/healthz") as resp:
                    assert resp.status == 200, host
    finally:
        await stopped(run)


def test_a_first_run_of_scripts_run_says_what_it_is_doing_and_a_second_says_nothing(tmp_path: Path) -> None:
    """scripts/setup in a copy of the checkout, with a stand-in python whose venv and pip only note their calls."""
    for name in ("scripts/setup", "scripts/run", "pyproject.toml"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    calls = tmp_path / "calls"
    fake = tmp_path / "python3"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "python $*" >> {calls}\n'
        'if [ "$1 $2" = "-m venv" ]; then\n'
        '  mkdir -p "$3/bin"; cp "$0" "$3/bin/python"\n'
        f'  printf \'#!/usr/bin/env bash\\necho "mixer $*" >> {calls}\\n\' > "$3/bin/mixer"\n'
        '  chmod +x "$3/bin/mixer"\n'
        "fi\n"
    )
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake)}
    first = subprocess.run(
        ["bash", "scripts/run", "--port", "9000"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr
    assert first.stderr.splitlines() == [
        "chatmixer setup: creating the Python environment in .venv (first run only)",
        "chatmixer setup: installing chatmixer and its dependencies into .venv (about half a minute; pip is quiet "
        "meanwhile)",
        "chatmixer setup: done: .venv is ready",
        "chatmixer: starting mixer run (Redis, the demo replay, the merge stage, the web server)...",
    ]
    assert calls.read_text().splitlines()[-1] == "mixer run --ephemeral --port 9000"  # the demo keeps nothing
    kept = subprocess.run(["bash", "scripts/run", "--fresh"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert (kept.returncode, calls.read_text().splitlines()[-1]) == (0, "mixer run --fresh")  # a night is kept
    again = subprocess.run(["bash", "scripts/setup"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert (again.returncode, again.stderr) == (0, "")  # set up already: nothing to say


async def test_a_redis_server_that_will_not_come_back_has_its_log_tail_logged_a_line_a_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a wrapper that runs the real server first, then one that says two lines and exits
    count, wrapper = tmp_path / "starts", tmp_path / "redis-server"
    wrapper.write_text(
        f"#!/bin/sh\necho x >> {count}\n"
        f'if [ $(wc -l < {count}) -ge 2 ]; then echo "FATAL first"; echo "FATAL second"; exit 1; fi\n'
        f'exec {redis_binary()} "$@"\n'
    )
    wrapper.chmod(0o755)
    told = asyncio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "FATAL second" in record.getMessage():
                told.set()

    watch = Watch()
    logging.getLogger("mixer.runner").addHandler(watch)
    try:
        with EmbeddedRedis(str(wrapper)) as server, caplog.at_level(logging.ERROR, logger="mixer.runner"):
            keeper = asyncio.ensure_future(keep_running(server, every=0.01, ready_within=10))
            os.kill(server.pid, signal.SIGKILL)
            try:
                await asyncio.wait_for(told.wait(), 20)
            finally:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper
    finally:
        logging.getLogger("mixer.runner").removeHandler(watch)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert said[0] == "embedded redis-server did not come back; the end of its log follows"
    assert said[-2:] == ["embedded redis-server log: FATAL first", "embedded redis-server log: FATAL second"]
    assert all("\n" not in line for line in said)
