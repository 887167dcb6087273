from __future__ import annotations

from mixer.merge.reorder import ReorderBuffer
from mixer.models import Post, Retraction
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
