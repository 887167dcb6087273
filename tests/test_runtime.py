"""The runtime file a `mixer run` publishes its Redis in, the machine's addresses, and URL checks."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mixer.embedded import redis_binary
from mixer.runtime import (
    RunInfo,
    find_run,
    local_addresses,
    publish,
    published,
    redis_problem,
    redis_url_problem,
    run_file,
    runtime_dir,
    withdraw,
)
from tests.processes import free_port


async def _dead_pid() -> int:
    proc = await asyncio.create_subprocess_exec("true")
    await proc.wait()
    return proc.pid


def test_the_runtime_dir_is_the_users_runtime_dir_else_the_state_dir() -> None:
    assert runtime_dir({"XDG_RUNTIME_DIR": "/run/user/1000", "HOME": "/home/ada"}) == Path("/run/user/1000/chatmixer")
    assert runtime_dir({"XDG_STATE_HOME": "/srv/state", "HOME": "/home/ada"}) == Path("/srv/state/chatmixer/run")
    assert runtime_dir({"XDG_RUNTIME_DIR": "relative", "HOME": "/home/ada"}) == Path(
        "/home/ada/.local/state/chatmixer/run"
    )
    assert runtime_dir({}) == Path(f"/tmp/chatmixer-{os.getuid()}/run")


def test_a_published_run_is_found_by_its_prefix_only_and_readable_by_its_user_only(tmp_path: Path) -> None:
    info = RunInfo("unix:///tmp/r/redis.sock", os.getpid(), "Night", "a/b c")
    path = publish(tmp_path / "rt", info)
    assert path == run_file(tmp_path / "rt", "a/b c") and path.parent == tmp_path / "rt"  # a safe file name
    assert (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    assert find_run(tmp_path / "rt", "a/b c") == info
    assert find_run(tmp_path / "rt", "other") is None


async def test_a_file_left_by_a_dead_run_or_unreadable_is_ignored_and_removed(tmp_path: Path) -> None:
    dead = RunInfo("unix:///tmp/gone.sock", await _dead_pid(), "", "mixer")
    path = run_file(tmp_path, "mixer")
    path.write_text(json.dumps({"url": dead.url, "pid": dead.pid, "event": "", "prefix": "mixer"}))
    assert find_run(tmp_path, "mixer") is None and not path.exists()
    path.write_text("{not json")
    assert find_run(tmp_path, "mixer") is None and not path.exists()
    assert publish(tmp_path, RunInfo("unix:///tmp/new.sock", os.getpid(), "", "mixer")) == path  # free again


def test_a_second_run_on_the_same_prefix_leaves_the_first_ones_file_alone(tmp_path: Path) -> None:
    first = RunInfo("unix:///tmp/first.sock", os.getpid(), "", "mixer")
    path = publish(tmp_path, first)
    assert path is not None
    with published(tmp_path, RunInfo("unix:///tmp/second.sock", os.getppid(), "", "mixer")) as second:
        assert second is None
    assert find_run(tmp_path, "mixer") == first  # the second's exit did not remove it
    withdraw(path, os.getppid())
    assert path.exists()
    withdraw(path, os.getpid())
    assert not path.exists()


def test_local_addresses_are_ipv4_and_never_loopback() -> None:
    for address in local_addresses():
        assert address.count(".") == 3 and not address.startswith("127.")


def test_a_redis_url_redis_py_cannot_use_is_named() -> None:
    assert redis_url_problem("redis://127.0.0.1:6379/0") is None
    assert redis_url_problem("unix:///run/redis.sock") is None
    assert "is not a redis://" in (redis_url_problem("http://127.0.0.1:6379") or "")
    problem = redis_url_problem("redis://:s3cret@db.example:port/0")
    assert problem == (
        "'redis://***@db.example:port/0' has a bad option: Port could not be cast to integer value as 'port'"
    )


async def test_an_unreachable_redis_is_said_in_one_line_without_its_password() -> None:
    problem = await redis_problem("redis://:s3cret@127.0.0.1:1/0")
    assert problem is not None and problem.startswith("cannot reach Redis at redis://***@127.0.0.1:1/0: ")
    assert "s3cret" not in problem and "\n" not in problem


class _AskedAgain(logging.Handler):
    """Sets ``event`` when ``redis_problem`` logs that it was refused and will ask again."""

    def __init__(self) -> None:
        super().__init__()
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "asking again" in record.getMessage():
            self.event.set()


@pytest.fixture
def refusals() -> Iterator[asyncio.Event]:
    """Set when ``redis_problem`` says it was refused and will ask again."""
    handler = _AskedAgain()
    logger = logging.getLogger("mixer.runtime")
    logger.addHandler(handler)
    try:
        yield handler.event
    finally:
        logger.removeHandler(handler)


async def test_a_redis_that_starts_while_it_is_waited_for_is_used(refusals: asyncio.Event, tmp_path: Path) -> None:
    port = free_port()
    waiting = asyncio.create_task(redis_problem(f"redis://127.0.0.1:{port}/0", wait=60))
    asked_again = asyncio.create_task(refusals.wait())
    await asyncio.wait([waiting, asked_again], return_when=asyncio.FIRST_COMPLETED)
    assert refusals.is_set(), f"gave up at once: {waiting.result()}"  # refused once: nothing listens yet
    server = await asyncio.create_subprocess_exec(
        redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(tmp_path), stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert await waiting is None
    finally:
        server.terminate()
        await server.wait()


async def test_without_a_wait_an_unreachable_redis_is_tried_once(refusals: asyncio.Event) -> None:
    assert (await redis_problem(f"redis://127.0.0.1:{free_port()}/0", wait=0) or "").startswith("cannot reach Redis")
    assert not refusals.is_set()
