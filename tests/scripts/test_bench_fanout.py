"""The fan-out benchmark (scripts/bench_fanout.py): its report of ours against the naive server, as ratios, and
its cross-check of the load test's counts by independent clients (scripts/xcheck_client.py)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
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


def _independent(per_client: list[int], keys: list[int], failed: int = 0) -> dict[str, Any]:
    return {
        "clients": len(per_client) + failed,
        "connected": len(per_client),
        "failed": failed,
        "closes": 0,
        "close_codes": {},
        "lag_frames": 0,
        "per_client": per_client,
        "keys_per_client": keys,
        "latency_ms": {"count": 0},
    }


def test_the_cross_check_agrees_when_every_client_of_both_kinds_got_each_post_once() -> None:
    xc = _bench().cross_check(_independent([50, 50], [50, 50]), {"min": 50, "mean": 50.0, "max": 50}, 50)
    assert xc["mismatches"] == []
    assert xc["independent_per_client"] == {"min": 50, "mean": 50.0, "max": 50}


def test_the_cross_check_says_which_count_differs_from_the_posts_driven() -> None:
    ours = {"min": 50, "mean": 50.0, "max": 50}
    xc = _bench().cross_check(_independent([51, 50], [50, 50], failed=1), ours, 50)  # a post sent twice
    assert xc["mismatches"] == [
        "independent deliveries per client 50-51, 50 driven",
        "1 independent clients failed to connect, 0 were closed by the server {}",
    ]
    xc = _bench().cross_check(_independent([50], [50]), {"min": 48, "mean": 49.0, "max": 50}, 50)
    assert xc["mismatches"] == ["our load test's deliveries per client 48-50, 50 driven"]


def test_only_a_mismatch_where_the_load_test_lost_nothing_is_disputed() -> None:
    bench = _bench()
    ours = {"min": 50, "mean": 50.0, "max": 50}
    hidden = {"row": "1000x100", "loss_pct": 0.0, "cross_check": bench.cross_check(_independent([49], [49]), ours, 50)}
    behind = {"row": "10000x1000", "loss_pct": 95.0, "cross_check": {"mismatches": ["every count short"]}}
    agreed = {"row": "5000x100", "loss_pct": 0.0, "cross_check": bench.cross_check(_independent([50], [50]), ours, 50)}
    assert bench.disputed([hidden, behind, agreed, {"row": "idle10000"}]) == [hidden]


def test_a_tiny_row_with_the_cross_check_gives_both_counts_equal_to_the_posts_driven(
    redis_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    args = ["--rows", "4x20", "--servers", "ours", "--duration", "1", "--drain", "1", "--ramp", "0.5"]
    args += ["--processes", "1", "--sample", "2", "--cross-check", "3", "--redis", redis_url, "--json", str(out)]
    run = subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=50, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    [result] = json.loads(out.read_text())
    xc = result["cross_check"]
    assert result["published"] == xc["expected_per_client"] == 20
    assert xc["ours_per_client"] == xc["independent_per_client"] == xc["independent_keys_per_client"]
    assert xc["independent_per_client"] == {"min": 20, "mean": 20.0, "max": 20}
    assert xc["independent_connected"] == 3 and xc["mismatches"] == []
    assert "counts agree" in run.stdout
