"""scripts/ceiling_merge.py as its users run it: the real stage and each stand-in's ceiling, every row complete."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.helpers import ROOT


def test_every_row_handles_every_entry_and_prints_its_rate_beside_the_baseline(redis_url: str) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ceiling_merge.py"), "--passes", "1", "--runs", "1", "--redis",
         redis_url],
        capture_output=True, text=True, check=True, cwd=ROOT, timeout=120,
    ).stdout  # fmt: skip
    labels = ["merge as it is", "moderation free", "fingerprints free", "reorder free", "shaping off", "all four"]
    counters = dict(re.findall(r"^(.+?)\s+counters (\{.*\})$", out, re.MULTILINE))
    assert list(counters) == labels
    for label, text in counters.items():  # a stand-in that lost or repeated entries would measure less work
        assert text.startswith("{'read': 4425,"), (label, text)
    # the stand-in digest does not collapse texts that differ only in case, links or punctuation: fewer duplicates
    assert counters["fingerprints free"] != counters["merge as it is"] == counters["reorder free"]
    rows = re.findall(r"^(.+?)\s+([\d,]+) posts/s  \([\d.]+ s; ([\d.]+)x the baseline's time\)$", out, re.MULTILINE)
    assert [label for label, _, _ in rows] == ["baseline", *labels]
    assert rows[0][2] == "1.0"
