"""The fault suite as tests (marker ``chaos``): each fault in turn on one split deployment of real processes on a
throwaway Redis with AOF, under steady load, as ``scripts/chaos`` runs them; after each, the checks of
tests/chaos/harness.py (docs/reliability.md). The deployment is started once for the module: a fault is applied
to whatever the faults before it left, and each test still makes every check (lost and twice over every input
key since the start, each screen gap-free since it started, RSS over its own fault, roles that died during it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.chaos.deploy import Deployment
from tests.chaos.harness import FAULTS, Chaos, Options

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(150), pytest.mark.asyncio(loop_scope="module")]

# A shorter outage than the script's 30 s, so the group stays within a few minutes.
OPTIONS = Options(outage_s=5, release_s=30)
# Both replicas are the same program: the script kills each, the tests one.
IN_TESTS = [name for name in FAULTS if name != "kill -9 serve B"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chaos(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Chaos]:
    async with Deployment(tmp_path_factory.mktemp("chaos")) as dep, Chaos(dep, OPTIONS) as running:
        yield running


@pytest.mark.parametrize("fault", IN_TESTS)
async def test_the_split_deployment_loses_and_repeats_nothing_and_stays_bounded_through(
    fault: str, chaos: Chaos
) -> None:
    outcome = await chaos.run(fault)
    print(outcome.row())  # the figures, with -s
    assert outcome.ok, outcome.row()
