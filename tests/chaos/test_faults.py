"""The fault suite as tests (marker ``chaos``): each fault on a fresh split deployment of real processes on a
throwaway Redis with AOF, under steady load; the checks are tests/chaos/harness.py's (docs/reliability.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.deploy import Deployment
from tests.chaos.harness import FAULTS, Chaos, Options

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(150)]

# A shorter outage than the script's 30 s, so the group stays within a few minutes.
OPTIONS = Options(outage_s=5, release_s=30)
# Both replicas are the same program: the script kills each, the tests one.
IN_TESTS = [name for name in FAULTS if name != "kill -9 serve B"]


@pytest.mark.parametrize("fault", IN_TESTS)
async def test_the_split_deployment_loses_and_repeats_nothing_and_stays_bounded_through(
    fault: str, tmp_path: Path
) -> None:
    async with Deployment(tmp_path) as dep, Chaos(dep, OPTIONS) as chaos:
        outcome = await chaos.run(fault)
    print(outcome.row())  # the figures, with -s
    assert outcome.ok, outcome.row()
