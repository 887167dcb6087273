from __future__ import annotations

import heapq
import math
from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixer.merge.shaper import Shaper
from mixer.settings import DEFAULT_PROFILES, FULL, WALL, Profile

EPS = 1e-6


def offer_all(shaper: Shaper, chat: str, count: int, now: float, prefix: str = "") -> list[str]:
    ids = [f"{prefix or chat}-{i}" for i in range(count)]
    for item_id in ids:
        assert shaper.offer(item_id, (chat,), now)
    return ids


# -- profiles ---------------------------------------------------------------------------------------------------------


def test_default_profiles_are_a_readable_wall_and_an_unshaped_full_feed() -> None:
    assert (WALL.name, WALL.rate, WALL.burst, WALL.max_wait) == ("wall", 0.5, 3, 30.0)
    assert WALL.shaped and not FULL.shaped
    assert [p.name for p in DEFAULT_PROFILES] == ["wall", "full"]
    assert Profile("p", rate=math.inf).shaped is False


def test_profile_weights_are_normalised_read_only_and_default_to_one() -> None:
    profile = Profile("p", weights={"#SmBiz": 2})
    assert profile.weight("smbiz") == 2.0
    assert profile.weight("edchat") == 1.0
    with pytest.raises(TypeError):
        profile.weights["smbiz"] = 3.0  # type: ignore[index]
    assert profile == Profile("p", weights={"smbiz": 2.0})
    assert hash(profile) == hash(Profile("p", weights={"smbiz": 2.0}))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rate": -1.0}, "rate"),
        ({"rate": math.nan}, "rate"),
        ({"burst": 0}, "burst"),
        ({"burst": 1.5}, "burst"),
        ({"max_wait": 0.0}, "max_wait"),
        ({"max_queue": 0}, "max_queue"),
        ({"weights": {"smbiz": 0.0}}, "smbiz"),
        ({"weights": {"smbiz": math.inf}}, "smbiz"),
    ],
)
def test_profile_rejects_a_bad_value_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Profile("wall", **kwargs)  # type: ignore[arg-type]


def test_unshaped_profile_may_have_no_burst() -> None:
    assert not Profile("full", rate=0.0, burst=0).shaped


# -- pacing and burst -------------------------------------------------------------------------------------------------


def test_a_burst_leaves_at_once_then_one_post_every_two_seconds() -> None:
    shaper = Shaper(WALL)
    ids = offer_all(shaper, "smbiz", 6, now=0.0)
    assert shaper.take(0.0) == ids[:3]
    assert shaper.next_due(0.0) == 2.0
    assert shaper.take(1.99) == []
    assert shaper.take(2.0) == ids[3:4]
    assert shaper.next_due(2.0) == 4.0
    assert shaper.take(5.0) == ids[4:5]
    assert shaper.next_due(5.0) == 6.0  # the pace is kept, not restarted by a late take
    assert shaper.take(6.0) == ids[5:6]
    assert shaper.next_due(6.0) is None


def test_the_burst_refills_after_a_quiet_spell_but_never_beyond_its_size() -> None:
    shaper = Shaper(WALL)
    offer_all(shaper, "smbiz", 3, now=0.0, prefix="first")
    assert len(shaper.take(0.0)) == 3
    ids = offer_all(shaper, "smbiz", 5, now=25.0)
    assert shaper.take(25.0) == ids[:3]
    assert shaper.next_due(25.0) == 27.0


def test_next_due_is_now_while_the_pace_allows_and_none_when_nothing_waits() -> None:
    shaper = Shaper(WALL)
    assert shaper.next_due(10.0) is None
    shaper.offer("a", ("smbiz",), 10.0)
    assert shaper.next_due(10.0) == 10.0
    assert shaper.next_due(11.0) == 11.0


