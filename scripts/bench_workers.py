"""Measure: the fan-out ceiling of `mixer serve --workers 1` beside `--workers 2`, in one invocation.

The ceiling is the most deliveries/s a server gives while p99 stays under the target with nothing lost and no
socket closed. For each worker count it steps the post rate up (N clients fixed; each step one
``bench_fanout.one_run``: a fresh server, the clients connected, posts driven, figures read) and stops at the
first step that misses; the ceiling is the highest step met. Where things run (this machine has 2 cores):

- 1 worker: the server and the embedded Redis on core 0, the load side (this process, the driver, the client
  worker processes) on core 1, as in scripts/bench_fanout.py;
- 2 workers: one server process per core (Redis with the first on core 0), and the load side on both cores:
  on 2 cores the clients cannot have a core of their own.

Besides the side-by-side table it prints where the CPU went at each step (server, load side and Redis, µs per
delivery, per-core busy), how the kernel spread the connections over the two workers and what each wrote, and
what the CPU per delivery makes of 2 cores with the clients on them and without. See docs/benchmarks.md,
"Two workers".

    .venv/bin/python scripts/bench_workers.py                          # 10,000 clients from 1,000 posts/s up (~3-5 min)
    .venv/bin/python scripts/bench_workers.py --clients 5000 --rates 1000,2000 --target-ms 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import bench_fanout as fanout  # scripts/ is on sys.path when this runs as a script

CORES = 2  # what the CPU budget below divides: this machine's cores


def ceiling(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The run with the most deliveries/s among those that met their target before the first miss."""
    best = None
    for run in runs:
        if fanout.verdict(run) != "met":
            break
        if best is None or run["deliveries_per_s"] > best["deliveries_per_s"]:
            best = run
    return best


