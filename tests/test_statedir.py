"""The state dir of a night: its name, its lock (held by a process and the redis-server it hands it to, taken over
once both are gone), --fresh moving a night aside, and what Redis's persistence report says."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mixer.embedded import EmbeddedRedis
from mixer.statedir import LOCK_NAME, StateDirProblem, default_state_dir, event_slug, open_night, write_problem
from tests.helpers import ROOT


def test_the_event_name_becomes_a_plain_dir_name() -> None:
    assert event_slug("#chatmixer night") == "chatmixer-night"
    assert event_slug("Nuit #ÉdChat à Paris!") == "nuit-edchat-a-paris"
    assert event_slug("###", "SMBiz") == "smbiz"
    assert event_slug("", "") == "chatmixer"
    assert event_slug("Run") == "event-run"  # never the runtime files' dir beside it
    assert len(event_slug("x" * 500)) == 64


def test_the_state_dir_is_the_users_state_dir_per_event() -> None:
    assert default_state_dir({"XDG_STATE_HOME": "/srv/state", "HOME": "/home/ada"}, "n") == Path(
        "/srv/state/chatmixer/n"
    )
    assert default_state_dir({"XDG_STATE_HOME": "relative", "HOME": "/home/ada"}, "n") == Path(
        "/home/ada/.local/state/chatmixer/n"
    )
    assert default_state_dir({}, "n") == Path(f"/tmp/chatmixer-{os.getuid()}/state/n")


HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from mixer.statedir import open_night
    night = open_night(Path(sys.argv[1]))
    print("locked", flush=True)
    sys.stdin.read()  # hold until killed
    """
)


def test_a_held_night_is_refused_naming_its_holder_and_taken_over_once_it_is_killed(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        with pytest.raises(StateDirProblem, match=rf"is in use by another mixer run \(pid {holder.pid}\)"):
            open_night(tmp_path, wait=0.2)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        for pipe in (holder.stdin, holder.stdout):
            if pipe is not None:
                pipe.close()
    night = open_night(tmp_path)  # the kernel let go of the dead holder's lock
    try:
        assert night.previous == holder.pid  # it did not stop cleanly: said at start
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    finally:
        night.close()
    assert (tmp_path / LOCK_NAME).read_text() == ""  # a clean stop
    again = open_night(tmp_path)
    assert again.previous is None
    again.close()


def test_the_lock_lasts_as_long_as_the_redis_server_that_inherited_it(tmp_path: Path) -> None:
    night = open_night(tmp_path)
    server = EmbeddedRedis(data_dir=tmp_path, keep_fds=[night.fd])
    server.start()
    try:
        night.started(server.pid)
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()} {server.pid}\n"
        os.close(night.fd)  # as if this process were gone: its redis-server still holds the dir
        night.fd = -1
        with pytest.raises(StateDirProblem, match="is in use by"):
            open_night(tmp_path, wait=0.2)
    finally:
        server.stop()
    open_night(tmp_path).close()  # free once the server has exited


def test_fresh_moves_everything_but_the_lock_aside_and_deletes_nothing(tmp_path: Path) -> None:
    night_dir = tmp_path / "chatmixer-night"
    (night_dir / "appendonlydir").mkdir(parents=True)
    (night_dir / "appendonlydir" / "appendonly.aof.1.incr.aof").write_text("*1\r\n$4\r\nPING\r\n")
    night = open_night(night_dir, fresh=True)
    try:
        assert night.moved_to is not None and night.moved_to.parent == tmp_path
        assert night.moved_to.name.startswith("chatmixer-night.20")
        assert (night.moved_to / "appendonlydir" / "appendonly.aof.1.incr.aof").read_bytes().endswith(b"PING\r\n")
        assert [p.name for p in night_dir.iterdir()] == [LOCK_NAME]
    finally:
        night.close()
    empty = open_night(night_dir, fresh=True)  # nothing to move: nothing moved, no empty dir made
    assert empty.moved_to is None
    empty.close()
    assert len(list(tmp_path.iterdir())) == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only dirs")
def test_an_unwritable_state_dir_is_refused(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(StateDirProblem, match=r"cannot use .* for the night: Permission denied"):
            open_night(tmp_path / "night")
    finally:
        tmp_path.chmod(0o700)


def test_redis_failing_to_write_is_said_with_the_room_left(tmp_path: Path) -> None:
    assert write_problem({"aof_enabled": 1, "aof_last_write_status": "ok"}, tmp_path) is None
    problem = write_problem({"aof_enabled": 1, "aof_last_write_status": "err"}, tmp_path)
    assert problem is not None and problem.startswith(
        f"Redis cannot write the night to {tmp_path} (aof_last_write_status: err; "
    )
    assert "MB free): new posts are refused until it can; the feed so far is kept" in problem
