"""Measure: N fan-out replicas, each in its own network namespace, on one Redis (the figures of docs/scaling.md).

One dedicated redis-server (a free port, bound to 127.0.0.1 and to the host end of every veth pair) and one
`mixer merge` run on the host. Each replica is a network namespace of its own (``ip netns add`` + a veth pair,
10.201.<i>.0/30: the host is .1, the replica .2): `mixer serve --no-merge` on the namespace's 127.0.0.1:8080
reaching Redis over the veth, and a `mixer loadtest` in the same namespace against its 127.0.0.1 (the load tester
refuses non-loopback hosts), holding ``--clients / N`` websocket clients. The first replica's load tester drives
``--rate`` synthetic posts/s into the chat streams (as ingest would); the merge stage turns them into the feed every
replica reads. Per configuration it prints the aggregate deliveries/s, the worst replica's p99 latency (it includes
the merge stage's 0.5 s reorder window), each replica's server CPU, and Redis's CPU (INFO cpu: used_cpu_sys +
used_cpu_user), its time executing commands (INFO commandstats usec) and its commands per second, over the steady
part of the driven period (found from when XADDs start and stop). Two series, in one invocation:

- through the pipeline: 1 replica at ``--rate`` (the baseline) and at ``--rate-high`` (Redis per 1,000 posts/s of
  publish + merge + one replica), then each N of ``--replicas`` at ``--rate`` (aggregate deliveries/s and p99);
- straight into the feed (no merge stage; the script XADDs ~400-byte posts itself, one pipeline every 5 ms, so the
  writer's cost does not depend on how busy the machine is): 1 and the largest N replicas at both rates, whose
  difference is Redis per fan-out replica. Through the pipeline that difference drowns in the merge stage's batching,
  which grows when the machine is busier.

About 2.5 minutes with the defaults. Needs root (namespaces) and redis-server; cleans up its namespaces, veths and
processes on every exit.

    .venv/bin/python scripts/bench_scaling.py      # 1, 2, 4 replicas; 400 clients; 50 and 1,000 posts/s; 8 s each
    .venv/bin/python scripts/bench_scaling.py --replicas 2 --clients 100 --rate 20 --rate-high 100 --duration 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from redis import Redis

from mixer.codec import FIELD, pack_post
from mixer.keys import Keys
from mixer.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fanout import make_post  # the fan-out benchmark's ~400-byte post

MIXER = str(Path(sys.executable).parent / "mixer")
TAG = f"cmx{os.getpid() % 100000}"  # names of this run's namespaces and veths (<= 15 characters with the suffix)


def sh(*args: str) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_namespaces(count: int, stack: ExitStack) -> list[tuple[str, str, str]]:
    """``count`` namespaces as (name, host address, replica address); each is deleted (with its veth) on exit."""
    made = []
    for i in range(count):
        ns, host, peer = f"{TAG}n{i}", f"10.201.{i}.1", f"10.201.{i}.2"
        sh("ip", "netns", "add", ns)
        stack.callback(subprocess.run, ["ip", "netns", "del", ns], check=False)
        sh("ip", "link", "add", f"{TAG}h{i}", "type", "veth", "peer", "name", f"{TAG}p{i}", "netns", ns)
        stack.callback(subprocess.run, ["ip", "link", "del", f"{TAG}h{i}"], check=False, stderr=subprocess.DEVNULL)
        sh("ip", "addr", "add", f"{host}/30", "dev", f"{TAG}h{i}")
        sh("ip", "link", "set", f"{TAG}h{i}", "up")
        for cmd in (["addr", "add", f"{peer}/30", "dev", f"{TAG}p{i}"], ["link", "set", f"{TAG}p{i}", "up"]):
            sh("ip", "netns", "exec", ns, "ip", *cmd)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        made.append((ns, host, peer))
    return made


def spawn(stack: ExitStack, args: list[str], log: Path, ns: str | None = None) -> subprocess.Popen[bytes]:
    """A child in its own process group (killed with its workers on exit), stdout and stderr to ``log``."""
    full = ["ip", "netns", "exec", ns, *args] if ns else args
    proc = subprocess.Popen(full, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)

    def stop() -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    stack.callback(stop)
    return proc


# monotonic time, Redis CPU seconds (sys + user), and by command: calls, microseconds spent executing them
Sample = tuple[float, float, dict[str, int], dict[str, int]]


def redis_info(port: int) -> Sample:
    out = subprocess.run(["redis-cli", "-p", str(port), "info", "all"], check=True, capture_output=True, text=True)
    info = dict(line.split(":", 1) for line in out.stdout.splitlines() if ":" in line and not line.startswith("#"))
    stats = {k.removeprefix("cmdstat_"): dict(f.split("=") for f in v.split(",")) for k, v in info.items()
             if k.startswith("cmdstat_") and k != "cmdstat_info"}  # fmt: skip
    calls = {k: int(v["calls"]) for k, v in stats.items()}
    usec = {k: int(v["usec"]) for k, v in stats.items()}
    return time.monotonic(), float(info["used_cpu_sys"]) + float(info["used_cpu_user"]), calls, usec


def driven_window(samples: list[Sample]) -> tuple[float, float, dict[str, int], float]:
    """(seconds, CPU seconds, calls by command, seconds executing commands) between the second and the second-to-last
    sample in which posts were added: the steady driven period, whenever the load tester's start-up and ramp let it
    begin."""
    busy = [i for i in range(1, len(samples)) if samples[i][2].get("xadd", 0) > samples[i - 1][2].get("xadd", 0)]
    if len(busy) < 4:
        raise SystemExit("bench_scaling: no driven period seen in Redis (see the loadtest logs)")
    (t0, cpu0, calls0, usec0), (t1, cpu1, calls1, usec1) = samples[busy[1]], samples[busy[-2]]
    calls = {k: n - calls0.get(k, 0) for k, n in calls1.items() if n > calls0.get(k, 0)}
    return t1 - t0, cpu1 - cpu0, calls, (sum(usec1.values()) - sum(usec0.values())) / 1e6


def wait_ready(ns: str, port: int, patience: float = 30.0) -> None:
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/readyz', timeout=1)"
    deadline = time.monotonic() + patience
    while subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", probe], capture_output=True).returncode:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_scaling: the replica in {ns} was not ready within {patience:.0f} s")
        time.sleep(0.2)


def drive_feed(port: int, rate: float, start: float, stop: float) -> None:
    """XADD ``rate`` posts/s straight into the feed from monotonic ``start`` to ``stop``, one pipeline every 5 ms: what
    the merge stage writes, at a cost to Redis that does not depend on how busy the machine is."""
    redis = Redis(port=port)
    feed, n = Keys(Settings().key_prefix).feed, 0
    time.sleep(max(0.0, start - time.monotonic()))
    while (now := time.monotonic()) < stop:
        pipe = redis.pipeline(transaction=False)
        for _ in range(int((now - start) * rate) - n):
            pipe.xadd(feed, {FIELD: pack_post(make_post("scaling", n, int(time.time() * 1000)))})
            n += 1
        pipe.execute()
        time.sleep(0.005)
    redis.close()


def wait_connected(spaces: list[tuple[str, str, str]], clients: int, patience: float = 60.0) -> float:
    """The monotonic time at which ``clients`` websockets are open on the replicas' port 8080, all namespaces summed."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        open_now = 0
        for ns, _, _ in spaces:
            ss = ["ip", "netns", "exec", ns, "ss", "-Htn", "state", "established", "( sport = :8080 )"]
            open_now += len(subprocess.run(ss, capture_output=True, text=True).stdout.splitlines())
        if open_now >= clients:
            return time.monotonic()
        time.sleep(0.1)
    raise SystemExit(f"bench_scaling: {clients} clients did not connect within {patience:.0f} s")


