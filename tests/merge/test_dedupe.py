"""One card per real post: the pure Deduper, and the merge stage applying it through Redis."""

from __future__ import annotations

import hashlib
import itertools
import json
import time
import unicodedata
from typing import Any

import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from mixer.ingest.hashtags import ChatMatcher
from mixer.ingest.publish import Publisher
from mixer.ingest.sources.x_v1 import parse_v1
from mixer.keys import Keys
from mixer.merge import dedupe
from mixer.merge.dedupe import Book, Changes, Deduper, FeedWrite, fingerprint
from mixer.merge.stage import MergeStage
from mixer.models import Author, Edit, Event, Post, Retraction
from tests.helpers import FIXTURES, FakeClock, feed_entries, make_post

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
    boosts = [make_post(f"x:{n}").replace(boost_of="x:1") for n in (2, 3)]
    writes = run([original, *boosts, boosts[0]])  # the first boost arrives twice
    assert kinds(writes) == [("p", "x:1"), ("u", "x:1"), ("u", "x:1")]
    assert writes[-1][2]["boosts"] == 2 and writes[-1][2]["id"] == writes[0][2]["id"]


def test_an_edit_updates_the_shown_post_under_its_feed_id() -> None:
    original = make_post("x:1", text="first words")
    edited = Edit(original.replace(text="better words"))
    writes = run([original, edited])
    assert kinds(writes) == [("p", "x:1"), ("u", "x:1")]
    assert writes[1][2]["text"] == "better words" and writes[1][2]["id"] == writes[0][2]["id"]


def test_an_edit_with_a_resolved_author_updates_the_card_without_marking_it_edited() -> None:
    original = make_post("bluesky:at://did:plc:a/app.bsky.feed.post/1").replace(author=Author("did:plc:a", ""))
    resolved = Author("alice.bsky.social", "Alice", "https://cdn.bsky.app/img/avatar/plain/did:plc:a/c@jpeg")
    writes = run([original, Edit(original.replace(author=resolved, at=original.at + 5))])
    assert kinds(writes) == [("p", original.key), ("u", original.key)]
    update = writes[1][2]
    assert update["author"] == resolved.to_dict() and update["id"] == writes[0][2]["id"]
    assert "edited" not in update  # its words did not change: not an edit for the transcript or the screens


def test_an_edit_from_a_payload_without_the_profile_keeps_the_resolved_author() -> None:
    resolved = Author("alice.bsky.social", "Alice", "https://cdn.bsky.app/img/avatar/plain/did:plc:a/c@jpeg")
    original = make_post("bluesky:at://did:plc:a/app.bsky.feed.post/1").replace(author=resolved)
    bare = original.replace(author=Author("did:plc:a", ""), text="new words", at=original.at + 5)
    writes = run([original, Edit(bare)])
    update = writes[1][2]
    assert update["text"] == "new words" and update["author"] == resolved.to_dict()


def test_an_edit_that_adds_a_quote_is_an_edit_with_the_quote() -> None:
    original = make_post("x:1", text="look at this")
    quoting = original.replace(quote_of="x:2", quote_url="https://x.com/b/status/2", at=original.at + 5)
    update = run([original, Edit(quoting)])[1][2]
    assert (update["quote_of"], update["quote_url"], update["edited"]) == (
        "x:2",
        "https://x.com/b/status/2",
        quoting.at,
    )


def test_an_edit_of_the_words_is_marked_edited() -> None:
    original = make_post("x:1", text="first words")
    writes = run([original, Edit(original.replace(text="better words", at=original.at + 5))])
    assert writes[1][2]["edited"] == original.at + 5


def test_a_retracted_post_is_retracted_and_never_comes_back() -> None:
    post = make_post("x:1")
    writes = run([post, Retraction("x:1", "x"), post, Edit(post), post.replace(chats=("edchat",))])
    assert kinds(writes) == [("p", "x:1"), ("r", [writes[0][2]["id"]])]


def test_a_retraction_before_the_post_keeps_it_off_the_feed() -> None:
    assert run([Retraction("x:1", "x"), make_post("x:1")]) == []


def retweet_events() -> tuple[Post, Post]:
    """A real v1.1 retweet as the X parser gives it: the original, then the retweet ("RT @...", boost_of)."""
    payload = json.loads((FIXTURES / "x-v1" / "original" / "classic_no_hidden" / "retweet.json").read_text())
    original, retweet = (e.with_chats(("smbiz",)) for e in parse_v1(payload, ChatMatcher(None), 1_000_000))
    assert isinstance(original, Post) and isinstance(retweet, Post) and retweet.boost_of == original.key
    return original, retweet


