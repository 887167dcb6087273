from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mixer.merge.reorder import LATE_FOR_MS, ReorderBuffer, event_chats, hold_key, post_key
from mixer.models import Edit, Event, Post, Retraction
from mixer.streams import id_before, id_key
from tests.helpers import make_post


def test_reorder_buffer_releases_the_oldest_when_over_capacity() -> None:
    buf = ReorderBuffer(window_ms=60_000, max_pending=2)
    for i, key in enumerate(["a", "b", "c"]):
        buf.add("smbiz", f"1000-{i}", make_post(key))
    assert [p.event.key for p in buf.pop_ready(watermark=1000)] == ["a"]
    assert buf.safe_cursor("smbiz", "1000-2") == "1000-0"


def test_reorder_buffer_waits_for_the_watermark_not_the_clock() -> None:
    buf = ReorderBuffer(window_ms=500)
    buf.add("smbiz", "10000-0", make_post("a", created=5))
    buf.add("edchat", "10001-0", make_post("a", ("edchat",), created=5))
    buf.add("edchat", "10002-0", make_post("b", ("edchat",), created=4))
    assert buf.next_due() == 10_500
    assert buf.pop_ready(watermark=10_499) == []
    released = buf.pop_ready(watermark=10_502)
    assert [(p.event.key, p.event.chats) for p in released] == [("b", ("edchat",)), ("a", ("smbiz", "edchat"))]
    assert len(buf) == 0 and buf.safe_cursor("edchat", "10002-0") == "10002-0"


def test_a_retraction_written_to_every_chat_stream_is_held_once() -> None:
    buf = ReorderBuffer(window_ms=0)
    for i, chat in enumerate(["smbiz", "edchat", "journchat"]):
        buf.add(chat, f"2000-{i}", Retraction("x:9", "x"))
    [held] = buf.pop_ready(watermark=3000)
    assert held.event == Retraction("x:9", "x") and len(held.entries) == 3


def test_posts_leave_by_creation_time_and_edits_by_arrival() -> None:
    buf = ReorderBuffer(window_ms=0)
    buf.add("smbiz", "5000-0", make_post("late", created=4000))
    buf.add("smbiz", "5000-1", make_post("early", created=1000))
    released = buf.pop_ready(watermark=6000)
    assert [p.event.key for p in released if isinstance(p.event, Post)] == ["early", "late"]


# The release rule with no fixed floor (docs/architecture.md "The reorder rule"): a buffer started at 0 that has
# finished learning (learn_ms=0) holds an event only while the watermark is behind it, or the window in a late chat.


def learned(window_ms: int = 500) -> ReorderBuffer:
    return ReorderBuffer(window_ms=window_ms, started_ms=0, learn_ms=0)


def test_a_post_leaves_as_soon_as_the_watermark_passes_it_when_no_chat_is_late() -> None:
    buf = learned()
    buf.add("smbiz", "10000-0", make_post("a"))
    assert buf.next_due() == 10_000
    assert buf.pop_ready(watermark=9_999) == []  # a chat stream not yet read past it could still send a twin
    assert [p.event.key for p in buf.pop_ready(watermark=10_000)] == ["a"]


def test_every_chat_counts_as_late_while_the_buffer_learns() -> None:
    buf = ReorderBuffer(window_ms=500, started_ms=10_000, learn_ms=5_000)
    buf.add("smbiz", "12000-0", make_post("a"))
    buf.add("smbiz", "15000-0", make_post("b"))  # learning is over: due at its stamp
    assert buf.pop_ready(watermark=12_499) == []
    assert [p.event.key for p in buf.pop_ready(watermark=12_500)] == ["a"]
    assert buf.next_due() == 15_000


def test_copies_of_one_publish_make_no_chat_late() -> None:
    buf = learned()
    post = make_post("a", ("smbiz", "edchat"))
    buf.add("smbiz", "10000-0", post)
    buf.add("edchat", "10000-0", post)
    assert buf.late_chats(10_000) == []
    [held] = buf.pop_ready(watermark=10_000)
    assert held.event.chats == ("smbiz", "edchat") and len(held.entries) == 2


