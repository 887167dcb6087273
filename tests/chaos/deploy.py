"""A split chatmixer deployment as real processes on a throwaway Redis, for the fault suite.

``RedisServer`` is a `redis-server` on a free loopback port with ``--appendonly yes`` in a temporary
directory, so stopping and starting it keeps the data (as a restarted production Redis with AOF would).
``Role`` is one `mixer` process (its log in a file) under a supervisor that restarts it a second after an
exit nobody asked for, as docker compose's ``restart: unless-stopped`` does, and records the exit: a role
that dies by itself is a finding even when the restart hides it. ``Deployment`` starts them as the README's
split deployment runs: one `mixer ingest --replay` of a `mixer synth` night, two `mixer merge` (one leads,
one stands by) and two `mixer serve --no-merge` replicas. The load: 4 chats at 60 posts a minute each, replayed
6x faster, about 24 posts a second with the night's bursts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from mixer.embedded import redis_binary
from mixer.keys import Keys
from tests.processes import die_with_parent, free_port, mixer_env, start_mixer

CHATS = ("chat01", "chat02", "chat03", "chat04")
CUTOFF_S = 4.0  # [server] cutoff_seconds of the fan-out replicas
# [server] backlog_bytes of the fan-out replicas (default 1 MiB): a never-reading client is cut off once the kernel's
# ~2.8 MB send buffer (loopback, measured with `ss`) and this much are full, so a shorter history does it
BACKLOG_BYTES = 256 << 10


_SYNTHS: dict[tuple[str, ...], Path] = {}  # `mixer synth` arguments -> a file they made (Deployment.synth)


class RedisServer:
    """A redis-server with AOF in ``directory`` on a fixed free port: ``stop`` and ``start`` again keep the data."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, timeout: float = 15) -> None:
        args: tuple[str, ...] = ("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory))
        args += ("--save", "", "--appendonly", "yes", "--logfile", "redis.log", "--daemonize", "no")
        self.proc = await asyncio.create_subprocess_exec(
            redis_binary(), *args, stdout=asyncio.subprocess.DEVNULL, preexec_fn=die_with_parent()
        )
        deadline = time.monotonic() + timeout
        while not await self._answers():  # loading the AOF takes a moment; nothing to await but the port
            if self.proc.returncode is not None or time.monotonic() > deadline:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start on {self.port}:\n{log}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """SIGTERM: redis-server flushes the AOF and exits, as on a planned restart."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.wait(), 20)

    async def _answers(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        try:
            writer.write(b"PING\r\n")
            return (await asyncio.wait_for(reader.readline(), 2)).startswith(b"+PONG")
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()


@dataclass
class Role:
    """One `mixer` process, restarted by its supervisor after an unasked-for exit (recorded in ``deaths``)."""

    name: str
    args: tuple[str, ...]
    env: dict[str, str]
    log_path: Path
    port: int | None = None  # serve replicas
    proc: asyncio.subprocess.Process | None = None
    deaths: list[str] = field(default_factory=list)
    _expecting_exit: bool = False
    _closing: bool = False
    _supervisor: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = await start_mixer(*self.args, env=self.env, log=log, preexec=die_with_parent())
        self._expecting_exit = False
        self._supervisor = asyncio.create_task(self._supervise(self.proc))

    async def kill(self) -> None:
        """SIGKILL, as an OOM killer or a lost machine would; the caller restarts it."""
        await self._end(signal.SIGKILL)

    async def _end(self, how: signal.Signals) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self._expecting_exit = True
        self.proc.send_signal(how)
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
            self.deaths.append(f"{self.name} did not stop within 15 s of {how.name}: killed")

    async def _supervise(self, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        if self._expecting_exit or self._closing or proc is not self.proc:
            return
        self.deaths.append(f"{self.name} (pid {proc.pid}) exited {code}: {self.last_line()}")
        await asyncio.sleep(1)  # compose's restart policy waits too; a role that cannot start must not spin
        if not self._closing and proc is self.proc:
            await self.start()

    def last_line(self) -> str:
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        return lines[-1][:300] if lines else "(no output)"

    async def close(self) -> None:
        """SIGKILL, for good: the checks are made by then, and a graceful stop of every role took ~3 s a deployment."""
        self._closing = True
        await self.kill()
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)


class Deployment:
    """Redis, ingest, two merges and two fan-out replicas, started on entry and stopped (every process) on exit."""

    def __init__(self, directory: Path, *, speed: float = 6.0, rate: int = 60) -> None:
        self.dir = directory
        self.keys = Keys(prefix="chaos")
        self.redis = RedisServer(directory)
        self.speed, self.rate = speed, rate
        self.roles: dict[str, Role] = {}

    @property
    def serves(self) -> list[Role]:
        return [self.roles["serve-a"], self.roles["serve-b"]]

    @property
    def merges(self) -> list[Role]:
        return [self.roles["merge-1"], self.roles["merge-2"]]

    def env(self) -> dict[str, str]:
        config = self.dir / "mixer.toml"
        config.touch()  # no live sources, no demo: the replay is the only input
        # cutoff_seconds 4 (default 10): a never-reading client held 12 s must have been cut off with room to spare
        extra = {
            "MIXER_CONFIG": str(config),
            "MIXER_SERVER_CUTOFF_SECONDS": str(CUTOFF_S),
            "MIXER_SERVER_BACKLOG_BYTES": str(BACKLOG_BYTES),
        }
        return mixer_env(self.redis.url, self.keys, ",".join(CHATS), **extra)

    async def synth(self, name: str, *args: str) -> Path:
        """`mixer synth` into ``name`` in the deployment's directory (a copy when the same arguments ran before in
        this process and that file is still there: the same arguments make the same bytes)."""
        out = self.dir / name
        made = _SYNTHS.get(args)
        if made is not None and made.exists():
            shutil.copyfile(made, out)
            return out
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mixer.cli", "synth", "--chats", str(len(CHATS)), *args, "--out", str(out),
            env=self.env(), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        _SYNTHS[args] = out
        return out

    async def replay_once(self, path: Path) -> None:
        """`mixer replay FILE --speed 0`: publish a recording once, as fast as possible."""
        proc = await start_mixer("replay", str(path), "--speed", "0", env=self.env(), log=None)
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out.decode(errors="replace")[-2000:]

    async def __aenter__(self) -> Deployment:
        await self.redis.start()
        night = await self.synth("night.jsonl", "--minutes", "60", "--rate", str(self.rate), "--seed", "16")
        env = self.env()
        specs: dict[str, tuple[str, ...]] = {
            "ingest": ("ingest", "--replay", str(night), "--speed", str(self.speed)),
            "merge-1": ("merge",),
            "merge-2": ("merge",),
        }
        for name in ("serve-a", "serve-b"):
            port = free_port()
            serve = ("serve", "--no-merge", "--port", str(port))
            self.roles[name] = Role(name, serve, env, self.dir / f"{name}.log", port)
        for name, args in specs.items():
            self.roles[name] = Role(name, args, env, self.dir / f"{name}.log")
        await asyncio.gather(*(role.start() for role in self.roles.values()))
        await asyncio.gather(*(self.ready(role) for role in self.serves))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(role.close() for role in self.roles.values()), return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.redis.stop()

    def recording_keys(self) -> list[str]:
        """The keys of the night ingest replays, in file order (the order it publishes them)."""
        lines = (self.dir / "night.jsonl").read_text().splitlines()
        return [json.loads(line)["key"] for line in lines if line.strip() and not line.startswith("#")]

    def url(self, role: Role) -> str:
        return f"http://127.0.0.1:{role.port}"

    async def ready(self, role: Role, timeout: float = 30) -> float:
        """Seconds until the replica's /readyz answers 200 (polled: readiness offers nothing to await)."""
        started = time.monotonic()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
            while True:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{self.url(role)}/readyz") as resp:
                        if resp.status == 200:
                            return time.monotonic() - started
                if time.monotonic() - started > timeout:
                    raise AssertionError(f"{role.name} not ready after {timeout} s: {role.last_line()}")
                await asyncio.sleep(0.1)

    async def restart(self, role: Role) -> None:
        await role.kill()
        await role.start()

    def deaths(self) -> list[str]:
        return [death for role in self.roles.values() for death in role.deaths]


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (0 when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
