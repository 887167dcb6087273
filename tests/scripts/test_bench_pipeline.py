"""scripts/bench_pipeline.py as its users run it: every row per run, and with several runs each row's median."""

from __future__ import annotations

import re

from tests.scripts import two_short_runs

ROWS = ("parse", "xadd baseline", "replay", "merge", "pipeline")
RATE = re.compile(r"^(\w[\w ]*?)\s+3,350 posts .*? ([\d,]+) posts/s", re.MULTILINE)  # a row: its name and posts/s


def test_several_runs_print_every_row_per_run_and_each_rows_median(redis_url: str) -> None:
    out = two_short_runs("bench_pipeline.py", redis_url)
    blocks = re.split(r"^(?:run \d/2|median of 2 runs)$", out, flags=re.MULTILINE)[1:]
    assert len(blocks) == 3
    rates = [{name: int(rate.replace(",", "")) for name, rate in RATE.findall(block)} for block in blocks]
    for name in ROWS:
        first, second, median = (r[name] for r in rates)
        assert min(first, second) - 1 <= median <= max(first, second) + 1  # (rates rounded as printed)