def first_miss(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first run that missed its target: the ceiling lies between the best run before it and it."""
    return next((run for run in runs if fanout.verdict(run) != "met"), None)


def budget(run: dict[str, Any]) -> dict[str, float]:
    """Where one delivery's CPU went (µs: server, load side, Redis; the kernel's ksoftirqd threads, and the rest of
    the machine's busy time, others' work included) and what 2 fully busy cores would deliver at the server's,
    load's and Redis's cost, with the load on them and without it."""
    server, load = run["server_us_per_delivery"] or 0.0, run["load_us_per_delivery"] or 0.0
    redis, busy = run["redis_us_per_delivery"] or 0.0, run["busy_us_per_delivery"] or 0.0
    softirqd = run["softirqd_us_per_delivery"] or 0.0
    ours = server + load + redis
    return {
        "server_us": server,
        "load_us": load,
        "redis_us": redis,
        "softirqd_us": softirqd,
        "other_us": round(max(0.0, busy - ours - softirqd), 3),
        "load_share": round(load / ours, 2) if ours else 0.0,
        "two_cores_with_load": round(CORES * 1e6 / ours) if ours else 0,
        "two_cores_without_load": round(CORES * 1e6 / (server + redis)) if server + redis else 0,
    }


def others(run: dict[str, Any]) -> float:
    """% of one core busy over the run that neither the server, the load side, Redis nor ksoftirqd spent."""
    ours = run["cpu_percent"] + run["load_cpu_percent"] + run["redis_cpu_percent"] + run["softirqd_cpu_percent"]
    return max(0.0, sum(run["cores_busy"]) - ours)


def side_by_side(ladders: dict[int, list[dict[str, Any]]], rates: list[float]) -> list[str]:
    """Per rate, one line per worker count: deliveries/s, loss, p99, verdict, µs per delivery of server / load /
    Redis, cores busy, and the busy time that was none of ours (another engineer's work spoils a step)."""
    lines = [
        f"{'posts/s':>8} {'workers':>7} {'deliv/s':>11} {'loss%':>6} {'p99 ms':>7} {'':>7} "
        f"{'us/delivery srv/load/redis':>27} {'cores busy %':>13} {'not ours %':>10}"
    ]
    for rate in rates:
        for workers, runs in ladders.items():
            run = next((r for r in runs if r["rate"] == rate), None)
            if run is None:
                lines.append(f"{rate:>8g} {workers:>7} {'(not run: a lower rate missed)':>40}")
                continue
            cost = f"{run['server_us_per_delivery']}/{run['load_us_per_delivery']}/{run['redis_us_per_delivery']}"
            lines.append(
                f"{rate:>8g} {workers:>7} {run['deliveries_per_s']:>11,} {run['loss_pct']:>6} "
                f"{(run.get('latency_ms') or {}).get('p99') or '-':>7} {fanout.verdict(run):>7} {cost:>27} "
                f"{'/'.join(f'{b:.0f}' for b in run['cores_busy']):>13} {others(run):>10.0f}"
            )
    return lines


def verdict_lines(ladders: dict[int, list[dict[str, Any]]], target_ms: float) -> list[str]:
    """The ceilings, their ratio, the connection spread, and the CPU budget that explains the ratio."""
    tops = {workers: ceiling(runs) for workers, runs in ladders.items()}
    lines = []
    for workers, top in tops.items():
        if top is None:
            lines.append(f"{workers} worker(s): no step met p99 < {target_ms:g} ms with 0 loss")
            continue
        cost = budget(top)
        lines.append(
            f"{workers} worker(s): ceiling {top['deliveries_per_s']:,} deliveries/s ({top['row']}, p99 "
            f"{top['latency_ms']['p99']} ms; {top['layout']}); per delivery: server {cost['server_us']} us, load "
            f"{cost['load_us']} us, Redis {cost['redis_us']} us (besides: ksoftirqd {cost['softirqd_us']} us, "
            f"the rest of the machine {cost['other_us']} us); the load side takes {cost['load_share']:.0%} of it"
        )
        lines.append(
            f"   at that cost 2 full cores deliver {cost['two_cores_with_load']:,}/s with the clients on them, "
            f"{cost['two_cores_without_load']:,}/s with the clients elsewhere"
        )
    one, two = tops.get(1), tops.get(2)
    if one and two:
        # each ceiling is only known to a step: it is at least the best step met and below the first step missed
        one_miss, two_miss = first_miss(ladders[1]), first_miss(ladders[2])
        low = two["deliveries_per_s"] / one_miss["deliveries_per_s"] if one_miss else None
        high = two_miss["deliveries_per_s"] / one["deliveries_per_s"] if two_miss else None
        lines.append(
            f"ceiling 2 workers / 1 worker: {two['deliveries_per_s'] / one['deliveries_per_s']:.2f}x by the steps met, "
            f"within {f'{low:.2f}' if low else '?'}-{f'{high:.2f}' if high else '?'}x given the steps (goal 1.6x; "
            f"clients on the same 2 cores)"
        )
    for workers, runs in ladders.items():
        for run in runs if workers > 1 else ():
            spread = ", ".join(
                f"pid {w['pid']} cpu{'+'.join(map(str, w['cores']))}: {w['connections']:,} conns, CPU "
                f"{w['cpu_percent']}%, {w['written_mb']:,} MB, {w['posts_sent'] or 0:,} posts"
                for w in run.get("per_worker", ())
            )
            lines.append(f"{run['row']} x{workers} workers: {spread}")
    return lines


def save(path: Path, ladders: dict[int, list[dict[str, Any]]]) -> None:
    path.write_text(json.dumps(ladders, indent=1))


async def main(args: argparse.Namespace) -> None:
    rates = [float(r) for r in args.rates.split(",")]
    counts = [int(w) for w in args.workers.split(",")]
    base = fanout.parse_args(
        ["--duration", str(args.duration), "--drain", str(args.drain), "--processes", str(args.processes)]
        + (["-v"] if args.verbose else [])
    )
    pin = fanout.prepare(args.clients)
    ladders: dict[int, list[dict[str, Any]]] = {}
    async with AsyncExitStack() as stack:
        redis_url, redis_pid = fanout.feed_redis(stack, args.redis, bool(pin))
        for workers in counts:
            runs = ladders.setdefault(workers, [])
            for rate in rates:
                row = fanout.Row(args.clients, rate, args.target_ms)
                base.workers = workers
                run = await fanout.one_run("ours", row, base, redis_url, redis_pid, pin)
                run["row"] = f"{row.name}/{workers}w"
                fanout.show(run)
                runs.append(run)
                if args.json:
                    save(Path(args.json), ladders)
                if fanout.verdict(run) != "met":
                    break  # the ceiling is below this step
    print(
        f"\n{args.clients:,} clients, p99 target {args.target_ms:g} ms, 0 loss; {args.duration:g} s driven + "
        f"{args.drain:g} s drain per step (CPU figures over both; 100% = one core)"
    )
    print("\n".join(side_by_side(ladders, rates)))
    print()
    print("\n".join(verdict_lines(ladders, args.target_ms)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="fan-out ceiling of mixer serve --workers 1 vs 2, one invocation.")
    parser.add_argument("--clients", type=int, default=10000, help="websocket clients (default 10000)")
    parser.add_argument(
        "--rates",
        default="1000,1500,1750,2000,2250,2500",
        help="posts/s to step through (default 1000,1500,1750,2000,2250,2500)",
    )
    parser.add_argument(
        "--target-ms",
        type=float,
        help="p99 target (default: the target table's for CLIENTS at 1,000 posts/s, else 500)",
    )
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, in order (default 1,2)")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds of driving per step (default 6)")
    parser.add_argument("--drain", type=float, default=2.0, help="seconds after driving (default 2)")
    parser.add_argument("--processes", type=int, default=2, help="client worker shares (default 2)")
    parser.add_argument("--json", metavar="FILE", help="every run's figures, by worker count")
    parser.add_argument("--redis", metavar="URL", help="an existing Redis (default: an embedded one)")
    parser.add_argument("-v", "--verbose", action="store_true", help="the load test's progress every second")
    args = parser.parse_args(argv)
    try:
        rates = sorted(float(r) for r in args.rates.split(","))
        counts = [int(w) for w in args.workers.split(",")]
    except ValueError:
        parser.error("--rates and --workers are comma lists of numbers")
    if not rates or rates[0] <= 0 or not counts or min(counts) < 1 or args.clients < 1:
        parser.error("--rates must be positive, --workers at least 1, --clients at least 1")
    args.rates = ",".join(f"{r:g}" for r in rates)
    if args.target_ms is None:
        args.target_ms = fanout.parse_row(f"{args.clients}x1000").target_p99_ms or 500.0
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
