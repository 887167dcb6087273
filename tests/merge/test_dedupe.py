"""One card per real post: the pure Deduper, and the merge stage applying it through Redis."""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any

import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from mixer.ingest.publish import Publisher
from mixer.keys import Keys
from mixer.merge.dedupe import Book, Changes, Deduper, FeedWrite, fingerprint
from mixer.merge.stage import MergeStage
from mixer.models import Author, Edit, Event, Retraction
from tests.helpers import FakeClock, feed_entries, make_post

CHATS = ("smbiz", "edchat", "journchat")

LONG = "Our bakery found most regulars through the Friday kids club"


def run(events: list[Event], book: Book | None = None, now_ms: int = 1_000_000) -> list[FeedWrite]:
    book = book if book is not None else Book()
    ids = (f"{now_ms}-{n}" for n in itertools.count())
    writes: list[FeedWrite] = []
    for event in events:
        writes += Deduper().apply(event, book, Changes(), lambda: next(ids), now_ms)
    return writes


def kinds(writes: list[FeedWrite]) -> list[tuple[str, Any]]:
    return [(kind, payload.get("key", payload.get("ids"))) for kind, _, payload in writes]


def test_a_boost_of_a_shown_post_is_not_shown_and_counts_on_the_original() -> None:
    original = make_post("x:1")
    boosts = [dataclasses.replace(make_post(f"x:{n}"), boost_of="x:1") for n in (2, 3)]
    writes = run([original, *boosts, boosts[0]])  # the first boost arrives twice
    assert kinds(writes) == [("p", "x:1"), ("u", "x:1"), ("u", "x:1")]
    assert writes[-1][2]["boosts"] == 2 and writes[-1][2]["id"] == writes[0][2]["id"]


def test_an_edit_updates_the_shown_post_under_its_feed_id() -> None:
    original = make_post("x:1", text="first words")
    edited = Edit(dataclasses.replace(original, text="better words"))
    writes = run([original, edited])
    assert kinds(writes) == [("p", "x:1"), ("u", "x:1")]
    assert writes[1][2]["text"] == "better words" and writes[1][2]["id"] == writes[0][2]["id"]


def test_a_retracted_post_is_retracted_and_never_comes_back() -> None:
    post = make_post("x:1")
    writes = run([post, Retraction("x:1", "x"), post, Edit(post), dataclasses.replace(post, chats=("edchat",))])
    assert kinds(writes) == [("p", "x:1"), ("r", [writes[0][2]["id"]])]


def test_a_retraction_before_the_post_keeps_it_off_the_feed() -> None:
    assert run([Retraction("x:1", "x"), make_post("x:1")]) == []


def test_the_same_text_by_the_same_author_on_another_network_adds_an_also_on_link() -> None:
    on_x = make_post("x:1", text=LONG + " #smbiz")
    on_mastodon = dataclasses.replace(
        make_post("mastodon:https://m.example/1", text=LONG + " https://t.co/x"),
        source="mastodon",
        author=Author("alice@m.example", "Alice"),
    )
    writes = run([on_x, on_mastodon])
    assert kinds(writes) == [("p", "x:1"), ("u", "x:1")]
    assert writes[1][2]["also_on"] == [{"source": "mastodon", "url": on_mastodon.url}]


def test_a_flood_of_the_same_text_from_many_accounts_collapses_into_one_card_with_a_count() -> None:
    flood = [
        dataclasses.replace(make_post(f"x:{n}", text=f"{LONG}!!"), author=Author(f"bot{n}", f"Bot {n}"))
        for n in range(5)
    ]
    writes = run(flood)
    assert kinds(writes) == [("p", "x:0")] + [("u", "x:0")] * 4
    assert writes[-1][2]["similar"] == 4


def test_short_common_answers_are_never_collapsed() -> None:
    answers = [
        dataclasses.replace(make_post(f"x:{n}", text="A1: yes!"), author=Author(f"u{n}", f"U {n}")) for n in range(3)
    ]
    assert [k for k, _ in kinds(run(answers))] == ["p", "p", "p"]
    assert fingerprint("A1: yes!") is None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["post", "edit", "retract", "boost"]), st.integers(0, 5), st.integers(0, 5)),
        max_size=40,
    )
)
def test_no_post_is_shown_twice_and_a_retracted_post_never_comes_back(script: list[tuple[str, int, int]]) -> None:
    events: list[Event] = []
    for action, n, m in script:
        post = make_post(f"x:{n}", text=f"words number {n} of the night")
        if action == "post":
            events.append(post)
        elif action == "edit":
            events.append(Edit(dataclasses.replace(post, text=f"edited {n}")))
        elif action == "retract":
            events.append(Retraction(post.key, "x"))
        else:
            events.append(dataclasses.replace(make_post(f"x:b{m}"), boost_of=post.key))
    writes = run(events)
    shown = [payload["key"] for kind, _, payload in writes if kind == "p"]
    assert len(shown) == len(set(shown))
    retracted: set[str] = set()
    for kind, _, payload in writes:
        if kind == "r":
            retracted.update(payload["keys"])
        elif payload.get("key") in retracted:
            raise AssertionError(f"{payload['key']} came back after its retraction")
    ids = [entry_id for _, entry_id, _ in writes]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))


async def test_the_merge_stage_remembers_across_a_restart(redis: aioredis.Redis, keys: Keys) -> None:
    pub = Publisher(redis, keys, CHATS, 1000)
    clock = FakeClock()
    await pub.publish([make_post("x:1")])
    first = MergeStage(redis, keys, CHATS, window=0, clock=clock)
    await first.load_cursors()
    await first.step(max_block=0.01)
    await pub.publish([dataclasses.replace(make_post("x:2"), boost_of="x:1"), Retraction("x:1", "x")])
    await pub.publish([make_post("x:1")])
    clock.now = time.time() + 1
    second = MergeStage(redis, keys, CHATS, window=0, clock=clock)
    await second.load_cursors()
    await second.step(max_block=0.01)
    entries = await feed_entries(redis, keys)
    assert [kind for kind, _ in entries] == ["p", "u", "r"]
    assert entries[1][1]["boosts"] == 1
    assert entries[2][1]["ids"] == [entries[0][1]["id"]]


def test_numbered_questions_and_answers_carry_their_number_and_role() -> None:
    writes = run([make_post("x:q", text="Q1: What brought you here? #smbiz"), make_post("x:a", text="A1. Curiosity")])
    assert [payload.get("qa") for _, _, payload in writes] == [{"role": "Q", "n": 1}, {"role": "A", "n": 1}]
    assert "qa" not in run([make_post("x:n", text="A1 steak sauce is great")])[0][2]
