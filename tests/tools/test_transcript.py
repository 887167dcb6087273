"""Transcripts: Q/A grouping per chat, escaping of hostile text, CSV formula defusing, the JSON shape,
an export from a feed written by the real merge stage, and the `mixer transcript` command."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import sys
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis

from mixer.codec import FIELD, pack_post
from mixer.ingest.publish import Publisher
from mixer.keys import Keys
from mixer.merge.stage import MergeStage
from mixer.models import Author, Edit, Post, Retraction
from mixer.tools.transcript import load_posts, parse_time, write_transcript
from mixer.tools.transcript_format import CSV_COLUMNS, Scope, defuse, group_qa, md_escape, to_csv, to_json, to_markdown
from tests.helpers import make_post
from tests.processes import mixer_env

NIGHT = int(datetime(2024, 5, 1, 20, 0, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000


def post(
    n: int, text: str, chats: tuple[str, ...] = ("smbiz",), minute: int = 0, handle: str = "alice", **extra: Any
) -> dict[str, Any]:
    """A post as the feed history gives it."""
    created = NIGHT + minute * MIN
    return {
        "id": f"{created}-{n}",
        "key": f"x:{n}",
        "source": "x",
        "chats": list(chats),
        "author": {"handle": handle, "name": handle.title(), "avatar": None},
        "text": text,
        "url": f"https://x.test/{handle}/status/{n}",
        "created": created,
        "at": created,
        **extra,
    }


def q(role: str, n: int) -> dict[str, Any]:
    return {"qa": {"role": role, "n": n}}


def test_answers_are_grouped_under_the_question_of_their_own_chat() -> None:
    posts = [
        post(1, "Q1: How do you find clients?", ("smbiz",), 1, "host", **q("Q", 1)),
        post(2, "Q1: Favourite classroom tool?", ("edchat",), 2, "teach", **q("Q", 1)),
        post(3, "A1: referrals", ("smbiz",), 3, "bob", **q("A", 1)),
        post(4, "A1: exit tickets", ("edchat",), 4, "carol", **q("A", 1)),
        post(5, "hello everyone", ("smbiz", "edchat"), 0, "dave"),
        post(6, "A1: both, really", ("smbiz", "edchat"), 5, "erin", **q("A", 1)),
    ]
    threads, rest = group_qa(posts)
    assert [(t.chat, t.n, t.question and t.question["key"]) for t in threads] == [
        ("smbiz", 1, "x:1"),
        ("edchat", 1, "x:2"),
    ]
    assert [a["key"] for a in threads[0].answers] == ["x:3", "x:6"]
    assert [a["key"] for a in threads[1].answers] == ["x:4", "x:6"]
    assert [p["key"] for p in rest] == ["x:5"]
    only_edchat, _ = group_qa(posts, "edchat")
    assert [(t.chat, [a["key"] for a in t.answers]) for t in only_edchat] == [("edchat", ["x:4", "x:6"])]


def test_an_answer_without_its_question_gets_a_thread_of_its_own_and_a_repeated_question_stays_in_the_talk() -> None:
    posts = [
        post(1, "A2: late answer", minute=1, **q("A", 2)),
        post(2, "Q1: first", minute=2, **q("Q", 1)),
        post(3, "Q1: first (asked again)", minute=3, **q("Q", 1)),
        post(4, "edited away its number", minute=4, qa=None),
    ]
    threads, rest = group_qa(posts)
    assert [(t.n, t.question and t.question["key"], [a["key"] for a in t.answers]) for t in threads] == [
        (2, None, ["x:1"]),
        (1, "x:2", []),
    ]
    assert [p["key"] for p in rest] == ["x:3", "x:4"]
    md = to_markdown(posts, Scope())
    assert "### Q2 (#smbiz)\n\n*The question is not in this transcript.*" in md
    assert "### Q1 (#smbiz): first\n" in md and "*No answers in this transcript.*" in md


def test_markdown_has_a_title_with_the_range_then_questions_then_the_conversation() -> None:
    posts = [
        post(1, "Q1: How do you find clients?", ("smbiz",), 10, "host", **q("Q", 1)),
        post(2, "A1: referrals", ("smbiz", "edchat"), 12, "bob", boosts=2, **q("A", 1)),
        post(3, "hi all", ("smbiz",), 5, "dave", also_on=[{"source": "mastodon", "url": "https://m.test/@dave/1"}]),
        post(4, "elsewhere", ("edchat",), 6, "carol"),
    ]
    md = to_markdown(posts, Scope("Mixer Night", chat="smbiz", tz=ZoneInfo("America/New_York")))
    lines = md.splitlines()
    assert lines[0] == "# Mixer Night: #smbiz"
    assert lines[2] == "*2024-05-01 16:05\u201316:12 America/New\\_York, 3 posts, 1 question*"
    assert "### Q1 (#smbiz): How do you find clients?" in lines
    assert "Asked at **16:10** by @host (Host) [#smbiz] ([post](https://x.test/host/status/1))" in lines
    answer = "- **16:12** @bob (Bob) [#smbiz #edchat]: A1: referrals ([post](https://x.test/bob/status/2), 2 boosts)"
    assert answer in lines
    talk = lines[lines.index("## Conversation") :]
    assert talk[2].startswith("- **16:05** @dave (Dave) [#smbiz]: hi all ([post](")
    assert "[mastodon](https://m.test/@dave/1)" in talk[2]
    assert "elsewhere" not in md  # another chat's post
    assert lines.index("## Questions and answers") < lines.index("## Conversation")


def test_a_range_shorter_than_ten_minutes_is_shown_to_the_second_so_its_ends_differ() -> None:
    posts = [{**post(n, "hi", ("smbiz",), 0, "dave"), "created": NIGHT + 10_000 * n} for n in (1, 4)]
    md = to_markdown(posts, Scope("Night", tz=ZoneInfo("UTC")))
    assert md.splitlines()[2] == "*2024-05-01 20:00:10\u201320:00:40 UTC, 2 posts*"  # not "20:00\u201320:00"
    scope = Scope("Night", start=NIGHT, end=NIGHT + 5 * MIN, tz=ZoneInfo("UTC"))
    assert to_markdown(posts, scope).splitlines()[2] == "*2024-05-01 20:00\u201320:05 UTC, 2 posts*"  # whole minutes


def test_markdown_counts_read_as_english_and_no_posts_show_no_range() -> None:
    one = to_markdown([post(1, "hi", ("smbiz",), 5, "dave", boosts=1)], Scope("Night", tz=ZoneInfo("UTC")))
    assert one.splitlines()[2] == "*2024-05-01 20:05 UTC, 1 post*"  # one moment, not "20:05\u201320:05"
    assert "([post](https://x.test/dave/status/1), 1 boost)" in one
    assert to_markdown([], Scope("Night")).splitlines()[2] == "*0 posts*"  # not "no posts, 0 posts"


def test_hostile_text_is_shown_as_text_in_markdown() -> None:
    hostile = "<script>alert(1)</script> *bold* [x](javascript:alert(1)) ![i](https://e.test/i.png) `c` &amp;\n# h"
    posts = [
        post(1, hostile, minute=1, handle="m_a_l", url="javascript:alert(1)"),
        post(2, "Q1: <img src=x onerror=alert(1)>", minute=2, **q("Q", 1)),
    ]
    posts[0]["author"]["name"] = "**Eve** <b>"
    md = to_markdown(posts, Scope("<i>night</i>"))
    assert not re.search(r"(?<!\\)[<>&`]", md)  # no raw HTML, entity or code span can open
    for raw in (r"\*bold", r"\[x\]\(", r"!\[i", r"\n# h"):
        assert not re.search(r"(?<!\\)" + raw, md), raw
    assert "\\<script\\>alert(1)\\</script\\> \\*bold\\* \\[x\\](javascript:alert(1))" in md
    assert "@m\\_a\\_l (\\*\\*Eve\\*\\* \\<b\\>)" in md
    assert "\\&amp; \\# h" in md  # the newline is folded: the line cannot start a heading
    assert "### Q1 (#smbiz): \\<img src=x onerror=alert(1)\\>" in md
    assert md_escape("a\\b|c~d$e_f") == "a\\\\b\\|c\\~d\\$e\\_f"


def test_a_link_is_made_only_to_an_http_url_and_cannot_break_out() -> None:
    md = to_markdown([post(1, "x", url="https://e.test/a b)(<c>[d]")], Scope())
    assert "([post](https://e.test/a%20b%29%28%3Cc%3E%5Bd%5D))" in md
    for url in ("javascript:alert(1)", "data:text/html,<b>", "//e.test/x", "http:///nohost"):
        assert "[post](" not in to_markdown([post(1, "x", url=url)], Scope()), url


def test_csv_has_one_row_per_post_and_defuses_formulas() -> None:
    posts = [
        post(2, '=HYPERLINK("http://evil.test","click")', ("smbiz", "edchat"), 2, boosts=3, **q("A", 1)),
        post(1, 'Q1: plain, with "quotes"\nand a line', minute=1, **q("Q", 1)),
        post(3, "+1 agreed", minute=3, handle="@mallory"),
        post(4, "  -2+3", minute=4),
        post(5, "\uff1dSUM(A1)", minute=5),
        post(6, "@SUM(1)", minute=6),
    ]
    posts[0]["author"]["name"] = "=cmd|' /C calc'!A0"
    rows = list(csv.reader(io.StringIO(to_csv(posts, Scope()))))
    assert tuple(rows[0]) == CSV_COLUMNS
    first, second = (dict(zip(CSV_COLUMNS, row, strict=True)) for row in rows[1:3])
    assert first == {
        "id": f"{NIGHT + MIN}-1",
        "created": "2024-05-01T20:01:00.000Z",
        "chats": "smbiz",
        "handle": "alice",
        "name": "Alice",
        "text": 'Q1: plain, with "quotes"\nand a line',
        "url": "https://x.test/alice/status/1",
        "qa_role": "Q",
        "qa_n": "1",
        "boosts": "0",
    }
    assert second["text"] == '\'=HYPERLINK("http://evil.test","click")'
    assert second["name"] == "'=cmd|' /C calc'!A0"
    assert (second["chats"], second["qa_role"], second["qa_n"], second["boosts"]) == ("smbiz edchat", "A", "1", "3")
    texts = [row[CSV_COLUMNS.index("text")] for row in rows[3:]]
    assert texts == ["'+1 agreed", "'  -2+3", "'\uff1dSUM(A1)", "'@SUM(1)"]
    assert rows[3][CSV_COLUMNS.index("handle")] == "'@mallory"
    assert defuse("plain") == "plain" and defuse("a=b") == "a=b"


def test_json_holds_the_scope_every_post_and_the_questions() -> None:
    posts = [
        post(1, "Q1: ok?", minute=1, **q("Q", 1)),
        post(2, "A1: yes", minute=2, **q("A", 1)),
        post(3, "too late", minute=90),
    ]
    doc = json.loads(to_json(posts, Scope("Night", "night", "smbiz", start=NIGHT, end=NIGHT + 60 * MIN)))
    assert set(doc) == {"event", "chat", "from", "to", "posts", "questions"}
    assert doc["event"] == {"name": "Night", "hashtag": "night"}
    assert (doc["chat"], doc["from"], doc["to"]) == ("smbiz", "2024-05-01T20:00:00.000Z", "2024-05-01T21:00:00.000Z")
    assert doc["posts"] == posts[:2]
    assert doc["questions"] == [{"chat": "smbiz", "n": 1, "question": posts[0], "answers": [posts[1]]}]
    empty = json.loads(to_json([], Scope()))
    assert (empty["from"], empty["to"], empty["posts"], empty["questions"]) == (None, None, [], [])


class _Sink(io.RawIOBase):
    """A file that keeps only its size, so what a writer holds is all tracemalloc sees."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: Any) -> int:
        self.size += len(data)
        return len(data)


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_a_transcript_is_written_in_pieces_never_held_whole(fmt: str) -> None:
    posts = [post(i, f"A{i % 7}: {'words ' * 30}", minute=i % 60, **q("A", i % 7)) for i in range(3000)]
    scope = Scope("Night", "night", "smbiz")
    whole, sink = io.BytesIO(), _Sink()
    write_transcript(fmt, posts, scope, whole)
    assert whole.getvalue().decode() == (to_json if fmt == "json" else to_csv)(posts, scope)
    tracemalloc.start()
    try:
        write_transcript(fmt, posts, scope, sink)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sink.size == len(whole.getvalue())
    if fmt == "json":  # the big one (every answer twice, indented): at most a few pieces at a time
        assert peak < sink.size / 4, (peak, sink.size)


