"""Real Redis topologies on loopback for the Cluster and Sentinel tests: started, failed over, torn down.

``RedisCluster``: 6 ``redis-server --cluster-enabled yes`` nodes joined by ``redis-cli --cluster create
--cluster-replicas 1`` (3 masters, 3 replicas), node timeout 1 s so a dead master's replica takes over in a few
seconds. ``SentinelGroup``: a primary, its replica and 3 sentinels (quorum 2, down after 1 s). Both run as plain
processes in a temp dir (no persistence), started and stopped synchronously so a module-scoped fixture can hold
them; ``kill_master`` is ``kill -9`` and returns once the replica has been promoted. Nothing here is a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

from mixer import connect
from mixer.embedded import redis_binary
from mixer.keys import Keys
from mixer.streams import id_key, last_id
from tests.chaos.deploy import CHATS, Deployment
from tests.chaos.ledger import Ledger, Screen
from tests.processes import free_port

NODE_TIMEOUT_MS = 1000  # cluster-node-timeout and sentinel down-after-milliseconds


def _wait(check: Callable[[], bool], what: str, timeout: float = 30) -> float:
    """Seconds until ``check`` holds (polled: a topology change offers nothing to await); AssertionError after
    ``timeout``."""
    started = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - started
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not after {timeout} s")
        time.sleep(0.05)


def _client(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=1)


def _synced(port: int) -> bool:
    """Whether the server on ``port`` is a master, or a replica whose link to its master is up (synced)."""
    info = _client(port).info("replication")
    return info["role"] == "master" or info.get("master_link_status") == "up"


class _Processes:
    def __init__(self, name: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"mixer-{name}-"))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}  # port -> its process

    def spawn(self, port: int, *args: str, sentinel: bool = False) -> None:
        base = ("--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.dir))
        if not sentinel:  # no persistence; a replica syncs at once (the default waits 5 s for more replicas)
            base += ("--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0")
        self.procs[port] = subprocess.Popen(
            [redis_binary(), *args, *base, "--logfile", f"{port}.log", "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait(lambda: bool(_client(port).ping()), f"redis-server on {port}", 10)

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait()

    def close(self) -> None:
        for port in list(self.procs):
            self.kill(port)
        shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in self.dir.glob("*.log"))


class RedisCluster(_Processes):
    """3 masters and 3 replicas on free loopback ports; ``url`` names the masters as seeds."""

    def __init__(self) -> None:
        super().__init__("cluster")
        self.ports = [free_port() for _ in range(6)]

    def start(self) -> RedisCluster:
        for port in self.ports:
            self.spawn(
                port,
                "--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                "--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                # CLUSTER SLOTS lists a replica only once its replication offset is past 0, which on an idle master
                # takes its first ping to the replicas: every 10 s by default, ~9 s of a 10.5 s start-up
                "--repl-ping-replica-period", "1",
            )  # fmt: skip
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        _wait(self._settled, "cluster state ok on every node with 3 masters and 3 replicas")
        return self

    def _settled(self) -> bool:
        for port in self.ports:
            info = _client(port).execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text or "cluster_known_nodes:6" not in text:
                return False
        if not all(len(self.slots(port)) == 3 and all(len(s) == 4 for s in self.slots(port)) for port in self.ports):
            return False
        return all(_synced(port) for port in self.ports)

    def slots(self, port: int | None = None) -> list[Any]:
        """CLUSTER SLOTS as one live node sees it."""
        for candidate in [port] if port else list(self.procs):
            try:
                return list(_client(candidate).execute_command("CLUSTER", "SLOTS"))
            except (redis.RedisError, OSError):
                continue
        raise AssertionError("no cluster node answers")

    def master_of(self, key: str) -> int:
        """The port of the master that owns ``key``'s slot."""
        slot = int(_client(next(iter(self.procs))).execute_command("CLUSTER", "KEYSLOT", key))
        for start, end, master, *_ in self.slots():
            if int(start) <= slot <= int(end):
                return int(master[1])
        raise AssertionError(f"no master for slot {slot}")

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def kill_master(self, key: str) -> tuple[int, int, float]:
        """``kill -9`` the master owning ``key``'s slot; returns (old port, new master's port, seconds until the
        surviving nodes name the promoted replica as the slot's master)."""
        old = self.master_of(key)
        self.kill(old)
        took = _wait(lambda: self.master_of(key) != old, f"a replica promoted in place of {old}")
        return old, self.master_of(key), took


class SentinelGroup(_Processes):
    """A primary, one replica and 3 sentinels (quorum 2) watching it as ``mymaster``."""

    NAME = "mymaster"

    def __init__(self) -> None:
        super().__init__("sentinel")
        self.primary, self.replica = free_port(), free_port()
        self.sentinels = [free_port() for _ in range(3)]

    def start(self) -> SentinelGroup:
        self.spawn(self.primary)
        self.spawn(self.replica, "--replicaof", "127.0.0.1", str(self.primary))
        for port in self.sentinels:
            conf = self.dir / f"sentinel-{port}.conf"  # sentinel rewrites its own config as the topology changes
            conf.write_text(
                f"sentinel monitor {self.NAME} 127.0.0.1 {self.primary} 2\n"
                f"sentinel down-after-milliseconds {self.NAME} {NODE_TIMEOUT_MS}\n"
                f"sentinel failover-timeout {self.NAME} 3000\n"
                f"sentinel parallel-syncs {self.NAME} 1\n"
            )
            self.spawn(port, str(conf), "--sentinel", sentinel=True)
        _wait(self._settled, "every sentinel knowing the replica and the other two sentinels")
        return self

    def _settled(self) -> bool:
        if not _synced(self.replica):
            return False
        for port in self.sentinels:
            client = _client(port)
            if len(client.execute_command("SENTINEL", "REPLICAS", self.NAME)) != 1:
                return False
            if len(client.execute_command("SENTINEL", "SENTINELS", self.NAME)) != 2:
                return False
        return True

    def master(self) -> int:
        """The master's port as the first sentinel that answers names it."""
        for port in self.sentinels:
            try:
                return int(_client(port).execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.NAME)[1])
            except (redis.RedisError, OSError):
                continue
        raise AssertionError("no sentinel answers")

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{port}" for port in self.sentinels) + f"/{self.NAME}"

    def kill_master(self) -> tuple[int, int, float]:
        """``kill -9`` the primary; returns (old port, new master's port, seconds until sentinels name it)."""
        old = self.master()
        self.kill(old)
        took = _wait(lambda: self.master() != old, f"sentinels promoting a replica in place of {old}")
        return old, self.master(), took


