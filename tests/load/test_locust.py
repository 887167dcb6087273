"""mixer.load.locust as Locust runs it distributed: one master and two worker processes, headless on loopback,
against a real `mixer run` on the real Redis (its own key prefix), its CSV stats checked delivery for delivery.

The locustfile is never imported here: importing locust monkey-patches this process for gevent.
"""

from __future__ import annotations

import asyncio
import csv
import json
import signal
import sys
from functools import partial
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

import mixer.load
from mixer.keys import Keys
from tests.helpers import eventually
from tests.processes import die_with_parent, free_port, mixer_env, start_mixer

TOKEN = "load-test-token-0123456789"
POSTS = 20  # published by the one driver
CLIENTS = 2  # of each kind: -u 5 is the driver (fixed_count 1) and 2 + 2 by equal weights
pytestmark = pytest.mark.timeout(90)

LOCUSTFILE = str(Path(mixer.load.__file__).with_name("locust.py"))


def recorded(n: int, tag: str) -> list[dict[str, object]]:
    return [
        {
            "key": f"x:{tag}{i}",
            "source": "x",
            "chats": ["smbiz" if i % 2 else "edchat"],
            "author": {"handle": f"host{i}", "name": f"Host {i}"},
            "text": f"A{i}: answer number {i} of the night",
            "url": f"https://x.com/host{i}/status/{i}",
            "created": 1_700_000_000_000 + i * 1000,
        }
        for i in range(n)
    ]


async def locust(*args: str, log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "locust",
            "-f",
            LOCUSTFILE,
            *args,
            stdout=out,
            stderr=out,
            preexec_fn=die_with_parent(),
        )


async def ready(http: aiohttp.ClientSession, url: str) -> bool:
    """Whether the server at ``url`` answers /readyz with 200 (False while it is not listening)."""
    try:
        async with http.get(f"{url}/readyz") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


def stats(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with path.open() as f:
        return {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}


async def test_master_and_two_workers_count_every_delivery_once_with_fresh_keys(
    redis: aioredis.Redis, keys: Keys, redis_url: str, tmp_path: Path
) -> None:
    recording = tmp_path / "night.jsonl"
    records = recorded(POSTS, "n")
    recording.write_text("".join(json.dumps(r) + "\n" for r in records))
    port = free_port()
    env = mixer_env(redis_url, keys, "smbiz,edchat", MIXER_WEBHOOK_TOKEN=TOKEN)
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "server.log").open("wb") as log:
        server = await start_mixer("run", "--no-demo", "--port", str(port), env=env, log=log, preexec=die_with_parent())
    procs: list[asyncio.subprocess.Process] = []
    try:
        async with aiohttp.ClientSession() as http:

            async def feed() -> list[dict[str, object]]:
                async with http.get(f"{url}/api/feed", params={"limit": "1000"}) as resp:
                    items: list[dict[str, object]] = (await resp.json())["items"]
                    return items

            await eventually(partial(ready, http, url), timeout=20)
            # The recording's own keys are in the feed already: a driver reusing them would be folded by dedupe.
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with http.post(f"{url}/api/posts", json=records, headers=headers) as resp:
                assert resp.status == 202, await resp.text()

            async def seeded() -> bool:
                return len(await feed()) == POSTS

            await eventually(seeded, timeout=10)
            async with http.get(f"{url}/api/feed", params={"limit": "1"}) as resp:
                cursor = (await resp.json())["cursor"]

            master_port = free_port()
            prefix = tmp_path / "run"
            # clients resume from the cursor: each gets every driven post wherever its connect falls in the run
            master = await locust(
                *("--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(master_port)),
                *("--headless", "--expect-workers", "2", "--expect-workers-max-wait", "30"),
                *("-u", str(1 + 2 * CLIENTS), "-r", "20", "-t", "6s", "-H", url, "--csv", str(prefix)),
                *("--mixer-ws", f"/ws?since={cursor}", "--mixer-sse", f"/events?since={cursor}"),
                *("--mixer-recording", str(recording), "--mixer-posts", str(POSTS), "--mixer-rate", "40"),
                *("--mixer-token", TOKEN, "WsUser", "SseUser", "DriverUser"),
                log=tmp_path / "master.log",
            )
            procs.append(master)
            for n in range(2):
                worker_args = ("--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port))
                procs.append(await locust(*worker_args, log=tmp_path / f"worker{n}.log"))
            codes = [await asyncio.wait_for(p.wait(), 40) for p in procs]
            logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(tmp_path.glob("*.log")))
            assert codes == [0, 0, 0], logs  # the master exits 1 when any request event failed

            rows = stats(Path(f"{prefix}_stats.csv"))
            counts = {name: int(row["Request Count"]) for name, row in rows.items()}
            counts.setdefault(("WS", "post"), 0)
            counts.setdefault(("SSE", "post"), 0)
            assert counts[("WS", "connect")] == CLIENTS and counts[("SSE", "connect")] == CLIENTS, counts
            assert 1 <= counts[("POST", "/api/posts")] <= POSTS, counts  # the posts due at each send, together
            assert counts[("WS", "post")] == CLIENTS * POSTS, counts  # none lost, none counted twice
            assert counts[("SSE", "post")] == CLIENTS * POSTS, counts
            assert all(row["Failure Count"] == "0" for row in rows.values()), rows
            assert float(rows[("WS", "post")]["Average Content Size"]) > 100  # the frames' bytes

            driven = (await feed())[POSTS:]
            assert len(driven) == POSTS and len({str(p["key"]) for p in driven}) == POSTS
            tags = {str(p["key"]).rpartition("~")[2] for p in driven}
            assert len(tags) == 1 and tags.pop().endswith(".0")  # one run's tag, first pass
            assert [str(p["key"]).rpartition("~")[0] for p in driven] == [r["key"] for r in records]
            assert [p["text"] for p in driven] == [
                f"{r['text']} ~{str(p['key']).rpartition('~')[2]}" for r, p in zip(records, driven, strict=True)
            ]
    finally:
        for proc in [*procs, server]:
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL if proc is not server else signal.SIGTERM)
        for proc in [*procs, server]:
            await asyncio.wait_for(proc.wait(), 15)
    assert all(p.returncode is not None for p in procs)  # no locust process outlives the test