def test_a_clock_going_backwards_is_treated_as_standing_still() -> None:
    shaper = Shaper(Profile("p", rate=1.0, burst=1))
    offer_all(shaper, "smbiz", 3, now=100.0)
    assert len(shaper.take(100.0)) == 1
    assert shaper.take(50.0) == []  # not a refill, not a crash
    assert len(shaper.take(101.0)) == 1


def test_unshaped_profile_emits_everything_at_once_in_offer_order_and_never_drops() -> None:
    shaper = Shaper(FULL)
    for i in range(2000):
        shaper.offer(f"id-{i}", (("smbiz",), ("edchat", "smbiz"), ())[i % 3], float(i))
    assert shaper.next_due(5000.0) == 5000.0
    assert shaper.take(5000.0) == [f"id-{i}" for i in range(2000)]
    assert shaper.take(5000.0) == []
    assert shaper.next_due(5000.0) is None
    assert shaper.drain_drops() == {}


# -- fairness and weights ---------------------------------------------------------------------------------------------


def test_a_quiet_chat_is_not_drowned_by_a_loud_one() -> None:
    """Loud: 10 posts/s; quiet: one post every 5 s, under its fair half of 0.5 posts/s: all of it is shown."""
    shaper = Shaper(WALL)
    emitted: list[str] = []
    quiet = [f"quiet-{i}" for i in range(60)]
    for tick in range(3000):  # 300 s in steps of 0.1 s
        now = tick / 10
        shaper.offer(f"loud-{tick}", ("smbiz",), now)
        if tick % 50 == 0:
            shaper.offer(quiet[tick // 50], ("edchat",), now)
        emitted += shaper.take(now)
    shown = [i for i in emitted if i.startswith("quiet")]
    assert shown == quiet[: len(shown)] and len(shown) >= 59  # the last may still wait its turn
    assert len(emitted) <= 0.5 * 300 + 3
    drops = shaper.drain_drops()
    assert set(drops) == {"smbiz"} and drops["smbiz"] > 2000


def test_equal_chats_take_turns_one_post_each() -> None:
    shaper = Shaper(Profile("p", rate=100.0, burst=100))
    offer_all(shaper, "a", 5, 0.0)
    offer_all(shaper, "b", 5, 0.0)
    offer_all(shaper, "c", 2, 0.0)
    assert shaper.take(0.0) == ["a-0", "b-0", "c-0", "a-1", "b-1", "c-1", "a-2", "b-2", "a-3", "b-3", "a-4", "b-4"]


def test_weights_share_emissions_in_proportion() -> None:
    shaper = Shaper(Profile("p", rate=1.0, burst=1, max_wait=1000.0, weights={"smbiz": 3.0, "edchat": 0.5}))
    offer_all(shaper, "smbiz", 300, 0.0)
    offer_all(shaper, "edchat", 300, 0.0)
    offer_all(shaper, "journchat", 300, 0.0)
    emitted = [item for t in range(135) for item in shaper.take(float(t))]
    shares = Counter(item.split("-")[0] for item in emitted)
    assert (shares["smbiz"], shares["journchat"], shares["edchat"]) == (90, 30, 15)  # 6 : 2 : 1 in each round


def test_a_turn_spans_several_takes() -> None:
    shaper = Shaper(Profile("p", rate=1.0, burst=1, weights={"smbiz": 3.0}))
    offer_all(shaper, "smbiz", 4, 0.0)
    offer_all(shaper, "edchat", 4, 0.0)
    assert [shaper.take(float(t))[0] for t in range(5)] == ["smbiz-0", "smbiz-1", "smbiz-2", "edchat-0", "smbiz-3"]


def test_a_post_in_several_chats_waits_in_the_least_backlogged_and_is_emitted_once() -> None:
    shaper = Shaper(Profile("p", rate=1.0, burst=1))
    offer_all(shaper, "smbiz", 5, 0.0)
    assert shaper.offer("both", ("smbiz", "edchat"), 0.0)
    assert shaper.queue_of("both") == "edchat"
    assert shaper.offer("tie", ("journchat", "blogchat"), 0.0)
    assert shaper.queue_of("tie") == "journchat"  # ties go to the first chat of the post
    assert not shaper.offer("both", ("edchat",), 0.0)
    emitted = [item for t in range(20) for item in shaper.take(float(t))]
    assert sorted(emitted) == sorted({*emitted})
    assert emitted[:3] == ["smbiz-0", "both", "tie"]


# -- max wait, drops, removal -----------------------------------------------------------------------------------------


def test_posts_older_than_max_wait_are_dropped_oldest_first_and_counted_per_chat() -> None:
    dropped: list[str] = []
    shaper = Shaper(Profile("p", rate=0.5, burst=1, max_wait=10.0), on_drop=dropped.append)
    ids = offer_all(shaper, "smbiz", 10, 0.0)
    assert shaper.take(0.0) == ids[:1]
    assert shaper.take(10.0) == [ids[1]]  # waited exactly max_wait: still shown
    assert shaper.dropped("smbiz") == 0
    assert shaper.take(10.5) == []
    assert dropped == ids[2:]
    assert shaper.dropped("smbiz") == 8
    offer_all(shaper, "edchat", 2, 11.0)
    assert shaper.take(11.0) == []  # the pace allows the next one at 12 s
    assert shaper.take(12.0) == ["edchat-0"]
    assert shaper.take(22.0) == []  # edchat-1 has waited 11 s
    assert shaper.drain_drops() == {"smbiz": 8, "edchat": 1}
    assert shaper.drain_drops() == {}
    assert shaper.dropped("smbiz") == 0
    assert len(shaper) == 0 and shaper.next_due(22.0) is None


def test_a_dropped_post_in_several_chats_counts_in_each() -> None:
    shaper = Shaper(Profile("p", rate=0.1, burst=1, max_wait=5.0))
    shaper.offer("first", ("smbiz",), 0.0)
    shaper.offer("both", ("edchat", "smbiz"), 0.0)
    assert shaper.take(0.0) == ["first"]
    assert shaper.take(6.0) == []
    assert shaper.drain_drops() == {"edchat": 1, "smbiz": 1}
    assert shaper.counters["dropped"] == 1


def test_expired_posts_are_also_dropped_on_offer_so_memory_stays_bounded_without_takes() -> None:
    shaper = Shaper(Profile("p", rate=1.0, burst=1, max_wait=5.0))
    for t in range(100):
        shaper.offer(f"id-{t}", ("smbiz",), float(t))
        assert len(shaper) <= 6
    assert shaper.dropped("smbiz") == 94


def test_a_full_chat_queue_drops_its_own_oldest() -> None:
    dropped: list[str] = []
    shaper = Shaper(Profile("p", rate=1.0, burst=1, max_queue=3), on_drop=dropped.append)
    ids = offer_all(shaper, "smbiz", 5, 0.0)
    offer_all(shaper, "edchat", 2, 0.0)
    assert dropped == ids[:2]
    assert shaper.queued("smbiz") == 3 and shaper.queued("edchat") == 2
    assert shaper.drain_drops() == {"smbiz": 2}


def test_a_removed_post_is_never_emitted_nor_counted_as_dropped() -> None:
    shaper = Shaper(Profile("p", rate=1.0, burst=1, max_wait=3.0))
    ids = offer_all(shaper, "smbiz", 3, 0.0)
    assert shaper.remove(ids[1])
    assert not shaper.remove(ids[1])
    assert not shaper.remove("never-offered")
    assert ids[1] not in shaper
    assert shaper.take(0.0) == [ids[0]]
    assert not shaper.remove(ids[0])  # already emitted
    assert shaper.take(1.0) == [ids[2]]
    assert shaper.drain_drops() == {}
    assert shaper.counters["removed"] == 1


def test_a_chat_emptied_by_removal_leaves_the_rotation() -> None:
    shaper = Shaper(Profile("p", rate=10.0, burst=10))
    shaper.offer("a-0", ("a",), 0.0)
    offer_all(shaper, "b", 3, 0.0)
    shaper.remove("a-0")
    assert shaper.take(0.0) == ["b-0", "b-1", "b-2"]
    shaper.offer("a-1", ("a",), 0.0)
    assert shaper.take(0.0) == ["a-1"]


# -- properties -------------------------------------------------------------------------------------------------------

CHATS = ("a", "b", "c", "d", "e")


class Recorder:
    """Drives a Shaper like the stage would and records what it did, for the property checks."""

    def __init__(self, profile: Profile, chats: tuple[str, ...]) -> None:
        self.profile = profile
        self.chats = ("", *chats)
        self.dropped: list[str] = []
        self.shaper = Shaper(profile, on_drop=self.dropped.append)
        self.offered: dict[str, tuple[float, str, tuple[str, ...]]] = {}  # id -> (t, queue chat, chats)
        self.emitted: list[tuple[float, str]] = []
        self.removed: set[str] = set()
        self.counts: Counter[str] = Counter()  # emissions per queue chat
        self.trace: list[tuple[dict[str, int], dict[str, int]]] = []  # after each take: (counts, queued)
        self.drops: Counter[str] = Counter()
        self.now = 0.0

    def offer(self, chats: tuple[str, ...]) -> None:
        item_id = f"id-{len(self.offered)}"
        assert self.shaper.offer(item_id, chats, self.now)
        queue = self.shaper.queue_of(item_id)
        assert queue is not None and (queue in chats or queue == "")
        assert self.shaper.queued(queue) <= self.profile.max_queue
        self.offered[item_id] = (self.now, queue, chats)

    def take(self) -> None:
        for item_id in self.shaper.take(self.now):
            self.emitted.append((self.now, item_id))
            self.counts[self.offered[item_id][1]] += 1
        self.trace.append((dict(self.counts), {c: self.shaper.queued(c) for c in self.chats}))
        self.drops.update(self.shaper.drain_drops())

    def take_when_due(self, until: float) -> None:
        while (due := self.shaper.next_due(self.now)) is not None and due <= until:
            self.now = due
            self.take()
        self.now = until

    def check(self) -> None:
        """Every guarantee but fairness, over the whole run (the last call must have been a take)."""
        ids = [item_id for _, item_id in self.emitted]
        assert len(ids) == len(set(ids)), "an id was emitted twice"
        emitted, dropped = set(ids), set(self.dropped)
        assert len(dropped) == len(self.dropped), "an id was dropped twice"
        held = {item_id for item_id in self.offered if item_id in self.shaper}
        assert not emitted & dropped and not emitted & self.removed and not dropped & self.removed
        assert not held & (emitted | dropped | self.removed)
        assert emitted | dropped | self.removed | held == set(self.offered), "an id went missing"
        for item_id in held:
            assert self.now - self.offered[item_id][0] <= self.profile.max_wait
        for t, item_id in self.emitted:
            assert t - self.offered[item_id][0] <= self.profile.max_wait, "emitted after max_wait"
        expected = Counter(tag for i in self.dropped for tag in (self.offered[i][2] or ("",)))
        assert self.drops == expected
        # At most rate * (t_j - t_i) + burst emissions in any window [t_i, t_j]: with Y_k = k - rate * t_k,
        # that is Y_j - Y_i <= burst - 1 for every i <= j.
        lowest = math.inf
        for k, (t, _) in enumerate(self.emitted):
            y = k - self.profile.rate * t
            lowest = min(lowest, y)
            assert y - lowest <= self.profile.burst - 1 + EPS, "faster than the profile allows"

    def unfairness(self, i: str, j: str) -> float:
        """Largest |n_i/q_i - n_j/q_j| over any stretch of takes during which both chats stayed backlogged."""
        unit = min((1.0, *self.profile.weights.values()))
        qi, qj = self.profile.weight(i) / unit, self.profile.weight(j) / unit
        worst, low, high = 0.0, math.inf, -math.inf
        for counts, queued in self.trace:
            if not (queued[i] and queued[j]):
                low, high = math.inf, -math.inf
                continue
            x = counts.get(i, 0) / qi - counts.get(j, 0) / qj
            low, high = min(low, x), max(high, x)
            worst = max(worst, high - low)
        return worst

    def check_fair(self) -> None:
        """The weighted DRR bound of docs/shaping.md: < 1 + 1/q_i + 1/q_j, and <= 1 when both quanta are whole."""
        unit = min((1.0, *self.profile.weights.values()))
        for i in self.chats:
            for j in self.chats:
                if i < j:
                    qi, qj = self.profile.weight(i) / unit, self.profile.weight(j) / unit
                    bound = 1.0 if qi.is_integer() and qj.is_integer() else 1 + 1 / qi + 1 / qj
                    assert self.unfairness(i, j) <= bound + EPS, (i, j, qi, qj)


WEIGHTS = st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0])


