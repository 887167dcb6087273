"""The compose stack checked as a user sees it, on podman (run by scripts/test-deploy; not part of pytest's suite).

Brings docker-compose.yml up with podman-compose under a project of its own (plus tests/deploy/compose.test.yml,
which publishes Redis on loopback so the feed can be compared with what ingest published), then checks in order:
the wall on both published ports; posts on /ws from both fan-out replicas, with the same ids as the feed; every
container's healthcheck; the leading merge container killed: the standby takes over, nothing lost or twice; the
Redis container restarted: every role recovers by itself, nothing lost or twice, the screens gap-free; `down`
leaves no container or network, and of the volumes only the persistent `redis-data` (removed afterwards). Prints
one line per check and the figures (start-to-first-post, takeover, recovery seconds); exit 1 on the first failure,
after `down -v` and the containers' last log lines. podman here runs no healthcheck timers (they need systemd), so
the check runs each container's healthcheck itself (`podman healthcheck run`), as the timer would.

    python -m tests.deploy.check_stack --compose .venv-deploy/bin/podman-compose   (images from $MIXER_IMAGE...)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import PIPE, STDOUT

import aiohttp
import redis.asyncio as aioredis

from mixer import health
from mixer.keys import Keys
from tests.chaos.ledger import Ledger, Screen
from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
KEYS = Keys()  # the stack runs with the default prefix


class CheckFailed(Exception):
    """One check did not hold: the message says which and what was seen."""


@dataclass
class Stack:
    """One compose project on podman: its podman-compose command line, ports, and the containers it made."""

    compose: str
    project: str
    web_ports: tuple[int, int] = field(default_factory=lambda: (free_port(), free_port()))
    redis_port: int = field(default_factory=free_port)
    figures: dict[str, float] = field(default_factory=dict)
    unhealthy: str = ""  # the last failed healthcheck: container and output

    @property
    def env(self) -> dict[str, str]:
        ports = {"MIXER_PORT": self.web_ports[0], "MIXER_PORT_2": self.web_ports[1], "TEST_REDIS_PORT": self.redis_port}
        return os.environ | {name: str(port) for name, port in ports.items()}

    async def run_compose(self, *args: str) -> None:
        files = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(ROOT / "tests/deploy/compose.test.yml")]
        proc = await asyncio.create_subprocess_exec(
            self.compose, "-p", self.project, *files, *args, env=self.env, stdout=PIPE, stderr=STDOUT
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise CheckFailed(f"podman-compose {' '.join(args)} failed:\n{out.decode()[-2000:]}")

    async def containers(self, service: str | None = None) -> list[str]:
        """Names of the project's containers (of one service), running or not."""
        filters = ["--filter", f"label=io.podman.compose.project={self.project}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        return (await podman("ps", "-a", *filters, "--format", "{{.Names}}")).split()

    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.web_ports]


async def podman(*args: str, check: bool = True) -> str:
    """`podman ARGS`'s output; CheckFailed if it fails (unless not ``check``)."""
    proc = await asyncio.create_subprocess_exec("podman", *args, stdout=PIPE, stderr=PIPE)
    out, err = await proc.communicate()
    if check and proc.returncode != 0:
        raise CheckFailed(f"podman {' '.join(args)}: {err.decode().strip()}")
    return out.decode()


async def hostname(container: str) -> str:
    return (await podman("inspect", "--format", "{{.Config.Hostname}}", container)).strip()


async def running(container: str) -> bool:
    return (await podman("inspect", "--format", "{{.State.Running}}", container)).strip() == "true"


def ok(line: str) -> None:
    print(f"test-deploy: ok  {line}", flush=True)


