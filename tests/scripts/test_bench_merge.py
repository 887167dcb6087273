"""scripts/bench_merge.py as its users run it: the baseline and the merge stage, once or several times with medians."""

from __future__ import annotations

import re

from tests.scripts import two_short_runs


def rates(out: str, label: str) -> list[float]:
    return [float(m.replace(",", "")) for m in re.findall(rf"^{label}\s+([\d,]+) posts/s", out, re.MULTILINE)]


def test_several_runs_print_each_run_beside_its_baseline_and_the_medians(redis_url: str) -> None:
    out = two_short_runs("bench_merge.py", redis_url)
    assert out.startswith("machine: ")
    assert "posts: 3,350 (4,425 chat-stream entries); counters {'read': 4425," in out
    for label in ("baseline", "merge"):
        first, second = rates(out, rf"run [12]/2  {label}")
        [median] = rates(out, rf"median    {label}")
        assert min(first, second) <= median <= max(first, second)
    assert len(re.findall(r"ratio\s+[\d.]+x the baseline's time", out)) == 3
