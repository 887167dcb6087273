"""Where the embedded Redis keeps a night: the per-event state dir, the lock that gives it to one `mixer run`,
moving a night aside (``--fresh``), and watching that Redis can still write.

``default_state_dir`` names the dir (``$XDG_STATE_HOME/chatmixer/<event>``, else
``~/.local/state/chatmixer/<event>``) from an environment the caller passes in. ``open_night`` checks the dir
can hold a night (exists or is made, writable, room on its disk), takes its lock (an exclusive ``flock`` on
``DIR/lock``, which holds the run's pid; the kernel lets go of it when the process dies, so a killed run's lock
is simply taken over) and with ``fresh`` moves the night there aside. The lock's file descriptor is meant to be
inherited by the redis-server child too: then the dir stays locked until both have exited, and a new run can
never start a second Redis on the files of one still shutting down. ``watch_writes`` polls ``INFO persistence``
and logs when Redis stops (or starts again) being able to write its append-only file. Every problem with the
dir is a ``StateDirProblem``: one line for the user. Starting Redis is ``embedded``; choosing it, the runner's.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import shutil
import tempfile
import time
import unicodedata
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from redis.exceptions import RedisError

from mixer import connect
from mixer.embedded import pid_alive

log = logging.getLogger(__name__)

LOCK_NAME = "lock"  # "<mixer pid> <redis-server pid>" while a run holds the night; empty after a clean stop
MIN_FREE_BYTES = 32 * 1024 * 1024  # below this a night (about 1.1 KB on disk a post) cannot get far
_RESERVED = {"run"}  # runtime.runtime_dir uses $XDG_STATE_HOME/chatmixer/run without $XDG_RUNTIME_DIR


class StateDirProblem(Exception):
    """The state dir cannot hold a night (unwritable, full, locked by another run): one line for the user."""


def event_slug(name: str, hashtag: str = "") -> str:
    """The event's name as a dir name: lower-case ASCII letters and digits joined by '-' ('#chatmixer night'
    gives 'chatmixer-night'); the hashtag, else 'chatmixer', when the name has no letter or digit."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:64].strip("-")
    slug = slug or re.sub(r"[^a-z0-9]+", "-", hashtag.lower()).strip("-") or "chatmixer"
    return f"event-{slug}" if slug in _RESERVED else slug


def default_state_dir(env: Mapping[str, str], slug: str) -> Path:
    """``$XDG_STATE_HOME/chatmixer/<slug>``, else ``$HOME/.local/state/chatmixer/<slug>``, else (no home at all)
    ``/tmp/chatmixer-<uid>/state/<slug>``."""
    state = env.get("XDG_STATE_HOME", "")
    if state and Path(state).is_absolute():
        return Path(state) / "chatmixer" / slug
    home = env.get("HOME", "")
    if home and Path(home).is_absolute():
        return Path(home) / ".local" / "state" / "chatmixer" / slug
    return Path("/tmp") / f"chatmixer-{os.getuid()}" / "state" / slug


class Night:
    """A state dir this process holds the lock of, until ``close``."""

    def __init__(self, directory: Path, fd: int, moved_to: Path | None, previous: int | None) -> None:
        self.directory = directory
        self.fd = fd  # the locked file: pass it to the redis-server child so the lock lasts as long as it does
        self.moved_to = moved_to  # where --fresh moved the previous night, or None
        self.previous = previous  # pid of a run that held the night and ended without stopping, or None

    def started(self, redis_pid: int) -> None:
        """Write the redis-server's pid beside ours into the lock file (what a refused second run names)."""
        with contextlib.suppress(OSError):  # only informative: the lock itself is held either way
            _write_lock(self.fd, f"{os.getpid()} {redis_pid}\n")

    def close(self) -> None:
        """Empty the lock file (this run stopped cleanly) and let go of the lock. Idempotent."""
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
        os.close(self.fd)  # the flock goes with the last descriptor (the redis-server's is closed by now)
        self.fd = -1


def open_night(directory: Path, fresh: bool = False, wait: float = 10.0) -> Night:
    """Lock ``directory`` for this run (made if missing) and return it; with ``fresh`` the night in it is first
    moved aside to ``<directory>.<date>T<time>``. StateDirProblem when the dir is not usable, has under
    MIN_FREE_BYTES free, or another live run holds it. A holder that is gone but whose redis-server is still
    shutting down is waited for, at most ``wait`` seconds."""
    _check_usable(directory)
    path = directory / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StateDirProblem(f"cannot use {directory} for the night: {exc.strerror or exc}") from None
    try:
        previous = _lock(fd, directory, wait)
        _write_lock(fd, f"{os.getpid()}\n")
        moved = _move_aside(directory) if fresh else None
    except OSError as exc:
        os.close(fd)
        raise StateDirProblem(f"cannot use {directory} for the night: {exc.strerror or exc}") from None
    except BaseException:
        os.close(fd)
        raise
    return Night(directory, fd, moved, previous)


