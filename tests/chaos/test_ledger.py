"""The fault suite's own arithmetic (no processes): what it calls lost, and what it calls a gap on a screen."""

from __future__ import annotations

from typing import Any

from mixer.keys import Keys
from tests.chaos.ledger import Ledger, Screen


def _ledger(inputs: set[str]) -> Ledger:
    redis: Any = None  # holes() reads no Redis
    return Ledger(redis, Keys("t"), ("c",), inputs=inputs, recording=["a", "b", "c", "b", "d"])


def test_a_replay_pass_published_as_a_prefix_of_its_file_has_no_holes() -> None:
    assert _ledger({"a", "b", "a~1"}).holes() == []  # pass 0 up to b, pass 1 up to a
    assert _ledger({"a", "b", "c", "d", "a~2", "b~2"}).holes() == []


def test_a_key_the_ingest_skipped_before_one_it_published_is_a_hole_in_its_pass() -> None:
    assert _ledger({"a", "c"}).holes() == ["b"]
    assert _ledger({"a", "b", "c", "d", "a~1", "d~1"}).holes() == ["b~1", "c~1"]
    assert _ledger({"a~r7.0", "b~r7.0", "c~r7.0", "a~r7.1", "c~r7.1"}).holes() == ["b~r7.1"]  # a run-tagged replay


def test_a_screen_missing_a_card_or_behind_the_feed_has_a_gap_and_a_reset_starts_afresh() -> None:
    feed = ["1-0", "2-0", "3-0", "4-0", "5-0", "6-0", "7-0"]
    screen = Screen("s", [], "1-0")
    screen.segments = [["2-0", "4-0"]]
    assert screen.gaps(feed[:4]) == 1  # 3-0
    assert screen.gaps(feed) == 4  # and 5-0, 6-0, 7-0: it is behind
    screen.segments.append(["6-0", "7-0"])
    screen.starts.append("5-0")  # told reset with cursor 5-0: nothing between 4-0 and 5-0 is owed
    assert screen.gaps(feed) == 1
    screen.segments[0] = ["2-0", "3-0", "4-0"]
    assert screen.gaps(feed) == 0