def measure(replicas: int, rate: float, feed_only: bool, opts: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One configuration: ``replicas`` namespaced fan-out servers, the load spread over them, Redis sampled. Posts come
    through the pipeline (the first load tester publishes, `mixer merge` merges) or, ``feed_only``, straight into the
    feed (no merge stage: Redis's work is then the replicas' reads and one constant writer)."""
    with ExitStack() as stack:
        spaces = make_namespaces(replicas, stack)
        port = free_port()
        binds = ["127.0.0.1", *(host for _, host, _ in spaces)]
        server = ["redis-server", "--port", str(port), "--bind", *binds, "--protected-mode", "no"]
        spawn(stack, [*server, "--save", "", "--appendonly", "no"], work / "redis.log")
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        if not feed_only:
            spawn(stack, [MIXER, "merge", "--redis", f"redis://127.0.0.1:{port}/0"], work / "merge.log")
        servers = []
        for i, (ns, host, _) in enumerate(spaces):
            args = [MIXER, "serve", "--no-merge", "--redis", f"redis://{host}:{port}/0", "--host", "127.0.0.1"]
            servers.append(spawn(stack, [*args, "--port", "8080"], work / f"serve{i}.log", ns))
        for ns, _, _ in spaces:
            wait_ready(ns, 8080)
        testers = []
        for i, (ns, host, _) in enumerate(spaces):
            args = [MIXER, "loadtest", "--redis", f"redis://{host}:{port}/0", "--url", "ws://127.0.0.1:8080/ws"]
            args += ["--clients", str(opts.clients // replicas), "--ramp", "2", "--processes", "1"]
            args += ["--duration", str(opts.duration), "--drain", "3", "--server-pid", str(servers[i].pid)]
            drive = "synth" if i == 0 and not feed_only else "none"
            args += ["--drive", drive, "--rate", str(rate), "--json", str(work / f"lt{i}.json")]
            testers.append(spawn(stack, args, work / f"loadtest{i}.log", ns))
        if feed_only:  # from when every client is connected to a second before the load tests stop measuring
            start = wait_connected(spaces, replicas * (opts.clients // replicas))
            driver = threading.Thread(target=drive_feed, args=(port, rate, start, start + opts.duration - 1))
            driver.start()
            stack.callback(driver.join)
        samples = [redis_info(port)]
        while any(tester.poll() is None for tester in testers):  # sampled until every load tester is done
            time.sleep(0.5)
            samples.append(redis_info(port))
            if samples[-1][0] - samples[0][0] > opts.duration + 90:
                raise SystemExit("bench_scaling: a load tester did not finish (see its log)")
        results = [json.loads((work / f"lt{i}.json").read_text()) for i in range(replicas)]
    seconds, cpu, calls, executing = driven_window(samples)
    return {
        "replicas": replicas,
        "rate": rate,
        "feed_only": feed_only,
        "clients": sum(r["connected_peak"] for r in results),
        "deliveries_per_s": sum(r["deliveries_per_s"] for r in results),
        "p99_ms": max(r["latency_ms"]["p99"] for r in results if r.get("latency_ms")),
        "server_cpu": [round(r["server"]["cpu_percent"]) for r in results],
        "redis_cpu_percent": cpu / seconds * 100,
        "redis_command_time_percent": executing / seconds * 100,  # INFO commandstats usec: executing, no I/O
        "redis_commands_per_s": sum(calls.values()) / seconds,
        "redis_calls_per_s": {k: round(n / seconds, 1) for k, n in sorted(calls.items(), key=lambda kv: -kv[1])},
    }


def show(rows: list[dict[str, Any]]) -> None:
    print(f"{'replicas':>8} {'posts/s':>8} {'clients':>7} {'deliv/s':>9} {'x 1':>5} {'p99 ms':>7} "
          f"{'redis %cpu':>10} {'%exec':>6} {'redis cmd/s':>11}  server %cpu per replica")  # fmt: skip
    alone = {r["rate"]: r for r in rows if r["replicas"] == 1}  # each rate's 1-replica baseline
    for r in rows:
        ratio = r["deliveries_per_s"] / alone[r["rate"]]["deliveries_per_s"]
        print(f"{r['replicas']:>8} {r['rate']:>8g} {r['clients']:>7} {r['deliveries_per_s']:>9.0f} {ratio:>5.2f} "
              f"{r['p99_ms']:>7.0f} {r['redis_cpu_percent']:>10.2f} {r['redis_command_time_percent']:>6.2f} "
              f"{r['redis_commands_per_s']:>11.0f}  {r['server_cpu']}")  # fmt: skip


def slope(rows: list[dict[str, Any]], what: str, by: str) -> float:
    """The change of ``what`` per unit of ``by`` between the first and the last row."""
    return float(rows[-1][what] - rows[0][what]) / (rows[-1][by] - rows[0][by])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", default="1,2,4", help="replica counts to compare with 1 (default 1,2,4)")
    parser.add_argument("--clients", type=int, default=400, help="websocket clients in all, split evenly")
    parser.add_argument("--rate", type=float, default=50.0, help="driven posts/s (default 50)")
    parser.add_argument("--rate-high", type=float, default=1000.0, help="the second rate, for the per-post slope")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of each driven run (4 to 60)")
    parser.add_argument("--json", type=Path, help="write every configuration's figures here")
    opts = parser.parse_args()
    counts = sorted({1, *(int(n) for n in opts.replicas.split(","))})
    if os.geteuid() != 0 or not shutil.which("redis-server") or not 4 <= opts.duration <= 60 or max(counts) > 16:
        parser.error("needs root, redis-server on PATH, --duration 4 to 60 and at most 16 replicas")
    widest, low, high = counts[-1], opts.rate, opts.rate_high
    pipeline = [(1, low), (1, high), *((n, low) for n in counts[1:])]
    feed = [(n, rate) for rate in (low, high) for n in sorted({1, widest})]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        for replicas, rate, feed_only in [*((*c, False) for c in pipeline), *((*c, True) for c in feed)]:
            what = "straight into the feed" if feed_only else "through ingest and merge"
            print(f"bench_scaling: {replicas} replica(s), {rate:g} posts/s {what} ...", file=sys.stderr, flush=True)
            rows.append(measure(replicas, rate, feed_only, opts, Path(tmp)))
    through, straight = [r for r in rows if not r["feed_only"]], [r for r in rows if r["feed_only"]]
    print("Through the pipeline (a load tester publishes into the chat streams, `mixer merge` merges):")
    show(through)
    print("Straight into the feed (no merge; Redis's work is the replicas' reads and one constant writer):")
    show(straight)
    figures: dict[str, float] = {}
    alone = [r for r in through if r["replicas"] == 1]
    for what in ("redis_cpu_percent", "redis_command_time_percent"):
        figures[f"{what}_per_1000_posts_per_s"] = slope(alone, what, "rate") * 1000
    print(f"Redis per 1,000 posts/s through the pipeline (publish + merge + one replica): "
          f"{figures['redis_cpu_percent_per_1000_posts_per_s']:.1f} % of a core "
          f"({figures['redis_command_time_percent_per_1000_posts_per_s']:.1f} % executing commands)")  # fmt: skip
    for rate in (low, high) if widest > 1 else ():
        pair = [r for r in straight if r["rate"] == rate]
        for what in ("redis_cpu_percent", "redis_command_time_percent", "redis_commands_per_s"):
            figures[f"{what}_per_replica_at_{rate:g}"] = slope(pair, what, "replicas")
        print(f"Redis per fan-out replica at {rate:g} posts/s: "
              f"{figures[f'redis_cpu_percent_per_replica_at_{rate:g}']:.2f} % of a core "
              f"({figures[f'redis_command_time_percent_per_replica_at_{rate:g}']:.2f} % executing commands), "
              f"{figures[f'redis_commands_per_s_per_replica_at_{rate:g}']:.0f} commands/s")  # fmt: skip
    if opts.json:
        opts.json.write_text(json.dumps({"rows": rows, **figures}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