def test_a_retweet_arriving_after_its_original_was_deleted_does_not_bring_the_text_back() -> None:
    original, retweet = retweet_events()
    book, changes = Book(), Changes()
    ids = (f"1000000-{n}" for n in itertools.count())
    writes: list[FeedWrite] = []
    later = [original, retweet, Edit(original), original]  # the retweet's payload carries its original, then repeats
    for event in [original, Retraction(original.key, "x"), *later]:
        writes += Deduper().apply(event, book, changes, lambda: next(ids), 1_000_000)
    assert kinds(writes) == [("p", original.key), ("r", [writes[0][2]["id"]])]
    assert changes.dropped == {"retracted": 2, "boost_of_retracted": 1, "edit_of_retracted": 1}
    assert run([Retraction(original.key, "x"), retweet]) == []  # a retweet alone (no original included)


def test_the_same_text_by_the_same_author_on_another_network_adds_an_also_on_link() -> None:
    on_x = make_post("x:1", text=LONG + " #smbiz")
    on_mastodon = make_post("mastodon:https://m.example/1", text=LONG + " https://t.co/x").replace(
        source="mastodon",
        author=Author("alice@m.example", "Alice"),
    )
    writes = run([on_x, on_mastodon])
    assert kinds(writes) == [("p", "x:1"), ("u", "x:1")]
    assert writes[1][2]["also_on"] == [{"source": "mastodon", "url": on_mastodon.url}]


def test_a_flood_of_the_same_text_from_many_accounts_collapses_into_one_card_with_a_count() -> None:
    flood = [make_post(f"x:{n}", text=f"{LONG}!!").replace(author=Author(f"bot{n}", f"Bot {n}")) for n in range(5)]
    writes = run(flood)
    assert kinds(writes) == [("p", "x:0")] + [("u", "x:0")] * 4
    assert writes[-1][2]["similar"] == 4


def test_short_common_answers_are_never_collapsed() -> None:
    answers = [make_post(f"x:{n}", text="A1: yes!").replace(author=Author(f"u{n}", f"U {n}")) for n in range(3)]
    assert [k for k, _ in kinds(run(answers))] == ["p", "p", "p"]
    assert fingerprint("A1: yes!") is None