class _Running:
    """Stands in for the fault suite's own redis-server: the topology is already up (``url``)."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


@dataclass
class Failover:
    """What one master failover did to a running deployment (seconds from the kill)."""

    promoted_s: float  # until the topology named the promoted replica
    ingest_s: float  # until a chat stream had an entry newer than any before the kill
    merge_s: float  # until the feed had one
    screens_s: list[float]  # until each screen had received one
    lost: list[str]  # input keys missing from the feed, or skipped by ingest
    twice: list[str]  # post keys with two cards in the feed
    gaps: list[int]  # feed cards each screen should have had and did not (outside a reset)
    resets: list[int]
    unkept: list[int]  # ids each screen was sent that the feed no longer holds (written, then lost)
    deaths: list[str]  # roles that exited by themselves

    def line(self, topology: str) -> str:
        return (
            f"{topology}: promoted {self.promoted_s:.1f} s after the kill; ingest resumed {self.ingest_s:.1f} s, "
            f"merge {self.merge_s:.1f} s, screens {', '.join(f'{s:.1f}' for s in self.screens_s)} s; "
            f"lost {len(self.lost)}, twice {len(self.twice)}, screen gaps {self.gaps}, resets {self.resets}, "
            f"shown then lost {self.unkept}, deaths {self.deaths}"
        )


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> float:
    started = time.monotonic()
    while not await _quietly(check):  # a topology settling offers nothing to await
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not after {timeout} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def _quietly(check: Callable[[], Awaitable[bool]]) -> bool:
    try:
        return await check()
    except (aioredis.ConnectionError, aioredis.TimeoutError, OSError):
        return False  # the failover is under way: ask again


Kill = Callable[[], tuple[int, int, float]]  # fails the master over: (old port, new port, seconds until promoted)


async def through_failover(directory: Path, url: str, prefix: str, kill: Kill) -> Failover:
    """The fault suite's split deployment (ingest replaying, two merges, two fan-out replicas, two websocket
    screens) on ``url``; once posts flow, ``kill`` fails the master over; then everything is measured."""
    dep = Deployment(directory)
    dep.redis = _Running(url)  # type: ignore[assignment]
    dep.keys = Keys(prefix)
    redis = connect.client(url, dep.keys.feed, socket_timeout=5, socket_connect_timeout=2)
    ledger = Ledger(redis, dep.keys, CHATS)
    try:
        async with dep:
            ledger.recording = dep.recording_keys()
            assert await ledger.wait_feed_after("0-0", 30) is not None, dep.deaths()
            start = await ledger.newest_feed_id()
            screens = [Screen(f"screen-{i}", [dep.url(s) for s in (dep.serves[::-1] if i else dep.serves)], start)
                       for i in range(2)]  # fmt: skip
            for screen in screens:
                screen.start()
            await _until(lambda: _async(all(s.received > 3 for s in screens)), "screens receiving posts")
            chat = dep.keys.chat(CHATS[0])
            before_chat, before_feed = await last_id(redis, chat), await ledger.newest_feed_id()
            killed = time.monotonic()
            _, _, promoted = await asyncio.get_running_loop().run_in_executor(None, kill)

            async def newer(stream: str, than: str) -> bool:
                return id_key(await last_id(redis, stream)) > id_key(than)

            await _until(lambda: newer(chat, before_chat), "ingest writing again")
            ingest = time.monotonic() - killed
            await _until(lambda: newer(dep.keys.feed, before_feed), "merge writing again")
            merge = time.monotonic() - killed
            seen: list[float] = []
            for screen in screens:
                await _until(lambda s=screen: _async(id_key(s.last) > id_key(before_feed)), f"{screen.name} resuming")
                seen.append(time.monotonic() - killed)
            lost: list[str] | None = None
            while lost is None:
                with contextlib.suppress(aioredis.ConnectionError, aioredis.TimeoutError):
                    lost = await ledger.settle(20)
            newest = id_key(ledger.card_ids[-1])
            await _until(lambda: _async(all(id_key(s.last) >= newest for s in screens)), "screens caught up")
            for screen in screens:
                await screen.stop()
            held = set(ledger.card_ids)
            return Failover(
                promoted, ingest, merge, seen, lost, ledger.twice(),
                [s.gaps(ledger.card_ids) for s in screens], [s.resets for s in screens],
                [sum(1 for seg in s.segments for i in seg if i not in held) for s in screens], dep.deaths(),
            )  # fmt: skip
    finally:
        await redis.aclose()


async def _async(value: bool) -> bool:
    return value
