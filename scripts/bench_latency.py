"""Measure: publish-to-screen latency on the `full` profile, the old fixed reorder window beside the new rule.

Starts a private redis-server (no persistence) on a free port, then for each rule in turn a `mixer run
--redis ... --no-demo` on a free port (its own key prefix), waits for /readyz and for the merge stage's
learning time (10 windows, docs/architecture.md "The reorder rule") to pass, and runs `mixer loadtest
--drive synth` against it: --clients websocket clients, --rate posts/s for --duration s. `baseline` is the
rule before issue 17: every post waits its stamp plus merge.window_ms (here: the learning time made endless,
which is exactly that rule); `late-only` is the shipped rule. Prints latency p50/p95/p99/max and loss per
rule, and writes each loadtest's JSON beside --out; with --plot, a PNG of each rule's p50 and p99 per second
of the driven run (log scale). Every process it started is stopped at the end.

    .venv/bin/python scripts/bench_latency.py [--clients 1000] [--rate 1000] [--duration 20] [--plot FILE.png]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from mixer.tools.loadtest.procstat import describe_machine

RULES = {
    # The old rule: the buffer never stops learning, so every chat counts as late and every post waits the window.
    "baseline": "import mixer.merge.reorder as r; r.LEARN_WINDOWS = 10**9; from mixer.cli import main; main()",
    "late-only": "from mixer.cli import main; main()",
}
WINDOW_MS = 500  # merge.window_ms, the default


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"bench_latency: the server on port {port} was not ready in {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure(rule: str, redis_url: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    port = free_port()
    env = {**os.environ, "MIXER_REDIS_PREFIX": f"bench17-{rule}-{port}", "MIXER_MERGE_WINDOW_MS": str(WINDOW_MS)}
    cmd = [sys.executable, "-c", RULES[rule], "run", "--redis", redis_url, "--no-demo", "--port", str(port)]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port)
        time.sleep(10 * WINDOW_MS / 1000 + 0.5)  # past the merge stage's learning time
        result = out.with_name(f"{out.stem}-{rule}.json")
        loadtest = ["loadtest", "--redis", redis_url, "--url", f"ws://127.0.0.1:{port}/ws", "--drive", "synth"]
        sizes = ["--clients", str(args.clients), "--rate", str(args.rate), "--duration", str(args.duration)]
        subprocess.run(
            [sys.executable, "-m", "mixer", *loadtest, *sizes, "--server-pid", str(server.pid), "--json", str(result)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        data: dict[str, Any] = json.loads(result.read_text())
        return data
    finally:
        stop(server)


def plot(results: dict[str, dict[str, Any]], title: str, path: Path) -> None:
    """Each rule's p50 and p99 per second of the run, on one log-scale chart (needs matplotlib)."""
    from matplotlib.figure import Figure  # not pyplot: no global state, no display

    fig = Figure(figsize=(9, 4.5), dpi=100, layout="constrained")
    axes = fig.subplots()
    for (rule, result), colour in zip(results.items(), ("#c34f4f", "#4f7fc3"), strict=False):
        timed = [r for r in result["timeline"] if r["latency_ms"]]
        for q, style in (("p50", "-"), ("p99", ":")):
            axes.plot([r["second"] for r in timed], [r["latency_ms"][q] for r in timed], style, color=colour)
            axes.plot([], [], style, color=colour, label=f"{rule} {q}")
    axes.set_yscale("log")
    axes.set_xlabel("second of the run")
    axes.set_ylabel("publish to screen, ms")
    axes.set_title(title)
    axes.legend(loc="center right")
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--rules", nargs="+", choices=list(RULES), default=list(RULES))
    parser.add_argument(
        "--hz", type=int, default=100, help="Redis server ticks a second (100, as `mixer run` starts it)"
    )
    parser.add_argument("--plot", type=Path, help="write a PNG of p50 and p99 per second, each rule")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "bench_latency.json")
    args = parser.parse_args()
    print(f"machine: {describe_machine()}", flush=True)
    port = free_port()
    redis = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--hz",
            str(args.hz),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        url = f"redis://127.0.0.1:{port}/0"
        title = (
            f"{args.clients} clients, {args.rate} posts/s for {args.duration} s, profile full, window {WINDOW_MS} ms,"
            f" Redis hz {args.hz}"
        )
        print(title)
        results: dict[str, dict[str, Any]] = {}
        print(f"{'rule':<10} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}  loss (worst client missing of published)")
        for rule in args.rules:
            data = results[rule] = measure(rule, url, args, args.out)
            lat = data["latency_ms"]
            loss = data.get("loss") or {}
            row = " ".join(f"{lat.get(q, float('nan')):>7.1f}" for q in ("p50", "p95", "p99", "max"))
            print(f"{rule:<10} {row}  {loss.get('worst_missing')} of {loss.get('published')}", flush=True)
        if args.plot:
            plot(results, title, args.plot)
    finally:
        redis.terminate()
        redis.wait()


if __name__ == "__main__":
    main()