def test_a_twin_bringing_a_new_chat_holds_its_post_the_window() -> None:
    buf = learned()
    buf.add("smbiz", "10000-0", make_post("a", ("smbiz",)))
    buf.add("edchat", "10003-0", make_post("a", ("edchat",)))  # another follower saw it 3 ms later
    assert buf.late_chats(10_003) == ["edchat", "smbiz"]
    assert buf.pop_ready(watermark=10_499) == []
    [held] = buf.pop_ready(watermark=10_500)
    assert held.event.chats == ("smbiz", "edchat")


def test_a_twin_after_release_makes_its_chats_late_and_only_them() -> None:
    buf = learned()
    buf.add("smbiz", "10000-0", make_post("a", ("smbiz",)))
    assert [p.event.key for p in buf.pop_ready(watermark=10_000)] == ["a"]
    buf.add("edchat", "10200-0", make_post("a", ("edchat",)))  # too late to join: it proves edchat late
    buf.pop_ready(watermark=10_700)
    buf.add("smbiz", "11000-0", make_post("b", ("smbiz",)))
    buf.add("journchat", "11000-0", make_post("c", ("journchat",)))
    assert [p.event.key for p in buf.pop_ready(watermark=11_000)] == ["c"]  # journchat was never late
    assert [p.event.key for p in buf.pop_ready(watermark=11_500)] == ["b"]


def test_a_chat_is_late_only_for_late_for_ms_after_its_last_union_twin() -> None:
    buf = ReorderBuffer(window_ms=500, started_ms=0, learn_ms=0, late_for_ms=60_000)
    buf.add("smbiz", "10000-0", make_post("a", ("smbiz",)))
    buf.add("edchat", "10100-0", make_post("a", ("edchat",)))
    assert buf.late_chats(70_099) == ["edchat", "smbiz"] and buf.late_chats(70_100) == []
    buf.pop_ready(watermark=10_600)
    buf.add("smbiz", "70100-0", make_post("b", ("smbiz",)))
    assert [p.event.key for p in buf.pop_ready(watermark=70_100)] == ["b"]


def test_an_edit_never_leaves_before_its_held_post() -> None:
    buf = learned()
    buf.add("smbiz", "5000-0", make_post("p", ("smbiz",), created=4_000))
    buf.add("smbiz", "5001-0", Edit(make_post("p", ("smbiz",), created=4_000, text="edited")))
    buf.add("edchat", "5002-0", make_post("p", ("edchat",), created=4_000))  # a union twin: p now waits the window
    assert buf.pop_ready(watermark=5_100) == []  # the edit was due at 5001, but its post is still held
    released = buf.pop_ready(watermark=5_500)
    assert [type(p.event).__name__ for p in released] == ["Post", "Edit"]


def test_an_edit_held_after_an_earlier_one_never_leaves_first() -> None:
    buf = learned()
    buf.add("edchat", "1000-0", make_post("q", ("smbiz",)))
    buf.add("smbiz", "1001-0", make_post("q", ("edchat",)))  # smbiz and edchat are late now
    buf.pop_ready(watermark=1_501)
    buf.add("edchat", "2000-0", Edit(make_post("p", ("edchat",), text="first")))  # due 2500
    buf.add("smbiz", "2001-0", Edit(make_post("p", ("journchat",), text="second")))  # journchat is on time
    assert buf.pop_ready(watermark=2_001) == []
    released = buf.pop_ready(watermark=2_500)
    assert [p.event.post.text for p in released if isinstance(p.event, Edit)] == ["first", "second"]


def test_a_retraction_naming_no_chat_waits_the_window_while_any_chat_is_late() -> None:
    buf = learned()
    buf.add("smbiz", "1000-0", make_post("q", ("smbiz",)))
    buf.add("edchat", "1001-0", make_post("q", ("edchat",)))
    buf.pop_ready(watermark=1_501)
    buf.add("journchat", "2000-0", Retraction("x:9", "x"))
    assert buf.pop_ready(watermark=2_499) == []
    assert [p.event for p in buf.pop_ready(watermark=2_500)] == [Retraction("x:9", "x")]


