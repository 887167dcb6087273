"""scripts/bench_merge.py as its users run it: the baseline and the merge stage, once or several times with medians."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.helpers import ROOT


def rates(out: str, label: str) -> list[float]:
    return [float(m.replace(",", "")) for m in re.findall(rf"^{label}\s+([\d,]+) posts/s", out, re.MULTILINE)]


def test_several_runs_print_each_run_beside_its_baseline_and_the_medians(redis_url: str) -> None:
    script = str(ROOT / "scripts" / "bench_merge.py")
    out = subprocess.run(
        [sys.executable, script, "--passes", "1", "--runs", "2", "--redis", redis_url],
        capture_output=True, text=True, check=True, cwd=ROOT, timeout=120,
    ).stdout  # fmt: skip
    assert out.startswith("machine: ")
    assert "posts: 3,350 (4,425 chat-stream entries); counters {'read': 4425," in out
    for label in ("baseline", "merge"):
        first, second = rates(out, rf"run [12]/2  {label}")
        [median] = rates(out, rf"median    {label}")
        assert min(first, second) <= median <= max(first, second)
    assert len(re.findall(r"ratio\s+[\d.]+x the baseline's time", out)) == 3
