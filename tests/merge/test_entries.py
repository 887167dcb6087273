"""A chat-stream entry decoded once for all its copies, and a batch's feed writes as the script's one argument."""

from __future__ import annotations

import pytest

from mixer.codec import EDIT_FIELD, FIELD, RETRACT_FIELD, pack, pack_post
from mixer.merge.dedupe import Changes
from mixer.merge.entries import Twins, batch_write, decode_event
from mixer.models import LIMITS, trimmed
from tests.helpers import make_post


def test_twins_give_a_copy_the_post_its_bytes_decode_to() -> None:
    twins = Twins()
    raw = pack_post(make_post("x:1", ("smbiz", "edchat")))
    post = twins.decode(FIELD, raw)
    assert twins.events == {raw: post} and post == decode_event(FIELD, raw)
    twins.read("smbiz", 1000)
    twins.forget(1000)  # not yet passed: a copy may still come
    assert raw in twins.events
    twins.forget(1001)
    assert twins.events == {}


def test_twins_keep_no_edit_retraction_bad_entry_or_post_with_a_cut() -> None:
    twins = Twins()
    edit, retraction = pack_post(make_post("x:1")), pack({"key": "x:1", "source": "x"})
    assert twins.decode(EDIT_FIELD, edit) == decode_event(EDIT_FIELD, edit)
    assert twins.decode(RETRACT_FIELD, retraction) == decode_event(RETRACT_FIELD, retraction)
    with pytest.raises(ValueError):
        twins.decode(FIELD, b"\xc1 not msgpack")
    long = make_post("x:2").to_dict()
    long["text"] = "w" * (LIMITS.text + 1)
    del long["id"]
    before = trimmed["text_cut"]
    cut = twins.decode(FIELD, pack(long))
    assert cut == decode_event(FIELD, pack(long)) and trimmed["text_cut"] == before + 2  # each copy counts its cut
    assert twins.events == {}


def test_a_new_post_is_written_to_the_feed_without_its_id_and_to_the_index_with_it() -> None:
    item = {"id": "5-0", "key": "x:1", "chats": ["smbiz"], "text": "hi"}
    changes = Changes(posts={"x:1": item})
    feed, index, *_ = batch_write([("p", "5-0", item), ("u", "6-0", item)], changes)
    assert feed == [["5-0", FIELD, pack({k: v for k, v in item.items() if k != "id"})], ["6-0", b"u", pack(item)]]
    assert index == ["x:1", pack(item)] and "id" in item