def test_a_night_across_the_fall_back_names_the_zone_of_every_time_since_0130_comes_twice() -> None:
    fall_back = int(datetime(2024, 11, 3, 5, 20, tzinfo=UTC).timestamp() * 1000)  # 01:20 EDT in New York
    posts = [
        post(1, "Q1: first", minute=0, **q("Q", 1)),
        post(2, "A1: an hour later", minute=50, **q("A", 1)),  # 06:10 UTC: 01:10 EST
        post(3, "the end", minute=70),  # 01:30 EST
    ]
    for p in posts:
        p["created"] = p["at"] = fall_back + (p["created"] - NIGHT)
        p["id"] = f"{p['created']}-0"
    text = to_markdown(posts, Scope("Night", "night", tz=ZoneInfo("America/New_York")))
    assert "*2024-11-03 01:20 EDT\u201301:30 EST America/New\\_York, 3 posts, 1 question*" in text
    assert "Asked at **01:20 EDT** by @alice" in text
    assert "- **01:10 EST** @alice (Alice) [#smbiz]: A1: an hour later" in text
    london = to_markdown(posts, Scope("Night", "night", tz=ZoneInfo("Europe/London")))  # GMT all along: no zone
    assert "Asked at **05:20** by" in london and "*2024-11-03 05:20\u201306:30 Europe/London" in london


