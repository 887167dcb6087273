"""The merge profile's summary (scripts/profile_merge.py): shares of py-spy samples by part, set-up left out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT


def test_the_summary_counts_only_the_merge_run_and_names_each_part_by_its_first_marking_frame(tmp_path: Path) -> None:
    raw = tmp_path / "merge.txt"
    stack = "<module> (profile_merge.py:90);run (profile_merge.py:40);full (bench_merge.py:80)"
    raw.write_text(
        f"{stack};MergeStage.step (mixer/merge/stage.py:222);decode_event (mixer/merge/stage.py:79) 30\n"
        f"{stack};MergeStage._release (mixer/merge/stage.py:240);Moderator.judge (moderation.py:252) 50\n"
        # a fingerprint taken for the index read counts as fingerprints: parts are tried in their order
        f"{stack};MergeStage._load_book (stage.py:314);Deduper.needs (dedupe.py:123);fingerprint (dedupe.py:65) 10\n"
        f"{stack};MergeStage.step (mixer/merge/stage.py:210) 10\n"
        f"{stack};Moderator.__init__ (moderation.py:236);_compile (moderation.py:223) 400\n"  # set-up: left out
        "<module> (profile_merge.py:90);run (profile_merge.py:38);fill (bench_merge.py:50) 900\n"  # filling: left out
    )
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "profile_merge.py"), "--summary", str(raw)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout  # fmt: skip
    assert out.splitlines() == [
        "100 samples in the merge run",
        " 50.0%  moderation (words, accounts, profanity list)",
        " 30.0%  decode a chat-stream entry into a Post",
        " 10.0%  text fingerprints",
        " 10.0%  other (event loop, counters)",
    ]