@st.composite
def profiles(
    draw: st.DrawFn, chats: tuple[str, ...], equal: bool = False, max_queue: int | None = None, min_wait: float = 0.5
) -> Profile:
    return Profile(
        "p",
        rate=draw(st.floats(0.2, 5.0)),
        burst=draw(st.integers(1, 5)),
        max_wait=draw(st.floats(min_wait, 30.0)),
        weights={} if equal else {c: draw(WEIGHTS) for c in chats},
        max_queue=max_queue or draw(st.integers(1, 30)),
    )


KINDS = ("offer", "offer", "offer", "offer", "take", "take", "due", "remove", "again")


def steps(chats: tuple[str, ...]) -> st.SearchStrategy[tuple[str, float, tuple[str, ...], int]]:
    """One call in a schedule: mostly offers, bursty (dt often 0) and sometimes slow."""
    dt = st.one_of(st.just(0.0), st.floats(0.0, 0.3), st.floats(0.0, 4.0))
    post_chats = st.lists(st.sampled_from(chats), max_size=3, unique=True).map(tuple)
    return st.tuples(st.sampled_from(KINDS), dt, post_chats, st.integers(0, 10**6))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_any_arrival_schedule_keeps_every_guarantee(data: st.DataObject) -> None:
    chats = CHATS[: data.draw(st.integers(1, 5), label="chats")]
    rec = Recorder(data.draw(profiles(chats), label="profile"), chats)
    length = data.draw(st.integers(1, 250), label="length")  # lists alone would stay a few steps long
    schedule = data.draw(st.lists(steps(chats), min_size=length, max_size=length), label="schedule")
    for kind, dt, post_chats, pick in schedule:
        rec.now += dt
        if kind == "offer":
            rec.offer(post_chats)
        elif kind == "take":
            rec.take()
        elif kind == "due":
            rec.take_when_due(rec.now + 5.0)
        elif rec.offered:
            item_id = list(rec.offered)[pick % len(rec.offered)]
            if kind == "remove":
                was_held = item_id in rec.shaper
                assert rec.shaper.remove(item_id) == was_held
                if was_held:
                    rec.removed.add(item_id)
            elif item_id in rec.shaper:  # offered again while held: ignored
                assert not rec.shaper.offer(item_id, post_chats, rec.now)
    rec.take()
    rec.check()
    rec.check_fair()