def test_times_without_an_offset_are_read_in_the_given_zone() -> None:
    assert parse_time("2024-05-01T16:00", ZoneInfo("America/New_York"), "--from") == NIGHT
    assert parse_time("2024-05-01T20:00Z", ZoneInfo("Asia/Tokyo"), "--from") == NIGHT
    with pytest.raises(ValueError, match="--to: 'tonight' is not an ISO 8601 time"):
        parse_time("tonight", UTC, "--to")


@pytest.mark.parametrize(
    ("value", "zone"),
    [
        ("0001-01-01T00:00:00+14:00", "UTC"),  # year 0 in UTC
        ("0001-01-01T00:00:00", "Etc/GMT-14"),  # read at +14:00: year 0 in UTC
        ("9999-12-31T23:59:59", "Etc/GMT+12"),  # read at -12:00: year 10000 in UTC
        ("9999-12-31T23:59:59Z", "Etc/GMT-14"),  # year 10000 in the zone the transcript shows
    ],
)
def test_a_time_that_utc_or_the_zone_cannot_show_is_refused(value: str, zone: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"--from: '{value}' is out of range")):
        parse_time(value, ZoneInfo(zone), "--from")
    assert parse_time("9999-12-31T23:59:59", UTC, "--to") == 253_402_300_799_000  # the last second is fine