def ws_counts(prefix: Path) -> dict[str, int]:
    """The WsUser's rows of a running Locust's stats CSV (rewritten every second): request count by name."""
    try:
        rows = stats(Path(f"{prefix}_stats.csv"))
    except (OSError, KeyError):  # (not written yet, or caught mid-write)
        return {}
    return {name: int(row["Request Count"]) for (kind, name), row in rows.items() if kind == "WS"}


async def test_a_ws_user_reconnects_after_a_server_restart_with_since_and_counts_each_post_once(
    redis: aioredis.Redis, keys: Keys, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = mixer_env(redis_url, keys, "smbiz,edchat", MIXER_WEBHOOK_TOKEN=TOKEN)
    url = f"http://127.0.0.1:{port}"
    args = ("run", "--no-demo", "--port", str(port))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    prefix = tmp_path / "run"
    procs: list[asyncio.subprocess.Process] = []

    async def serve(n: int) -> None:
        with (tmp_path / f"server{n}.log").open("wb") as log:
            procs.append(await start_mixer(*args, env=env, log=log, preexec=die_with_parent()))

    async def delivered(name: str, count: int) -> bool:
        return ws_counts(prefix).get(name, 0) >= count

    try:
        async with aiohttp.ClientSession() as http:

            async def publish(tag: str) -> None:  # (texts of their own: dedupe would fold a repeated text)
                records = [{**r, "text": f"{r['text']} ({tag})"} for r in recorded(POSTS // 2, tag)]
                async with http.post(f"{url}/api/posts", json=records, headers=headers) as resp:
                    assert resp.status == 202, await resp.text()

            await serve(0)
            await eventually(partial(ready, http, url), timeout=20)
            async with http.get(f"{url}/api/feed", params={"limit": "1"}) as resp:
                cursor = (await resp.json())["cursor"]
            runner = await locust(
                *("--headless", "-u", "1", "-r", "1", "-t", "60s", "-H", url, "--csv", str(prefix)),
                *("--mixer-ws", f"/ws?since={cursor}", "--exit-code-on-error", "0", "WsUser"),
                log=tmp_path / "locust.log",
            )
            procs.append(runner)
            await publish("a")
            await eventually(partial(delivered, "post", POSTS // 2), timeout=20)

            async def fed() -> bool:
                async with http.get(f"{url}/api/feed", params={"limit": "1000"}) as resp:
                    return len((await resp.json())["items"]) == POSTS

            # Locust frozen: the posts after the restart come while it is away, so only a resume with `since` gets them
            runner.send_signal(signal.SIGSTOP)
            server = procs.pop(0)
            server.send_signal(signal.SIGTERM)  # its websockets are closed with 1001
            assert await asyncio.wait_for(server.wait(), 15) == 0
            await serve(1)
            await eventually(partial(ready, http, url), timeout=20)
            await publish("b")
            await eventually(fed, timeout=10)
            runner.send_signal(signal.SIGCONT)
            await eventually(partial(delivered, "post", POSTS), timeout=30)
            await eventually(partial(delivered, "connect", 2), timeout=5)

            runner.send_signal(signal.SIGTERM)  # Locust writes its final stats and exits
            assert await asyncio.wait_for(runner.wait(), 20) == 0, (tmp_path / "locust.log").read_text()[-3000:]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGCONT)  # (a frozen one takes its SIGTERM only once it runs)
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            await asyncio.wait_for(proc.wait(), 15)

    counts = ws_counts(prefix)
    assert counts["post"] == POSTS, counts  # the posts before the restart and after it: none lost, none twice
    assert counts["connect"] == 2, counts  # reconnected once (with since: no repeat of the first ten)
    rows = csv.DictReader(Path(f"{prefix}_failures.csv").read_text().splitlines())
    failures = {row["Error"]: int(row["Occurrences"]) for row in rows if row["Method"] == "WS"}
    assert any("1001" in error for error in failures), failures  # the shutdown's close, seen as a failure
