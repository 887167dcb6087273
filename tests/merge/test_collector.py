"""The merge stage's collector settings: applied inside, the process's own restored after."""

from __future__ import annotations

import gc

from mixer.merge.collector import GEN0, throughput_collector


def test_inside_young_collections_are_rarer_and_start_up_objects_frozen_then_all_is_restored() -> None:
    before = gc.get_threshold()
    with throughput_collector():
        assert gc.get_threshold() == (GEN0, *before[1:])
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_a_failure_inside_still_restores_the_collector() -> None:
    before = gc.get_threshold()
    try:
        with throughput_collector(gen0=5_000):
            assert gc.get_threshold()[0] == 5_000
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_overlapping_entries_leaving_in_any_order_restore_the_collector_only_when_the_last_leaves() -> None:
    before = gc.get_threshold()
    first, second = throughput_collector(), throughput_collector()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first to enter leaves first: the other stage still runs
    assert gc.get_threshold()[0] == GEN0
    assert gc.get_freeze_count() > 0
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