CHATS = ("smbiz", "edchat")


def real_post(key: str, text: str, chats: tuple[str, ...], minute: int, handle: str) -> Post:
    created = NIGHT + minute * MIN
    return Post(
        key=key,
        source="x",
        chats=chats,
        author=Author(handle=handle, name=handle.title()),
        text=text,
        url=f"https://x.test/{handle}/{key}",
        created=created,
        at=created,
    )


async def merge_everything(redis: aioredis.Redis, keys: Keys) -> None:
    """Run a real merge stage (no reorder window) until it has written everything published."""
    merge = MergeStage(redis, keys, CHATS, window=0)
    await merge.load_cursors()
    while await merge.step(max_block=0.01):
        pass


async def write_night(redis: aioredis.Redis, keys: Keys) -> None:
    """Posts (one in two chats), then an edit of an answer and the retraction of another, through the merge stage."""
    publisher = Publisher(redis, keys, CHATS, 1000)
    await publisher.publish(
        [
            real_post("x:1", "Q1: How do you find your first clients? #smbiz", ("smbiz",), 1, "host"),
            real_post("x:2", "A1: referrals from friends #smbiz", ("smbiz",), 2, "bob"),
            real_post("x:3", "A1: buy my course!!! #smbiz", ("smbiz",), 3, "spam"),
            real_post("x:4", "Hi from #edchat and #smbiz", ("edchat", "smbiz"), 4, "carol"),
            real_post("x:5", "A1: cold emails #smbiz", ("smbiz",), 5, "dave"),
        ]
    )
    await merge_everything(redis, keys)
    edited = real_post("x:5", "A1: cold emails, done politely #smbiz", ("smbiz",), 5, "dave")
    await publisher.publish([Edit(edited), Retraction("x:3", "x", ("smbiz",))])
    await merge_everything(redis, keys)


async def test_a_transcript_from_the_feed_leaves_retracted_posts_out_and_groups_q1_with_its_answers(
    redis: aioredis.Redis, keys: Keys
) -> None:
    await write_night(redis, keys)
    scope = Scope(chat="smbiz")
    posts = await load_posts(redis, keys, scope, page=2)  # small pages: the paging itself is exercised
    assert [p["key"] for p in posts] == ["x:1", "x:2", "x:4", "x:5"]
    assert posts[2]["chats"] == ["edchat", "smbiz"]
    [thread], rest = group_qa(posts, "smbiz")
    assert thread.question is not None and thread.question["key"] == "x:1"
    assert [a["text"] for a in thread.answers] == [
        "A1: referrals from friends #smbiz",
        "A1: cold emails, done politely #smbiz",
    ]
    assert [p["key"] for p in rest] == ["x:4"]
    md = to_markdown(posts, scope)
    assert "buy my course" not in md and "politely \\#smbiz ([post](https://x.test/dave/x:5), edited)" in md
    night = await load_posts(redis, keys, Scope(start=NIGHT + 2 * MIN, end=NIGHT + 5 * MIN))
    assert [p["key"] for p in night] == ["x:2", "x:4"]