@st.composite
def overloads(draw: st.DrawFn, equal: bool = False) -> tuple[Recorder, list[tuple[float, int, tuple[str, ...]]]]:
    """Every chat posting faster than the whole profile's rate, for a few minutes of virtual time."""
    chats = CHATS[: draw(st.integers(2, 5))]
    profile = draw(profiles(chats, equal=equal, max_queue=10_000, min_wait=10.0))
    arrivals: list[tuple[float, int, tuple[str, ...]]] = []
    for n, chat in enumerate(chats):
        gap = 1 / (profile.rate * draw(st.floats(2.0, 6.0)))
        start = draw(st.floats(0.0, 3.0))
        arrivals += [(start + k * gap, n, (chat,)) for k in range(int(120 / gap))]
    heapq.heapify(arrivals)
    return Recorder(profile, chats), [heapq.heappop(arrivals) for _ in range(len(arrivals))]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(overloads())
def test_under_sustained_overload_each_chat_gets_its_weighted_share(
    case: tuple[Recorder, list[tuple[float, int, tuple[str, ...]]]],
) -> None:
    rec, arrivals = case
    for t, _, chats in arrivals:
        rec.take_when_due(t)
        rec.offer(chats)
        rec.take()
    rec.check()
    rec.check_fair()
    assert len(rec.emitted) >= rec.profile.rate * 100  # overloaded: the pace is used, not wasted


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(overloads(equal=True))
def test_with_equal_weights_backlogged_chats_stay_within_one_post_of_each_other(
    case: tuple[Recorder, list[tuple[float, int, tuple[str, ...]]]],
) -> None:
    rec, arrivals = case
    for t, _, chats in arrivals:
        rec.take_when_due(t)
        rec.offer(chats)
        rec.take()
    for i in rec.chats:
        for j in rec.chats:
            if i < j:
                assert rec.unfairness(i, j) <= 1