def _check_usable(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # a real write, not os.access: it also catches a read-only mount, a full disk and root-squashed shares
        with tempfile.TemporaryFile(dir=directory) as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
        usage = shutil.disk_usage(directory)
    except OSError as exc:
        raise StateDirProblem(f"cannot use {directory} for the night: {exc.strerror or exc}") from None
    if usage.free < MIN_FREE_BYTES:
        raise StateDirProblem(
            f"only {usage.free / 1e6:.1f} MB free on the disk of {directory}: a night needs room to grow "
            f"(at least {MIN_FREE_BYTES // 2**20} MB); free some space, or give --state-dir on another disk"
        )


def _lock(fd: int, directory: Path, wait: float) -> int | None:
    """Take the flock; the pid of a previous holder that ended without stopping (its pid left in the file)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            pids = _read_lock(fd)
            run_pid, redis_pid = [*pids, 0, 0][:2]
            if pid_alive(run_pid) or time.monotonic() > deadline:
                who = f"another mixer run (pid {run_pid})" if pid_alive(run_pid) else (
                    f"the redis-server (pid {redis_pid}) of a mixer run (pid {run_pid}) that is gone"
                )  # fmt: skip
                raise StateDirProblem(
                    f"the night in {directory} is in use by {who}: stop it first, or give another --state-dir "
                    "(or --ephemeral)"
                ) from None
            time.sleep(0.05)  # its holder died; its redis-server is finishing its shutdown
    pids = _read_lock(fd)
    return pids[0] if pids and pids[0] != os.getpid() else None


def _read_lock(fd: int) -> list[int]:
    try:
        return [int(field) for field in os.pread(fd, 64, 0).split()]
    except (OSError, ValueError):
        return []


def _write_lock(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode(), 0)


def _move_aside(directory: Path) -> Path | None:
    """Move everything but the lock into a new sibling dir named with the time; None when there was nothing."""
    entries = [entry for entry in directory.iterdir() if entry.name != LOCK_NAME]
    if not entries:
        return None
    stamp = datetime.now().strftime("%Y-%m-%dT%H%M%S")
    for attempt in range(1, 100):
        target = directory.with_name(f"{directory.name}.{stamp}" + (f"-{attempt}" if attempt > 1 else ""))
        try:
            target.mkdir(mode=0o700)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"no free name beside {directory} to move the night to")
    for entry in entries:
        entry.rename(target / entry.name)  # same filesystem: each move is a rename, nothing is copied or lost
    return target


def night_lines(night: Night) -> list[str]:
    """What `mixer run` prints before its Redis loads the night: where it is kept, and what became of the last."""
    hint = "(--fresh starts a new one, --ephemeral keeps nothing)"
    lines = [f"mixer run: the night is kept in {night.directory}  {hint}"]
    if night.moved_to is not None:
        lines.append(f"mixer run: --fresh: the previous night was moved to {night.moved_to}")
    elif night.previous is not None:
        lines.append(f"mixer run: the last run on this night (pid {night.previous}) did not stop; taking over its lock")
    return lines


async def resumed_line(url: str, feed: str) -> str | None:
    """What `mixer run` prints once its Redis has loaded a night that already has posts: how many."""
    redis = connect.client(url, feed, socket_timeout=5)
    try:
        posts = int(await redis.xlen(feed))
    except (RedisError, OSError):
        return None
    finally:
        await redis.aclose()
    return f"mixer run: resuming the night: {posts} entries in the feed" if posts else None


def write_problem(info: Mapping[str, object], directory: Path) -> str | None:
    """Why Redis (its ``INFO persistence`` as ``info``) cannot keep what it is given, or None when it can."""
    failed = [name for name in ("aof_last_write_status", "rdb_last_bgsave_status") if info.get(name, "ok") != "ok"]
    if not failed:
        return None
    try:
        free = f"{shutil.disk_usage(directory).free / 1e6:.1f} MB free"
    except OSError as exc:
        free = f"{exc.strerror or exc}"
    return (
        f"Redis cannot write the night to {directory} ({', '.join(f'{name}: {info[name]}' for name in failed)}; "
        f"{free}): new posts are refused until it can; the feed so far is kept"
    )


async def watch_writes(url: str, directory: Path, every: float = 3.0) -> None:
    """Until cancelled, log a WARNING when Redis stops being able to write the night to disk and an INFO when it
    can again (``INFO persistence`` every ``every`` seconds); a Redis that does not answer is the runner's
    business, not this loop's."""
    redis = connect.client(url, socket_timeout=5)
    problem: str | None = None
    try:
        while True:
            try:
                info = await redis.info("persistence")
            except (RedisError, OSError):
                info = None
            if info is not None:
                now = write_problem(info, directory)
                if now is not None and problem is None:
                    log.warning("%s", now)
                elif now is None and problem is not None:
                    log.info("Redis writes the night to %s again", directory)
                problem = now
            await asyncio.sleep(every)
    finally:
        await redis.aclose()
