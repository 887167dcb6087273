"""The scaling benchmark (scripts/bench_scaling.py) measures Redis over the steady driven period only."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from tests.helpers import ROOT

SCRIPT = ROOT / "scripts" / "bench_scaling.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_scaling", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_scaling", module)
    spec.loader.exec_module(module)
    return module


def _sample(t: float, cpu: float, xadds: int, xreads: int) -> tuple[float, float, dict[str, int], dict[str, int]]:
    return t, cpu, {"xadd": xadds, "xread": xreads}, {"xadd": xadds * 10, "xread": xreads * 10}


def test_the_window_leaves_out_start_up_ramp_and_drain_around_the_posts() -> None:
    samples = [_sample(0, 0.0, 0, 0), _sample(1, 5.0, 0, 50)]  # start-up and ramp: reads, no posts yet
    samples += [_sample(2 + i, 5.0 + i, 100 * (i + 1), 50 + 10 * (i + 1)) for i in range(6)]  # driven: 1 s of CPU/s
    samples += [_sample(8, 20.0, 600, 200), _sample(9, 30.0, 600, 300)]  # drain: no posts, busy otherwise
    seconds, cpu, calls, executing = _bench().driven_window(samples)
    # from the second sample with new posts (t=3) to the second-to-last (t=6): the steady part
    assert (seconds, cpu) == (3, 3.0)
    assert calls == {"xadd": 300, "xread": 30}
    assert executing == pytest.approx(330 * 10 / 1e6)


def test_a_run_in_which_no_post_reached_redis_is_refused_not_reported_as_zero() -> None:
    samples = [_sample(t, 0.1 * t, 0, 10 * t) for t in range(10)]
    with pytest.raises(SystemExit, match="no driven period"):
        _bench().driven_window(samples)
