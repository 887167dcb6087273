"""Running `mixer` subcommands as real processes, for tests that kill and restart them."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from typing import IO

from mixer.keys import Keys


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mixer_env(redis_url: str | None, keys: Keys, chats: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIXER_")}
    env.update({"MIXER_REDIS_PREFIX": keys.prefix, "MIXER_CHATS": chats, "PYTHONUNBUFFERED": "1"})
    if redis_url:
        env["MIXER_REDIS_URL"] = redis_url
    env.update(extra)
    return env


async def start_mixer(
    *args: str, env: Mapping[str, str], log: IO[bytes] | None = None, preexec: Callable[[], None] | None = None
) -> asyncio.subprocess.Process:
    """`python -m mixer.cli ARGS`, stderr merged into stdout, which goes to ``log`` or a pipe; ``preexec`` runs in
    the child before it starts (``die_with_parent()``)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mixer.cli",
        *args,
        env=dict(env),
        stdout=log if log is not None else asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        preexec_fn=preexec,
    )


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGKILL the child when the test process dies (a test killed by its timeout
    leaves no process behind); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork: no dlopen in the child
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect: no signal will come
            os._exit(1)

    return preexec


async def read_until(proc: asyncio.subprocess.Process, marker: str, timeout: float = 20) -> list[str]:
    """Lines of the process's output up to and including the first containing ``marker``."""
    assert proc.stdout is not None
    lines: list[str] = []

    async def scan() -> None:
        while True:
            raw = await proc.stdout.readline()  # type: ignore[union-attr]
            if not raw:
                raise AssertionError(f"process ended before {marker!r}:\n" + "".join(lines))
            lines.append(raw.decode(errors="replace"))
            if marker in lines[-1]:
                return

    await asyncio.wait_for(scan(), timeout)
    return lines
