"""`mixer serve --workers N`: the sibling fan-out processes, started, kept at N, and stopped.

``spawn_workers`` starts siblings running `mixer serve` (fan-out only, on a shared port), each dying with the
process that started it; ``watch_workers`` starts another in place of one that ended, at once when it had run
steadily, else after a capped backoff, saying in one ERROR line which pid ended and how; ``stop_workers`` ends them
(SIGTERM, then SIGKILL after a grace). The processes share one stderr, so their log lines carry the writer's pid
(``PID_LOG_LAYOUT``). What lives elsewhere: parsing ``--workers`` and setting up the log (``cli``), and running
this watch beside the fan-out server (``runner``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from mixer.backoff import Backoff

log = logging.getLogger(__name__)

# `serve --workers` processes share one stderr: each line says which process wrote it
PID_LOG_LAYOUT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
STEADY_SECONDS = 10.0  # a worker that lived this long ended by an accident, not by failing to start


def spawn_workers(argv: list[str], count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` sibling fan-out processes running ``mixer serve`` with ``argv`` (fan-out only, shared port);
    each dies with this process (PR_SET_PDEATHSIG on Linux)."""
    from mixer.embedded import _die_with_parent

    children = []
    for _ in range(count):
        args = [sys.executable, "-m", "mixer", "serve", *argv, "--no-merge", "--workers", "1", "--reuse-port"]
        children.append(subprocess.Popen(args, preexec_fn=_die_with_parent()))
    return children


async def watch_workers(
    children: list[subprocess.Popen[bytes]],
    respawn: Callable[[], subprocess.Popen[bytes]],
    every: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    backoff: Backoff | None = None,
) -> None:
    """Start another sibling fan-out process in place of one that ended (killed, crashed, out of memory), as
    gunicorn's arbiter does: the others' clients stay connected, the dead one's reconnect to them meanwhile. Each
    ending is one ERROR line naming the pid and how it ended. A worker that lived under ``STEADY_SECONDS`` is
    replaced after a capped backoff (1 s doubling to 30 s), so one that cannot start does not spin."""
    backoff = backoff or Backoff(base=1.0, cap=30.0)
    started = [clock()] * len(children)
    while True:
        for index, child in enumerate(children):
            if (code := child.poll()) is None:
                continue
            how = f"killed by {_signal_name(-code)}" if code < 0 else f"exit status {code}"
            if clock() - started[index] >= STEADY_SECONDS:
                backoff.reset()
                wait = 0.0
            else:
                wait = backoff.next()
            log.error("fan-out worker pid %d ended (%s); starting another in %.1f s", child.pid, how, wait)
            await asyncio.sleep(wait)
            children[index] = respawn()
            started[index] = clock()
            log.info("fan-out worker pid %d started in place of pid %d", children[index].pid, child.pid)
        await asyncio.sleep(every)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal has no name
        return f"signal {number}"


def stop_workers(children: list[subprocess.Popen[bytes]], grace: float = 10.0) -> None:
    """Ask every worker to stop (SIGTERM), then kill any still running ``grace`` seconds later; returns once all
    have ended."""
    for child in children:
        child.terminate()
    for child in children:
        try:
            child.wait(grace)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