async def until(what: str, check: Callable[[], Awaitable[bool]], timeout: float, why: Stack | None = None) -> float:
    """Seconds until ``check`` holds (polled every 0.2 s: containers and HTTP offer nothing to await)."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise CheckFailed(f"{what}: not within {timeout:.0f} s" + (f" ({why.unhealthy})" if why else ""))
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def http_status(url: str) -> tuple[int, str]:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http, http.get(url) as resp:
            return resp.status, await resp.text()
    except (aiohttp.ClientError, TimeoutError):
        return 0, ""


async def all_healthy(stack: Stack) -> bool:
    """Every container's healthcheck passes now (`podman healthcheck run`: what podman's timer would run)."""
    names = await stack.containers()
    for name in names:
        proc = await asyncio.create_subprocess_exec("podman", "healthcheck", "run", name, stdout=PIPE, stderr=STDOUT)
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            stack.unhealthy = f"{name}: {out.decode().strip()[-300:]}"
            return False
    return bool(names)


async def check_wall_and_screens(stack: Stack, started: float) -> list[Screen]:
    for url in stack.urls():
        await until(f"the wall at {url}", lambda u=url: _is_wall(u), timeout=180)  # type: ignore[misc]
    ok(f"the wall answers on both published ports {stack.web_ports} (HTTP 200, chatmixer wall)")
    # one screen per fan-out replica, each from the start of the feed, never moved to the other replica
    screens = [Screen(f"screen{i}", [url], since="0-0") for i, url in enumerate(stack.urls(), 1)]
    for screen in screens:
        screen.start()
    await until("a post on /ws of both replicas", lambda: _all_have_posts(screens), timeout=120)
    stack.figures["start-to-first-post s"] = time.monotonic() - started
    ok(f"posts on /ws from both replicas, {stack.figures['start-to-first-post s']:.1f} s after `up`")
    return screens


async def _is_wall(url: str) -> bool:
    status, body = await http_status(url + "/")
    return status == 200 and "<title>chatmixer wall</title>" in body


async def _all_have_posts(screens: list[Screen]) -> bool:
    return all(screen.segments[-1] for screen in screens)


async def check_takeover(stack: Stack, redis: aioredis.Redis, ledger: Ledger) -> None:
    merges = {await hostname(name): name for name in await stack.containers("merge")}
    holder = (await redis.get(KEYS.merge_lease) or b"").decode().split(":")[0]
    if holder not in merges or len(merges) != 2:
        raise CheckFailed(f"expected 2 merge containers, one leading; lease {holder!r}, containers {merges}")
    [standby] = set(merges) - {holder}
    await ledger.read()
    killed_at = time.monotonic()
    # SIGKILL, as a crash: no graceful release of the lease. `podman kill` rather than a kill from the host, because
    # the restart policy leaves a container podman killed stopped: else it comes back within a second and may win the
    # lease before the standby (both retry every second), and the check is of the standby
    await podman("kill", merges[holder])
    after = await ledger.newest_feed_id()  # the killed leader writes nothing more: any newer entry is the standby's

    async def standby_leads() -> bool:
        return (await redis.get(KEYS.merge_lease) or b"").decode().split(":")[0] == standby

    await until("the standby taking the merge lease", standby_leads, timeout=60)
    stack.figures["lease taken s"] = time.monotonic() - killed_at
    if await ledger.wait_feed_after(after, timeout=60) is None:
        raise CheckFailed("the feed did not advance after the leading merge container was killed")
    stack.figures["takeover s"] = time.monotonic() - killed_at
    await settle(ledger, "merge takeover")
    await podman("start", merges[holder])
    await until(f"{merges[holder]} running again", lambda: running(merges[holder]), timeout=60)
    ok(
        f"leading merge {merges[holder]} killed: the standby leads after {stack.figures['lease taken s']:.1f} s, "
        f"the feed advances after {stack.figures['takeover s']:.1f} s, nothing lost or twice ({len(ledger.cards)} "
        "posts); the killed one started again"
    )


async def settle(ledger: Ledger, after: str) -> None:
    lost = await ledger.settle(timeout=60)
    if lost or ledger.twice():
        raise CheckFailed(f"after the {after}: lost {lost[:10]} ({len(lost)}), twice {ledger.twice()[:10]}")


async def check_redis_restart(stack: Stack, redis: aioredis.Redis, ledger: Ledger) -> None:
    [name] = await stack.containers("redis")
    before = await ledger.newest_feed_id()
    feed_len = await redis.xlen(KEYS.feed)
    beating = [
        (role, await hostname(c))
        for role in ("ingest", "merge")
        for c in await stack.containers(role)
        if await running(c)
    ]
    restarted_at = time.monotonic()
    await podman("restart", name)

    async def recovered() -> bool:
        since = time.monotonic() - restarted_at
        with contextlib.suppress(aioredis.RedisError, OSError):
            for url in stack.urls():
                if (await http_status(url + "/readyz"))[0] != 200:
                    return False
            for role, host in beating:  # each beat again since the restart: younger than the restart
                if (health.TTL * 1000 - await redis.pttl(KEYS.health(role, host))) / 1000 > since:
                    return False
            return await ledger.wait_feed_after(before, timeout=1) is not None
        return False

    await until("every role recovering from the Redis restart", recovered, timeout=120)
    stack.figures["redis restart recovered s"] = time.monotonic() - restarted_at
    if await redis.xlen(KEYS.feed) < feed_len:
        raise CheckFailed("the feed lost entries over the Redis restart (the append-only file should keep them)")
    await until("every container healthy after the Redis restart", lambda: all_healthy(stack), timeout=60, why=stack)
    await settle(ledger, "Redis restart")
    ok(
        f"Redis restarted: feed kept, every role back by itself in {stack.figures['redis restart recovered s']:.1f} s "
        f"(fan-out ready, ingest and merge beating, feed advancing), nothing lost or twice"
    )


async def check_screens(screens: list[Screen], ledger: Ledger) -> None:
    await ledger.read()
    cards = ledger.card_ids
    for screen in screens:
        received = [i for segment in screen.segments for i in segment]
        if screen.resets or screen.repeats or received != cards[: len(received)]:
            raise CheckFailed(
                f"{screen.name}: {len(received)} posts, resets {screen.resets}, repeats {screen.repeats}; "
                f"not the feed's ids in order (first difference near {_first_difference(received, cards)})"
            )
    shortest = min(len([i for s in screen.segments for i in s]) for screen in screens)
    ok(f"both replicas' screens got the feed's ids in order, gap-free through both faults ({shortest}+ posts each)")


def _first_difference(a: list[str], b: list[str]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


async def check_down(stack: Stack) -> None:
    await stack.run_compose("down")
    left = await stack.containers()
    networks = [
        n for n in (await podman("network", "ls", "--format", "{{.Name}}")).split() if n.startswith(stack.project)
    ]
    volumes = [
        v for v in (await podman("volume", "ls", "--format", "{{.Name}}")).split() if v.startswith(stack.project)
    ]
    if left or networks or volumes != [f"{stack.project}_redis-data"]:
        raise CheckFailed(f"`down` left containers {left}, networks {networks}, volumes {volumes}")
    await podman("volume", "rm", f"{stack.project}_redis-data")
    ok("`down` left no container or network; only the persistent volume redis-data (then removed)")


async def check(stack: Stack) -> None:
    with contextlib.suppress(CheckFailed):  # what an interrupted earlier run may have left
        await stack.run_compose("down", "-v")
    started = time.monotonic()
    await stack.run_compose("up", "-d")
    ok(f"`up -d`: {len(await stack.containers())} containers ({time.monotonic() - started:.1f} s)")
    screens = await check_wall_and_screens(stack, started)
    await until("every container healthy", lambda: all_healthy(stack), timeout=90, why=stack)
    ok("every container's healthcheck passes (redis-cli ping, mixer ingest/merge --check, /readyz)")
    redis = aioredis.Redis(port=stack.redis_port)
    try:
        chats = tuple(sorted([k.decode().rsplit(":", 1)[1] async for k in redis.scan_iter(match=KEYS.chat("*"))]))
        ledger = Ledger(redis, KEYS, chats)
        await check_takeover(stack, redis, ledger)
        await check_redis_restart(stack, redis, ledger)
        await check_screens(screens, ledger)
        restarts = [
            f"{n}: {(await podman('inspect', '--format', '{{.RestartCount}}', n)).strip()}"
            for n in await stack.containers()
        ]
        print(f"test-deploy: restarts by policy: {', '.join(restarts)}", flush=True)
    finally:
        for screen in screens:
            await screen.stop()
        await redis.aclose()
    await check_down(stack)


async def tear_down(stack: Stack) -> None:
    """After a failure: each container's last log lines on stderr, then `down -v`."""
    for name in await stack.containers():
        proc = await asyncio.create_subprocess_exec("podman", "logs", "--tail", "8", name, stdout=PIPE, stderr=STDOUT)
        print(f"--- {name}\n{(await proc.communicate())[0].decode()}", file=sys.stderr)
    with contextlib.suppress(CheckFailed):
        await stack.run_compose("down", "-v")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compose", default="podman-compose", help="the podman-compose command")
    parser.add_argument("--project", default="chatmixer-test-deploy", help="compose project name")
    parser.add_argument("--figures", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args()
    stack = Stack(args.compose, args.project)
    try:
        asyncio.run(check(stack))
    except BaseException as exc:  # a failed check, a bug here, Ctrl-C: never leave the stack running
        print(f"test-deploy: FAILED {exc}", file=sys.stderr)
        asyncio.run(tear_down(stack))
        if not isinstance(exc, CheckFailed):
            raise
        return 1
    for name, value in stack.figures.items():
        print(f"test-deploy: figure  {name}: {value:.1f}")
    if args.figures:
        args.figures.write_text(json.dumps(stack.figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