def plain_fingerprint(text: str) -> str | None:
    """The fingerprint as first written (three regex passes, always): what the fast one must equal."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    words = dedupe._NON_WORD.sub(" ", dedupe._MENTION_TAG.sub(" ", dedupe._URL.sub(" ", folded)))
    core = " ".join(words.split())
    return None if len(core) < dedupe.FINGERPRINT_MIN else hashlib.blake2b(core.encode(), digest_size=10).hexdigest()


TEXT_PIECES = st.sampled_from(
    [
        "Our bakery",
        " ",
        "https://x.co/a_b",
        "www.site.org",
        "@ann@mstdn.social",
        "#SmBiz",
        "A1:",
        "_",
        "--",
        "\n",
        "Ünïcode",
        "\uff46\uff55\uff4c\uff4c",  # fullwidth "full": NFKC makes it ASCII
        "ß",
        "İ",
        "é",
        "e\u0301",
        "👋",
        "x_y",
        "42",
        ".",
        "http",
        "@",
        "#",
    ]
)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(TEXT_PIECES, st.text(max_size=8)), max_size=20).map("".join))
def test_the_fast_fingerprint_is_the_plain_one(text: str) -> None:
    # the merge stage's fingerprint skips passes that cannot match and translates ASCII text (docs/benchmarks.md)
    assert fingerprint(text) == plain_fingerprint(text)
    assert fingerprint(f"{LONG} {text}") == plain_fingerprint(f"{LONG} {text}")  # long enough to have a digest


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
            events.append(Edit(post.replace(text=f"edited {n}")))
        elif action == "retract":
            events.append(Retraction(post.key, "x"))
        else:
            events.append(make_post(f"x:b{m}").replace(boost_of=post.key))
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
    await pub.publish([make_post("x:2").replace(boost_of="x:1"), Retraction("x:1", "x")])
    await pub.publish([make_post("x:1")])
    clock.now = time.time() + 1
    second = MergeStage(redis, keys, CHATS, window=0, clock=clock)
    await second.load_cursors()
    await second.step(max_block=0.01)
    entries = await feed_entries(redis, keys)
    assert [kind for kind, _ in entries] == ["p", "u", "r"]
    assert entries[1][1]["boosts"] == 1
    assert entries[2][1]["ids"] == [entries[0][1]["id"]]


async def test_a_retweet_of_a_post_deleted_in_an_earlier_batch_is_dropped_and_counted(
    redis: aioredis.Redis, keys: Keys
) -> None:
    original, retweet = retweet_events()
    pub = Publisher(redis, keys, CHATS, 1000)
    clock = FakeClock()
    stage = MergeStage(redis, keys, CHATS, window=0, clock=clock)
    await stage.load_cursors()
    for batch in ([original], [Retraction(original.key, "x")], [original, retweet]):  # each its own merge batch
        await pub.publish(batch)
        clock.now += 1
        await stage.step(max_block=0.01)
    entries = await feed_entries(redis, keys)
    assert [kind for kind, _ in entries] == ["p", "r"]
    assert not any("RT @" in str(payload.get("text", "")) for _, payload in entries)
    assert stage.counters["dropped:boost_of_retracted"] == 1 and stage.counters["dropped:retracted"] == 1
    assert stage.counters["duplicate"] == 0


def test_an_edit_leaves_no_optional_field_it_lacks_and_never_a_null() -> None:
    original = make_post("x:1", text="Q1: What brought you here? #smbiz").replace(
        quote_of="x:0", quote_url="https://x.com/a/status/0", lang="en", media=("https://a.example/1.png",)
    )
    plain = Edit(make_post("x:1", text="What brought you here, everyone? #smbiz"))
    stored = run([original, plain])[-1][2]
    for field in ("qa", "quote_of", "quote_url", "lang", "media"):
        assert field not in stored, field
    assert None not in stored.values()
    assert stored["text"] == "What brought you here, everyone? #smbiz" and "edited" in stored
    renumbered = run([original, Edit(original.replace(text="Q2: And now?"))])[-1][2]
    assert renumbered["qa"] == {"role": "Q", "n": 2} and renumbered["quote_of"] == "x:0"


def test_numbered_questions_and_answers_carry_their_number_and_role() -> None:
    writes = run([make_post("x:q", text="Q1: What brought you here? #smbiz"), make_post("x:a", text="A1. Curiosity")])
    assert [payload.get("qa") for _, _, payload in writes] == [{"role": "Q", "n": 1}, {"role": "A", "n": 1}]
    assert "qa" not in run([make_post("x:n", text="A1 steak sauce is great")])[0][2]


def test_an_update_that_adds_chats_names_them_in_joined_and_the_index_keeps_the_post_without() -> None:
    book = Book()
    changes = Changes()
    ids = (f"1-{n}" for n in itertools.count())
    original = make_post("x:1", ("smbiz",), text=LONG)
    events: list[Event] = [
        original,
        make_post("x:1", ("edchat", "smbiz")),  # a union twin, after the post was released
        Edit(original.replace(chats=("journchat",), text=LONG + " #journchat")),  # an edit that adds a hashtag
        Edit(original.replace(text=LONG + " (fixed)")),  # an edit of the words alone
        make_post("x:2", ("smbiz",)).replace(boost_of="x:1"),  # a boost: a count, no chat
    ]
    writes = [w for e in events for w in Deduper().apply(e, book, changes, lambda: next(ids), 1_000)]
    assert [(kind, payload.get("joined")) for kind, _, payload in writes] == [
        ("p", None),
        ("u", ["edchat"]),
        ("u", ["journchat"]),
        ("u", None),
        ("u", None),
    ]
    assert writes[2][2]["chats"] == ["smbiz", "edchat", "journchat"]
    assert "joined" not in changes.posts["x:1"] and "joined" not in book.posts["x:1"]  # (what history shows)


def test_a_repeat_that_brings_a_chat_to_the_first_card_names_it_in_joined() -> None:
    first = make_post("x:1", ("smbiz",), text=f"{LONG}!!")
    repeat = make_post("x:2", ("edchat",), text=f"{LONG}!!").replace(author=Author("bob", "Bob"))
    writes = run([first, repeat])
    assert kinds(writes) == [("p", "x:1"), ("u", "x:1")]
    assert writes[1][2]["joined"] == ["edchat"] and writes[1][2]["similar"] == 1


def test_a_hidden_post_that_gains_a_chat_joins_no_filter() -> None:
    book = Book()
    run([make_post("x:1", ("smbiz",))], book)
    book.posts["x:1"] = {**book.posts["x:1"], "hidden": True}  # type: ignore[dict-item]
    [(kind, _, payload)] = run([make_post("x:1", ("edchat",))], book)
    assert kind == "u" and payload["chats"] == ["smbiz", "edchat"] and "joined" not in payload
