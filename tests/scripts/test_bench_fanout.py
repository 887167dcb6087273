"""The fan-out benchmark's report (scripts/bench_fanout.py): ours against the naive server, as ratios."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any

from tests.helpers import ROOT

SCRIPT = ROOT / "scripts" / "bench_fanout.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_fanout", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_fanout", module)
    spec.loader.exec_module(module)
    return module


def _run(row: str, server: str, per_s: int, p99: float, us: float) -> dict[str, Any]:
    return {
        "row": row,
        "server": server,
        "rate": 100,
        "deliveries_per_s": per_s,
        "latency_ms": {"p99": p99},
        "server_us_per_delivery": us,
    }


def test_each_row_run_on_both_servers_gets_one_line_of_ratios_ours_against_naive() -> None:
    results = [
        _run("5000x100", "ours", 500_000, 50.0, 1.5),
        _run("5000x100", "naive", 250_000, 5_000.0, 4.5),
        _run("1000x100", "ours", 100_000, 30.0, 2.0),  # no naive run of this row: no line
        {"row": "idle10000", "server": "ours", "bytes_per_conn": 14_000},
    ]
    assert _bench().ratios(results) == [
        "5000x100   ours vs naive: deliveries/s 2.0x, p99 (naive/ours) 100.0x, CPU/delivery (naive/ours) 3.0x"
    ]
