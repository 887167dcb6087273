"""`mixer synth`: reproducible synthetic nights that read back as recorded streams."""

from __future__ import annotations

import argparse
import io
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from mixer.ingest.hashtags import ChatMatcher
from mixer.ingest.recorded import RecordError, read_events
from mixer.merge.dedupe import Book, Changes, Deduper, author_identity, fingerprint
from mixer.merge.qa import qa_tags
from mixer.models import Post
from mixer.settings import ChatSettings, Settings
from mixer.tools.synth import (
    MAX_POSTS,
    add_synth_parser,
    count_by_chat,
    parse_rate,
    post_count,
    spec_for,
    synth_command,
    synthesize,
    write_night,
)

TAGS = ("smbiz", "edchat", "journchat")


def _night(tmp_path: Path, seed: int = 7, rate: tuple[float, float] = (12, 12), minutes: float = 60) -> Path:
    path = tmp_path / f"night-{seed}.jsonl"
    with path.open("wb") as out:
        write_night(spec_for(TAGS, rate, minutes, seed), out)
    return path


def _read_back(path: Path) -> list[Post]:
    events = list(read_events(path, ChatMatcher(None), 0))
    assert not [e for e in events if isinstance(e, RecordError)]
    assert all(isinstance(e, Post) for e in events)
    return [e for e in events if isinstance(e, Post)]


def test_same_seed_gives_byte_identical_file_and_another_seed_does_not(tmp_path: Path) -> None:
    (tmp_path / "again").mkdir()
    first, again = _night(tmp_path, 7).read_bytes(), _night(tmp_path / "again", 7).read_bytes()
    assert first == again
    assert _night(tmp_path, 8).read_bytes() != first


def test_file_reads_back_with_zero_errors_into_the_generated_posts_in_time_order(tmp_path: Path) -> None:
    path = _night(tmp_path)
    assert path.read_text().startswith("# synthetic #chatmixer night")
    posts = _read_back(path)
    assert posts == synthesize(spec_for(TAGS, (12, 12), 60, 7))
    assert [p.created for p in posts] == sorted(p.created for p in posts)
    assert {p.source for p in posts} == {"x", "mastodon", "bluesky"}


def test_questions_are_numbered_in_order_per_chat_and_answers_follow_an_asked_question(tmp_path: Path) -> None:
    posts = [p for p in _read_back(_night(tmp_path)) if p.boost_of is None]
    for tag in TAGS:
        asked: list[int] = []
        for post in (p for p in posts if p.chats == (tag,)):
            qa = qa_tags(post.text)
            if qa is None:
                continue
            role, n = qa
            if role == "Q":
                assert n == len(asked) + 1, f"#{tag} asked Q{n} after {asked}"
                asked.append(n)
            else:
                assert n in asked, f"#{tag} answered A{n} before it was asked ({asked})"
        assert len(asked) >= 5


def test_a_question_sets_off_a_burst_of_answers(tmp_path: Path) -> None:
    posts = synthesize(spec_for(("smbiz",), (20, 20), 60, 3))
    questions = {qa[1]: p.created for p in posts if (qa := qa_tags(p.text)) and qa[0] == "Q" and not p.boost_of}
    soon = sum(
        1 for p in posts if (qa := qa_tags(p.text)) and qa[0] == "A" and p.created - questions[qa[1]] <= 3 * 60_000
    )
    answers = sum(1 for p in posts if (qa := qa_tags(p.text)) and qa[0] == "A")
    assert soon >= 0.8 * answers


def test_night_holds_cross_posts_cross_network_twins_and_boosts(tmp_path: Path) -> None:
    posts = _read_back(_night(tmp_path))
    chats_by_key: dict[str, set[str]] = defaultdict(set)
    for post in posts:
        chats_by_key[post.key].update(post.chats)
    assert sum(1 for chats in chats_by_key.values() if len(chats) > 1) >= 3
    twins: dict[tuple[str, str | None], set[str]] = defaultdict(set)
    for post in posts:
        if post.boost_of is None:
            twins[(author_identity(post.to_dict()), fingerprint(post.text))].add(post.source)
    assert sum(1 for (_, fp), sources in twins.items() if fp and len(sources) > 1) >= 3
    keys = {p.key for p in posts}
    boosts = [p for p in posts if p.boost_of]
    assert boosts and all(p.boost_of in keys for p in boosts)


def test_a_chat_never_holds_one_post_twice_so_its_lines_are_its_posts() -> None:
    posts = synthesize(spec_for(("c0", "c1"), (100, 100), 20, 1))  # 40 cross-posts drawn from ~320 chatter posts
    copies = Counter((p.key, chat) for p in posts for chat in p.chats)
    assert [pair for pair, n in copies.items() if n > 1] == []
    assert count_by_chat(posts) == {"c0": 2000, "c1": 2000}


@pytest.mark.parametrize("rate", [(12.0, 12.0), (2.0, 30.0)])
def test_each_chat_posts_within_twenty_percent_of_the_asked_rate(tmp_path: Path, rate: tuple[float, float]) -> None:
    spec = spec_for(TAGS, rate, 30, 11)
    counts = count_by_chat(synthesize(spec))
    for tag, asked in spec.rates:
        assert rate[0] <= asked <= rate[1]
        assert abs(counts[tag] / spec.minutes - asked) <= 0.2 * asked


