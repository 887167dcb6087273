"""The clients-per-core benchmark's arithmetic and its CPU reading (scripts/bench_locust.py)."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from types import ModuleType

from tests.helpers import ROOT

SCRIPT = ROOT / "scripts" / "bench_locust.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_locust", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_locust", module)
    spec.loader.exec_module(module)
    return module


def test_clients_per_core_is_one_second_over_a_clients_cpu_a_second() -> None:
    bench = _bench()
    us, per_core = bench.figures(cpu=0.5, deliveries_per_s=10_000, rate=20)
    assert us == 50.0  # 0.5 s of CPU a second for 10,000 deliveries
    assert per_core == 1000.0  # a client costs 20 x 50 µs = 1 ms a second
    assert bench.figures(cpu=0.3, deliveries_per_s=0, rate=20) == (math.inf, 0.0)  # nothing delivered: no client


def test_the_cpu_of_a_process_tree_counts_its_children() -> None:
    bench = _bench()
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\nprint(1, flush=True)\n"
    args = [sys.executable, "-c", burn + "import sys; sys.stdin.read()"]
    with subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == b"1\n"  # burnt, still alive
            own = bench.tree_ticks(child.pid)
            assert own >= 0.25 * bench.HZ
            assert bench.tree_ticks(os.getpid()) >= own  # this process's tree holds the child
        finally:
            child.kill()


def test_bad_arguments_are_one_line_and_exit_2() -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--clients", "0"], capture_output=True, text=True, timeout=30, check=False
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == ["bench_locust: --clients, --rate and --window must be more than 0"]