async def mixer(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mixer.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_transcript_command_has_help_and_needs_a_shared_redis(tmp_path: Path) -> None:
    code, out, _ = await mixer("transcript", "--help", env=mixer_env(None, Keys(), "smbiz"))
    assert code == 0
    assert "usage: mixer transcript" in out and "--redis" in out and "--format" in out
    alone = mixer_env(None, Keys(), "smbiz", XDG_RUNTIME_DIR=str(tmp_path))  # and no `mixer run` to join
    code, _, err = await mixer("transcript", env=alone)
    assert code == 2 and "--redis" in err


async def test_the_transcript_command_exports_one_chat_from_the_feed(
    redis: aioredis.Redis, keys: Keys, redis_url: str, tmp_path: Path
) -> None:
    await write_night(redis, keys)
    env = mixer_env(redis_url, keys, ",".join(CHATS))
    code, out, err = await mixer("transcript", "--chat", "#SMBiz", "--format", "json", env=env)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["chat"] == "smbiz" and [p["key"] for p in doc["posts"]] == ["x:1", "x:2", "x:4", "x:5"]
    assert [(t["n"], [a["key"] for a in t["answers"]]) for t in doc["questions"]] == [(1, ["x:2", "x:5"])]
    target = tmp_path / "night.md"
    code, out, err = await mixer("transcript", "--tz", "Europe/Berlin", "--out", str(target), env=env)
    assert code == 0, err
    assert out == "" and f"4 posts to {target}" in err
    md = target.read_text()
    assert "### Q1 (#smbiz): How do you find your first clients?" in md and "buy my course" not in md
    assert "**22:04** @carol (Carol) [#edchat #smbiz]" in md  # 20:04 UTC is 22:04 in Berlin
    code, _, err = await mixer("transcript", "--chat", "nosuchchat", env=env)
    assert code == 2 and "#nosuchchat is not a chat" in err


async def test_an_out_that_cannot_be_written_is_refused_before_the_feed_is_read(tmp_path: Path) -> None:
    env = mixer_env("redis://127.0.0.1:1/0", Keys(), "smbiz")  # a dead Redis: reading it first would fail first
    missing = tmp_path / "no" / "night.md"
    code, _, err = await mixer("transcript", "--out", str(missing), env=env)
    problem = f"the directory {missing.parent} does not exist"
    assert (code, err) == (2, f"mixer transcript: cannot write {missing}: {problem}\n")
    code, _, err = await mixer("transcript", "--out", str(tmp_path), env=env)
    assert (code, err) == (2, f"mixer transcript: cannot write {tmp_path}: it is a directory; give a file name\n")
    kept = tmp_path / "night.md"
    kept.write_text("last week's transcript")
    code, _, err = await mixer("transcript", "--out", str(kept), env=env)
    assert code == 1 and "cannot read the feed from Redis" in err
    assert kept.read_text() == "last week's transcript" and sorted(tmp_path.iterdir()) == [kept]  # no temporary left


async def test_a_transcript_of_a_trimmed_feed_says_it_lacks_the_posts_trimmed_away(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    for i in range(3):  # a feed_maxlen of 2: the first post is trimmed away
        await redis.xadd(
            keys.feed, {FIELD: pack_post(make_post(f"x:{i}", created=NIGHT + i * MIN))}, maxlen=2, approximate=False
        )
    oldest = (await redis.xrange(keys.feed, count=1))[0][0].decode()
    when = datetime.fromtimestamp(int(oldest.split("-")[0]) / 1000, UTC).isoformat(timespec="seconds")
    env = mixer_env(redis_url, keys, "smbiz")
    code, _, err = await mixer("transcript", "--format", "csv", env=env)
    assert code == 0 and err.splitlines() == [
        "mixer transcript: note: the feed keeps only its newest entries ([redis] feed_maxlen) and has trimmed those"
        f" before {when.replace('+00:00', 'Z')}: this transcript lacks the posts that were in them",
        "mixer transcript: 2 posts",
    ]
    code, _, err = await mixer("transcript", "--from", "2999-01-01", env=env)  # after the trim: nothing lacking
    assert code == 0 and err.splitlines() == ["mixer transcript: 0 posts"]