def test_scales_to_many_synthetic_chats(tmp_path: Path) -> None:
    spec = spec_for([f"chat{i:02d}" for i in range(1, 31)], (300, 300), 1, 5)
    posts = synthesize(spec)
    assert Counter(c for p in posts for c in p.chats) == {f"chat{i:02d}": 300 for i in range(1, 31)}


def test_rate_accepts_one_value_or_a_spread_and_rejects_nonsense() -> None:
    assert parse_rate("5") == (5, 5)
    assert parse_rate("2-20") == (2, 20)
    for bad in ("0", "x", "9-3", "-1", "inf", "1-inf", "nan", "nan-1", "1-nan"):
        with pytest.raises(ValueError, match="--rate"):
            parse_rate(bad)


@pytest.mark.parametrize(
    ("chats", "rate", "minutes", "start", "message"),
    [
        (1, (10, 10), float("nan"), 0, "--minutes must be more than 0 and at most 10080"),
        (1, (10, 10), float("inf"), 0, "--minutes must be more than 0 and at most 10080"),
        (1, (10, 10), 100_000_000, 0, "--minutes must be more than 0 and at most 10080"),
        (1, (1e9, 1e9), 1, 0, "1 chat(s) x --rate 1e+09 x --minutes 1 is about 1,000,000,000 posts; at most 1,000,000"),
        (30, (1e308, 1e308), 10_000, 0, "is about inf posts"),
        (1, (10, 10), 60, -62_135_596_800_001, "--start: the night must start and end within the years 1 to 9999"),
        (1, (10, 10), 60, 253_402_300_000_000, "--start: the night must start and end within the years 1 to 9999"),
    ],
)
def test_a_night_that_is_endless_too_big_or_off_the_calendar_is_refused_before_anything_is_made(
    chats: int, rate: tuple[float, float], minutes: float, start: int, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        spec_for([f"chat{i:02d}" for i in range(chats)], rate, minutes, 1, start)


def test_the_largest_night_allowed_is_exactly_the_post_cap() -> None:
    spec = spec_for(["a", "b"], (MAX_POSTS / 2 / 60, MAX_POSTS / 2 / 60), 60, 1)
    assert post_count(spec) == MAX_POSTS
    spec = spec_for(TAGS, (2, 30), 45, 3)
    assert post_count(spec) == len(synthesize(spec))


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_synth_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["synth", *argv])


def test_command_uses_configured_chats_or_n_synthetic_ones(tmp_path: Path) -> None:
    settings = Settings(chats=(ChatSettings("smbiz", "Small biz", "#112233"), ChatSettings("edchat", "Ed", "#445566")))
    out = tmp_path / "cfg.jsonl"
    assert synth_command(settings, _args("--minutes", "5", "--out", str(out))) == 0
    assert {c for p in _read_back(out) for c in p.chats} == {"smbiz", "edchat"}
    out = tmp_path / "n.jsonl"
    assert synth_command(settings, _args("--chats", "4", "--minutes", "5", "--rate", "3", "--out", str(out))) == 0
    assert count_by_chat(_read_back(out)) == {f"chat0{i}": 15 for i in range(1, 5)}


def test_command_reports_a_usage_error_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert synth_command(Settings(), _args("--rate", "fast")) == 2
    assert "--rate" in capsys.readouterr().err
    assert synth_command(Settings(), _args()) == 2  # no chats configured and no --chats


def test_writes_to_a_stream() -> None:
    out = io.BytesIO()
    assert write_night(spec_for(("a",), (6, 6), 2, 1), out) == 12


def test_progress_is_told_as_the_posts_are_written() -> None:
    out, seen = io.BytesIO(), []

    def progress(written: int, total: int) -> None:
        seen.append((written, total, out.getvalue().count(b"\n") - 4))  # 4 header lines

    assert write_night(spec_for(("a",), (6, 6), 2, 1), out, progress, every=5) == 12
    assert seen == [(5, 12, 5), (10, 12, 10)]  # each when that many lines were out


def test_merge_dedupe_collapses_the_cross_posts_and_cross_network_twins() -> None:
    posts = synthesize(spec_for(TAGS, (12, 12), 60, 7))
    deduper, book, changes = Deduper(), Book(), Changes()
    ids = iter(range(1, 10**6))
    writes = [w for p in posts for w in deduper.apply(p, book, changes, lambda: f"1-{next(ids)}", p.created)]
    cards = [payload for kind, _, payload in writes if kind == "p"]
    shown = {card["key"]: card for card in cards}
    for kind, _, payload in writes:
        if kind == "u":
            shown[payload["key"]] = payload
    originals = [p for p in posts if p.boost_of is None]
    assert len(cards) < len({p.key for p in originals})  # twins became updates of a card, not cards
    assert sum(1 for c in shown.values() if len(c["chats"]) > 1) >= 3  # a cross-post: one card, both chats
    assert sum(1 for c in shown.values() if c.get("also_on")) >= 3  # a person on two networks: one card
    assert sum(int(c.get("boosts", 0)) for c in shown.values()) == len(posts) - len(originals)
