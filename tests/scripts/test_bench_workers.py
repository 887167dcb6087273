"""The two-worker benchmark (scripts/bench_workers.py): the ceiling it reports and the worker count it passes on."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any

import pytest

from tests.helpers import ROOT


def _script(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _bench() -> ModuleType:
    _script("bench_fanout")  # what bench_workers imports by name (scripts/ is on sys.path only when run as a script)
    return _script("bench_workers")


def _run(rate: float, per_s: int, p99: float, loss: float = 0.0) -> dict[str, Any]:
    return {
        "row": f"10000x{rate:g}",
        "rate": rate,
        "deliveries_per_s": per_s,
        "latency_ms": {"p99": p99},
        "target_p99_ms": 500.0,
        "loss_pct": loss,
        "closes": 0,
        "published": 1,
    }


def test_the_ceiling_is_the_most_delivered_before_the_first_missed_step() -> None:
    runs = [_run(1000, 10_000_000, 180), _run(2000, 20_000_000, 470), _run(2500, 25_000_000, 910)]
    runs.append(_run(3200, 32_000_000, 450, loss=0.5))  # under target but lossy, and after a miss anyway
    assert _bench().ceiling(runs)["deliveries_per_s"] == 20_000_000
    assert _bench().ceiling([_run(1000, 10_000_000, 600)]) is None


def test_the_cpu_budget_divides_two_cores_by_the_cost_of_a_delivery_with_and_without_the_clients() -> None:
    run = _run(2000, 20_000_000, 400) | {
        "server_us_per_delivery": 0.05,
        "load_us_per_delivery": 0.04,
        "redis_us_per_delivery": 0.01,
        "softirqd_us_per_delivery": 0.0,
        "busy_us_per_delivery": 0.12,
    }
    cost = _bench().budget(run)
    assert cost["two_cores_with_load"] == pytest.approx(20_000_000)  # 2 s of CPU a second / 0.1 us
    assert cost["two_cores_without_load"] == pytest.approx(33_333_333)  # / (0.05 + 0.01) us
    assert cost["other_us"] == pytest.approx(0.02)
    assert cost["load_share"] == pytest.approx(0.4)


def test_the_worker_count_reaches_the_fan_out_benchmark_and_the_target_comes_from_the_table() -> None:
    bench = _bench()
    args = bench.parse_args(["--clients", "5000", "--rates", "2000,1000", "--workers", "1,2"])
    assert (args.rates, args.target_ms) == ("1000,2000", 200.0)  # the 5,000 x 1,000 row's target
    assert sys.modules["bench_fanout"].parse_args(["--workers", "2"]).workers == 2
    for refused in (["--workers", "0"], ["--workers", "2", "--idle", "1000"]):
        with pytest.raises(SystemExit):
            sys.modules["bench_fanout"].parse_args(refused)