def test_a_chat_keeps_its_stream_order_when_its_hold_drops_to_nothing() -> None:
    # learning ended between two posts of one chat: the newer one (hold 0) used to leave before the older (window)
    buf = ReorderBuffer(500, started_ms=0)
    buf.add("smbiz", "4900-0", make_post("a", ("smbiz",), created=4_900))
    buf.add("smbiz", "5100-0", make_post("b", ("smbiz",), created=5_100))
    buf.add("edchat", "5100-0", make_post("c", ("edchat",), created=5_100))  # another chat is not held by it
    assert [p.event.key for p in buf.pop_ready(watermark=5_200)] == ["c"]
    assert [p.event.key for p in buf.pop_ready(watermark=5_400)] == ["a", "b"]


class PlainBuffer:
    """The release rule as first written, with nothing made faster: what ``ReorderBuffer`` must match."""

    def __init__(self, window_ms: int, max_pending: int, started_ms: int | None, learn_ms: int, late_for: int) -> None:
        self.window_ms, self.max_pending, self.started, self.learn_ms = window_ms, max_pending, started_ms, learn_ms
        self.late_for = late_for
        self.held: dict[str, list[Any]] = {}  # hold key -> [event, stamp, entries, due, post key]
        self.late_until: dict[str, int] = {}
        self.released: dict[str, tuple[str, ...]] = {}
        self.arrived = 0
        self.stream_due: dict[str, int] = {}  # the latest due given to an event read from each chat stream

    def hold(self, chats: tuple[str, ...], stamp: int) -> int:
        if self.started is None or stamp < self.started + self.learn_ms:
            return self.window_ms
        late = [c for c, until in self.late_until.items() if until > stamp]
        return self.window_ms if late and (not chats or any(c in late for c in chats)) else 0

    def add(self, chat: str, entry_id: str, event: Event) -> None:
        stamp = int(entry_id.split("-")[0])
        key = hold_key(event, entry_id)
        held = self.held.get(key)
        if isinstance(event, Post):
            known = held[0].chats if held is not None and isinstance(held[0], Post) else self.released.get(event.key)
            if known is not None and set(event.chats) - set(known):
                for c in known + event.chats:
                    self.late_until[c] = max(self.late_until.get(c, -1), stamp + self.late_for)
        if held is None:
            pkey = post_key(event)
            due = max(stamp + self.hold(event_chats(event), stamp), self.stream_due.get(chat, -1))
            if not isinstance(event, Post):
                due = max([due] + [h[3] for h in self.held.values() if h[4] == pkey])
            self.arrived += 1
            self.held[key] = [event, stamp, [(chat, entry_id)], due, pkey, self.arrived]
            self.stream_due[chat] = max(self.stream_due.get(chat, -1), due)
            return
        held[2].append((chat, entry_id))
        self.stream_due[chat] = max(self.stream_due.get(chat, -1), held[3])
        if isinstance(held[0], Post) and isinstance(event, Post):
            extra = tuple(c for c in event.chats if c not in held[0].chats)
            if extra:
                held[0] = held[0].with_chats(held[0].chats + extra)
                due = held[1] + self.hold(held[0].chats, held[1])
                if due > held[3]:
                    held[3], self.arrived = due, self.arrived + 1
                    held[5] = self.arrived
                    for c, _ in held[2]:
                        self.stream_due[c] = max(self.stream_due.get(c, -1), due)

    def pop_ready(self, watermark: int) -> list[tuple[Event, int, list[tuple[str, str]], int]]:
        if self.started is None:
            self.started = watermark
        out = []
        while self.held:
            key = min(self.held, key=lambda k: (self.held[k][3], self.held[k][5]))
            held = self.held[key]
            if held[3] > watermark and len(self.held) <= self.max_pending:
                break
            post = self.held.get(held[4])
            if not isinstance(held[0], Post) and post is not None and len(self.held) <= self.max_pending:
                held[3], self.arrived = max(held[3], post[3]), self.arrived + 1
                held[5] = self.arrived  # scheduled again: behind every event already due with it
                for c, _ in held[2]:
                    self.stream_due[c] = max(self.stream_due.get(c, -1), held[3])
                continue
            del self.held[key]
            if isinstance(held[0], Post):
                self.released[held[4]] = held[0].chats
            out.append(held)
        out.sort(key=lambda h: (h[0].created, h[4]) if isinstance(h[0], Post) else (h[1], h[4]))
        return [(h[0], h[1], h[2], h[3]) for h in out]

    def safe_cursor(self, chat: str, read_cursor: str) -> str:
        ids = [entry_id for h in self.held.values() for c, entry_id in h[2] if c == chat]
        return id_before(min(ids, key=id_key)) if ids else read_cursor


