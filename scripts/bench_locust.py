"""Measure: websocket clients per core of one Locust process (mixer.load.locust's WsUser, a greenlet per user)
beside `mixer loadtest`'s counting clients, against the same server and the same driven rate.

One `mixer run --no-demo` on the Redis given (a key prefix of its own, deleted afterwards) serves both sides in
turn. Each side holds N websocket clients on /ws while R posts/s are driven (Locust: its DriverUser through the
webhook, in the same process; `mixer loadtest`: `--drive synth`, one share: its main process and its two workers),
and the CPU time (user + system, /proc/<pid>/stat) of the side's processes is read over a window that starts once
every client is connected: clients per core = N / (CPU seconds / window seconds). A standalone `locust` runs users
exactly as one `locust --worker` does, so its figure is a worker's. Deliveries per second over the run say the
clients were kept busy. Pin it with `taskset` to keep the server's core out of the figure. docs/locust.md.

    .venv/bin/python scripts/bench_locust.py                         # 500 clients, 20 posts/s, 10 s window
    .venv/bin/python scripts/bench_locust.py --clients 1000 --rate 20 --window 15
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import redis

from mixer.tools.loadtest.procstat import process_ticks

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "mixer" / "load" / "locust.py"
HZ = os.sysconf("SC_CLK_TCK")
TOKEN = "bench-locust-token-0123456789"
SETTLE = 3.0  # seconds after the last connect before the window opens


def tree_ticks(root: int) -> int:
    """utime + stime of ``root`` and every live descendant, in clock ticks."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(text.rpartition(")")[2].split()[1])
        ticks[int(entry.name)] = process_ticks(text)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0)
        todo += [child for child, parent in parents.items() if parent == pid]
    return total


def figures(cpu: float, deliveries_per_s: float, rate: float) -> tuple[float, float]:
    """(µs of CPU per delivery, clients one core keeps up with at ``rate`` posts/s) from CPU seconds per second and
    deliveries per second; a side that delivered nothing holds no client (inf µs, 0 clients)."""
    if deliveries_per_s <= 0:
        return math.inf, 0.0
    us = 1e6 * cpu / deliveries_per_s
    return us, 1e6 / (us * rate)


def window_cpu(proc: subprocess.Popen[bytes], start: float, window: float) -> tuple[float, float, float]:
    """CPU seconds per second of ``proc``'s tree over ``window`` s starting at monotonic ``start``, and the window's
    wall-clock start and end."""
    time.sleep(max(0.0, start - time.monotonic()))
    before, t0, wall0 = tree_ticks(proc.pid), time.monotonic(), time.time()
    time.sleep(window)
    if proc.poll() is not None:
        raise SystemExit(f"bench_locust: {proc.args[0]} ended before the window did (exit {proc.returncode})")
    return (tree_ticks(proc.pid) - before) / HZ / (time.monotonic() - t0), wall0, time.time()


def locust_side(url: str, clients: int, rate: float, window: float, out: Path) -> dict[str, float]:
    spawn_rate = 200
    ramp = clients / spawn_rate
    run_time = ramp + SETTLE + window + 2
    args = [
        *(sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-H", url),
        *("-u", str(clients + 1), "-r", str(spawn_rate), "-t", f"{run_time:.0f}s", "--csv", str(out / "locust")),
        *(
            "--mixer-rate",
            str(rate),
            "--mixer-token",
            TOKEN,
            "--only-summary",
            "--csv-full-history",
            "WsUser",
            "DriverUser",
        ),
    ]
    with (out / "locust.log").open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=log)
        try:
            cpu, wall0, wall1 = window_cpu(proc, time.monotonic() + 2 + ramp + SETTLE, window)  # ~2 s: its start
            proc.wait(run_time + 30)
        finally:
            proc.kill()
            proc.wait()
    with (out / "locust_stats.csv").open() as f:
        failures = sum(int(r["Failure Count"]) for r in csv.DictReader(f) if r["Type"])
    with (out / "locust_stats_history.csv").open() as f:  # cumulative counts, a row a second per name
        seen = [
            (int(r["Timestamp"]), int(r["Total Request Count"]))
            for r in csv.DictReader(f)
            if (r["Type"], r["Name"]) == ("WS", "post")
        ]
    inside = [(t, n) for t, n in seen if wall0 <= t <= wall1]
    rate = (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]) if len(inside) > 1 else 0.0
    return {"cpu": cpu, "deliveries_per_s": rate, "failures": failures}