def test_counters_and_unheld_tell_what_became_of_each_id() -> None:
    shaper = Shaper(WALL)
    ids = offer_all(shaper, "smbiz", 5, now=0.0)
    assert not shaper.offer(ids[0], ("smbiz",), 0.0)
    assert shaper.take(0.0) == ids[:3]
    assert shaper.remove(ids[3])
    assert shaper.unheld({*ids, "never"}) == {*ids[:4], "never"}
    assert shaper.counters == Counter(offered=5, duplicate=1, emitted=3, removed=1)
    shaper.counters["offered"] = 0  # a copy: the shaper's own counts stay
    assert shaper.counters["offered"] == 5


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_offer_skipping_the_expiry_check_decides_as_checking_on_every_offer(data: st.DataObject) -> None:
    chats = CHATS[: data.draw(st.integers(1, 5), label="chats")]
    # A short max_wait, small steps of the clock and few takes: offers often find the oldest ids just expired
    profile = replace(data.draw(profiles(chats), label="profile"), max_wait=data.draw(st.floats(0.5, 1.5)))
    step = st.tuples(
        st.sampled_from(("offer",) * 6 + ("again", "remove", "take")),
        st.floats(-0.2, 0.6),  # now and then the clock goes back
        st.lists(st.sampled_from(chats), max_size=3, unique=True).map(tuple),
        st.integers(0, 10**6),
    )
    fast_drops: list[str] = []
    plain_drops: list[str] = []
    fast, plain = Shaper(profile, on_drop=fast_drops.append), Shaper(profile, on_drop=plain_drops.append)
    now, offered = 0.0, 0
    for kind, dt, post_chats, pick in data.draw(st.lists(step, max_size=150), label="schedule"):
        now += dt
        if kind in ("offer", "again"):
            item_id = f"id-{pick % (offered + 1)}" if kind == "again" else f"id-{offered}"
            offered += kind == "offer"
            plain._oldest = -math.inf  # the plain path: every offer looks at the oldest held id
            assert fast.offer(item_id, post_chats, now) == plain.offer(item_id, post_chats, now)
            assert fast.queue_of(item_id) == plain.queue_of(item_id)
        elif kind == "remove":
            item_id = f"id-{pick % (offered + 1)}"
            assert fast.remove(item_id) == plain.remove(item_id)
        else:
            assert fast.next_due(now) == plain.next_due(now)
            assert fast.take(now) == plain.take(now)
        assert fast_drops == plain_drops and fast.counters == plain.counters and len(fast) == len(plain)
        assert fast.drain_drops() == plain.drain_drops()