_CHATS = ("smbiz", "edchat", "journchat")
_EVENT = st.one_of(
    st.builds(
        lambda key, chats, created: make_post(key, tuple(chats), created=created),
        st.sampled_from("abcd"),
        st.lists(st.sampled_from(_CHATS), min_size=1, max_size=3, unique=True),
        st.integers(0, 3),
    ),
    st.builds(
        lambda key, chat: Edit(make_post(key, (chat,), text="edited")), st.sampled_from("abcd"), st.sampled_from(_CHATS)
    ),
    st.builds(
        lambda key, chats: Retraction(key, "x", tuple(chats)),
        st.sampled_from("abcd"),
        st.lists(st.sampled_from(_CHATS), max_size=2, unique=True),
    ),
)
_STEP = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(_CHATS), st.sampled_from([0, 1, 50, 100, 400]), _EVENT),
    st.tuples(st.just("pop"), st.sampled_from([0, 1, 50, 100, 400])),
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(_STEP, max_size=40),
    st.sampled_from([0, 100, 500]),
    st.integers(1, 6),
    st.sampled_from([None, 0, 1000]),
    st.sampled_from([0, 300, 5000]),
    st.sampled_from([LATE_FOR_MS, 50, 400]),
)
def test_the_buffer_releases_what_the_plain_rule_does_in_its_order(
    steps: list[Any], window_ms: int, max_pending: int, started_ms: int | None, learn_ms: int, late_for: int
) -> None:
    buf = ReorderBuffer(window_ms, max_pending, started_ms=started_ms, learn_ms=learn_ms, late_for_ms=late_for)
    plain = PlainBuffer(window_ms, max_pending, started_ms, learn_ms, late_for)
    stamps = dict.fromkeys(_CHATS, 1000)
    seqs = dict.fromkeys(_CHATS, 0)
    watermark = 0
    for step in steps:
        if step[0] == "add":
            _, chat, gap, event = step
            stamps[chat] += gap
            seqs[chat] += 1
            entry_id = f"{stamps[chat]}-{seqs[chat]}"
            buf.add(chat, entry_id, event)
            plain.add(chat, entry_id, event)
        else:
            watermark += step[1]
            got = [(p.event, p.stamp, p.entries, p.due) for p in buf.pop_ready(watermark)]
            assert got == plain.pop_ready(watermark)
            assert buf.late_chats(watermark) == sorted(c for c, until in plain.late_until.items() if until > watermark)
        for chat in _CHATS:
            assert buf.safe_cursor(chat, "0-0") == plain.safe_cursor(chat, "0-0")
        assert len(buf) == len(plain.held)


def test_a_limited_release_takes_the_earliest_due_and_leaves_the_rest_held() -> None:
    buf = ReorderBuffer(window_ms=0, started_ms=0, learn_ms=0)
    for i, key in enumerate("dcba"):  # due by stamp: d first; released in time order (created) within a call
        buf.add("smbiz", f"{1000 + i}-0", make_post(key, created=10 - i))
    assert [p.event.key for p in buf.pop_ready(watermark=5000, limit=3)] == ["b", "c", "d"]
    assert len(buf) == 1 and buf.safe_cursor("smbiz", "1003-0") == "1002-18446744073709551615"
    assert [p.event.key for p in buf.pop_ready(watermark=5000, limit=3)] == ["a"]