def loadtest_side(
    url: str, redis_url: str, env: dict[str, str], clients: int, rate: float, window: float, out: Path
) -> dict[str, float]:
    ramp = max(1.0, clients / 400)
    args = [
        *(
            sys.executable,
            "-m",
            "mixer.cli",
            "loadtest",
            "--redis",
            redis_url,
            "--url",
            url.replace("http", "ws") + "/ws",
        ),
        *("--clients", str(clients), "--ramp", str(ramp), "--processes", "1", "--duration", str(window + SETTLE + 2)),
        *("--drive", "synth", "--rate", str(rate), "--drain", "2", "--json", str(out / "loadtest.json")),
    ]
    with (out / "loadtest.log").open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=log, env=env)
        try:
            cpu, _, _ = window_cpu(proc, time.monotonic() + 2 + ramp + SETTLE, window)
            proc.wait(window + ramp + 60)
        finally:
            proc.kill()
            proc.wait()
    result = json.loads((out / "loadtest.json").read_text())
    return {"cpu": cpu, "deliveries_per_s": float(result["deliveries_per_s"]), "failures": result.get("failed", 0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=500, help="websocket clients on each side (default 500)")
    parser.add_argument("--rate", type=float, default=20.0, help="driven posts/s (default 20)")
    parser.add_argument("--window", type=float, default=10.0, help="seconds of CPU measurement (default 10)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis for the server (default local)")
    args = parser.parse_args()
    if args.clients < 1 or args.rate <= 0 or args.window <= 0:
        print("bench_locust: --clients, --rate and --window must be more than 0", file=sys.stderr)
        return 2
    prefix = f"bench-locust-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIXER_")}
    # the bundled demo's chats: Locust's DriverUser publishes the demo recording (mixer loadtest synthesises posts)
    env |= {"MIXER_REDIS_URL": args.redis, "MIXER_REDIS_PREFIX": prefix, "MIXER_CHATS": "pstweetchat,powershell"}
    env["MIXER_WEBHOOK_TOKEN"] = TOKEN
    port = 18000 + os.getpid() % 2000
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="bench-locust-") as tmp:
        out = Path(tmp)
        server_log = (out / "server.log").open("wb")
        server = subprocess.Popen(
            [sys.executable, "-m", "mixer.cli", "run", "--no-demo", "--port", str(port)],
            env=env,
            stdout=server_log,
            stderr=server_log,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/readyz", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    if time.monotonic() > deadline:
                        print(
                            f"bench_locust: the server did not get ready:\n{(out / 'server.log').read_text()}",
                            file=sys.stderr,
                        )
                        return 1
                    time.sleep(0.2)
            sides = {
                "locust (one process, greenlet per user)": locust_side(url, args.clients, args.rate, args.window, out),
                "mixer loadtest (counting clients)": loadtest_side(
                    url, args.redis, env, args.clients, args.rate, args.window, out
                ),
            }
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(20)
            client = redis.Redis.from_url(args.redis)
            for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                client.delete(key)
            client.close()
    print(f"{args.clients} websocket clients, {args.rate:g} posts/s driven, CPU over {args.window:g} s after the ramp")
    print(f"(every client getting every post: {args.clients * args.rate:,.0f} deliveries/s)")
    print(
        f"{'load side':40} {'CPU %':>6} {'deliveries/s':>13} {'µs/delivery':>12} {'clients/core':>13} {'failures':>9}"
    )
    for name, side in sides.items():
        cpu, delivered, failed = side["cpu"], side["deliveries_per_s"], side["failures"]
        us, per_core = figures(cpu, delivered, args.rate)
        print(f"{name:40} {100 * cpu:6.1f} {delivered:13,.0f} {us:12.1f} {per_core:13,.0f} {failed:9}")
    print("clients/core = 1 s / (µs per delivery x posts/s): what one core keeps up with, even when this run's")
    print("clients fell behind (deliveries/s below the target) because this machine's cores were busy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
