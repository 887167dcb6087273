"""Tests of the scripts in scripts/, run as their users run them."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT


def two_short_runs(script: str, redis_url: str) -> str:
    """What ``scripts/<script> --passes 1 --runs 2`` prints against ``redis_url`` (it cleans up its own keys)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), "--passes", "1", "--runs", "2", "--redis", redis_url],
        capture_output=True, text=True, check=True, cwd=ROOT, timeout=120,
    ).stdout  # fmt: skip
