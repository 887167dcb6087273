"""`mixer report`: the figures on hand-made posts, on the bundled recording and on a synth night replayed through the
real merge stage into the real Redis, the command's exits, and the HTML page in headless Chromium.

Set MIXER_SCREENSHOTS=1 to also write docs/screenshots/report.png.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import UTC
from itertools import combinations
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis
from playwright.async_api import Page

from mixer.cli import main
from mixer.codec import FIELD, pack_post
from mixer.config import PALETTE
from mixer.ingest.publish import Publisher
from mixer.ingest.recorded import read_records
from mixer.ingest.replay import Replayer, ReplayOptions
from mixer.keys import Keys
from mixer.merge.stage import MergeStage
from mixer.models import Author, Post
from mixer.settings import DEMO_RECORDING
from mixer.tools.report import load_history
from mixer.tools.report_figures import Span, figures, last_event
from mixer.tools.report_html import OTHER, OTHER_COLOUR, TIMELINE_CHATS, apart, render
from mixer.tools.synth import spec_for, write_night
from tests import browser
from tests.helpers import ROOT, FakeClock, feed_posts
from tests.processes import mixer_env

chromium_page = browser.chromium_page
SYNTH_CHATS = ("smbiz", "edchat", "journchat", "blogchat")
HOSTILE = '<img src="http://127.0.0.1:9/x.png" onerror="alert(1)">'


def post(key: str, chats: Sequence[str], minute: float, handle: str = "ada", **extra: object) -> dict[str, object]:
    created = 1_767_297_600_000 + round(minute * 60_000)
    author = {"handle": handle, "name": handle.title(), "avatar": None}
    return {"key": key, "source": "x", "chats": list(chats), "author": author, "created": created, **extra}


def test_a_post_in_three_chats_is_one_cross_post_and_the_range_ends_after_the_newest_post() -> None:
    history = [post("a", ["smbiz"], 0), post("b", ["smbiz", "edchat", "journchat"], 1.5, handle="bob")]
    span = last_event(history) or Span(0, 1)
    doc = figures(history, span, ["smbiz", "edchat", "journchat"])
    assert doc["from"] == "2026-01-01T20:00:00Z"
    assert doc["to"] == "2026-01-01T20:01:31Z"  # exclusive: the newest post, created at 20:01:30, is before it
    assert doc["cross_posts"] == 1 and len(doc["matrix"]["pairs"]) == 3  # one post, three pairs


def test_the_last_event_starts_after_the_last_silence_of_more_than_three_hours() -> None:
    posts = [post("a", ["smbiz"], 0), post("b", ["smbiz"], 300), post("c", ["smbiz"], 310), post("d", ["smbiz"], 480)]
    assert last_event(posts) == Span(posts[1]["created"], posts[3]["created"] + 1)  # type: ignore[operator]
    assert last_event([]) is None


def test_figures_count_pairs_questions_boosts_newcomers_replies_and_removals_without_showing_removed() -> None:
    history = [
        post("old", ["smbiz"], -600, handle="bob"),  # last week: bob is no newcomer tonight
        post("q1", ["smbiz"], 0, qa={"role": "Q", "n": 1}, boosts=2),
        post("a1", ["smbiz", "edchat"], 1, handle="bob", qa={"role": "A", "n": 1}, reply_to="q1"),
        post("a2", ["smbiz"], 2, handle="cy", qa={"role": "A", "n": 1}),
        post("x", ["edchat"], 3, handle="dee", reply_to="old"),
        post("gone", ["edchat", "smbiz"], 4, handle="eve", removed="hidden"),
        post("del", ["edchat"], 5, handle="eve", removed="retracted"),
    ]
    doc = figures(history, last_event(history[1:]) or Span(0, 1), ["edchat", "smbiz"])
    assert doc["chats"] == ["edchat", "smbiz"] and doc["posts"] == 4
    assert doc["cross_posts"] == 1  # a1: the hidden post in both chats is not shown
    assert doc["matrix"]["counts"] == [[1, 1], [1, 2]]  # the hidden post in both chats is not a pair
    assert doc["matrix"]["pairs"] == [{"chats": ["edchat", "smbiz"], "posts": 1}]
    assert doc["replies"] == [{"from": "edchat", "to": "smbiz", "posts": 2}]  # a1 (edchat too) -> q1; x -> old
    smbiz = doc["per_chat"][1]
    assert smbiz["questions"] == [{"n": 1, "asked": True, "answers": 2}] and smbiz["boosts"] == 2
    assert smbiz["removed"] == {"hidden": 1, "retracted": 0}
    assert [a["handle"] for a in smbiz["newcomers"]] == ["ada", "cy"]
    assert doc["per_chat"][0]["removed"] == {"hidden": 1, "retracted": 1}
    assert "eve" not in json.dumps(doc)  # removed posts are counted, never shown
    assert doc["timeline"]["bin_seconds"] == 60 and doc["timeline"]["chats"]["smbiz"] == [1, 1, 1, 0, 0, 0]
    assert doc["timeline"]["busiest"][0] == {"at": "2026-01-01T20:00:00Z", "posts": 1, "chats": {"smbiz": 1}}


def test_the_timeline_draws_every_chat_in_a_colour_of_its_own_when_the_config_repeats_colours() -> None:
    chats = [f"chat{i:02d}" for i in range(1, 21)]
    configured = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(chats)}  # as the config gives 20 chats
    history = [post(f"p{i}", [c], i % 5, handle=f"u{i}") for i, c in enumerate(chats * (1 + 20))]
    doc = figures(history, last_event(history) or Span(0, 1), chats) | {"event": {}, "profile": "full"}
    drawn = [*chats[:TIMELINE_CHATS], OTHER]
    palette = apart({**configured, OTHER: OTHER_COLOUR}, drawn)
    assert len({palette[c].casefold() for c in drawn}) == len(drawn)  # 12 chats and "other chats"
    assert [palette[c] for c in chats[:8]] == list(PALETTE)  # the first of each colour keeps it
    assert palette["chat13"] == configured["chat13"]  # not drawn: as configured (its card)
    page = render(doc, configured, UTC)
    timeline = page[page.index('<figure id="timeline">') : page.index("</figure>")]
    assert all(palette[c] in timeline for c in drawn)


def test_a_report_across_the_fall_back_names_the_zone_of_every_time() -> None:
    # post() counts minutes from 2026-01-01 20:00 UTC; the US falls back on 1 November 2026 at 06:00 UTC
    to_fall_back = (1_793_505_600_000 - 1_767_297_600_000) // 60_000  # 2026-11-01 04:00 UTC: 00:00 EDT
    history = [post(f"p{i}", ["smbiz"], to_fall_back + 80 + 30 * i, handle=f"u{i}") for i in range(4)]
    doc = figures(history, last_event(history) or Span(0, 1), ["smbiz"]) | {"event": {"name": "N"}}
    page = render(doc, {}, ZoneInfo("America/New_York"))
    assert "2026-11-01 01:20 EDT to 2026-11-01 01:50 EST (America/New_York)" in page  # 90 minutes, not 30
    assert "<b>2026-11-01 01:20 EDT</b>" in page and "<b>2026-11-01 01:20 EST</b>" in page  # busiest: an hour apart
    assert "2026-11-01 05:20 to 2026-11-01 06:50 (UTC)" in render(doc, {}, UTC)


def test_a_range_shorter_than_ten_minutes_is_shown_to_the_second_so_its_ends_differ() -> None:
    history = [post(f"p{i}", ["smbiz"], 10 / 60 + i / 6, handle=f"u{i}") for i in range(4)]  # 20:00:10 to 20:00:40
    doc = figures(history, last_event(history) or Span(0, 1), ["smbiz"]) | {"event": {"name": "N"}}
    page = render(doc, {}, UTC)
    assert "<title>N: 2026-01-01 20:00:10 to 2026-01-01 20:00:41</title>" in page  # not "20:00 to 20:00"
    assert "2026-01-01 20:00:10 to 2026-01-01 20:00:41 (UTC)" in page
    hour = [post("a", ["smbiz"], 0.5), post("b", ["smbiz"], 59.5)]
    doc = figures(hour, last_event(hour) or Span(0, 1), ["smbiz"]) | {"event": {"name": "N"}}
    assert "2026-01-01 20:00 to 2026-01-01 20:59 (UTC)" in render(doc, {}, UTC)  # a long range: to the minute


def test_each_busiest_minute_names_its_five_busiest_chats_then_how_many_more() -> None:
    chats = [f"chat{i:02d}" for i in range(1, 51)]
    history = [post(f"p{c}{n}", [c], 0, handle=f"u{n}") for i, c in enumerate(chats) for n in range(1 + i % 7)]
    doc = figures(history, last_event(history) or Span(0, 1), chats) | {"event": {}, "profile": "full"}
    assert len(doc["timeline"]["busiest"][0]["chats"]) == 50  # the JSON keeps them all
    page = render(doc, {}, UTC)
    busiest = page[page.index("<h3>Busiest") : page.index("</ol>")]
    [line] = re.findall(r"<li>.*?</li>", busiest)
    text = re.sub(r"<[^>]+>", "", line)
    top = "#chat07 7, #chat14 7, #chat21 7, #chat28 7, #chat35 7"  # most posts first; a tie in config order
    assert text == f"2026-01-01 20:00: {len(history)} posts ({top}, +45 more chats)"


async def test_an_out_that_cannot_be_written_is_refused_before_the_feed_is_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    kept = tmp_path / "night.html"
    kept.write_text("last week's report")
    cases = [
        (tmp_path / "no" / "night.html", f"the directory {tmp_path / 'no'} does not exist"),
        (tmp_path, "it is a directory; give a file name"),
        (kept / "night.html", f"the directory {kept} is not a directory"),
    ]
    for out, problem in cases:  # a dead Redis: without the early check, its error would come first
        argv = ["report", "--redis", "redis://127.0.0.1:1/0", "-o", str(out)]
        assert await asyncio.to_thread(main, argv) == 2, out
        assert capsys.readouterr().err.splitlines() == [f"mixer report: cannot write {out}: {problem}"]
    argv = ["report", "--redis", "redis://127.0.0.1:1/0", "-o", str(kept)]
    assert await asyncio.to_thread(main, argv) == 1  # a Redis that fails after the check: the old file stays whole
    assert "cannot read the feed from Redis" in capsys.readouterr().err
    assert kept.read_text() == "last week's report" and sorted(tmp_path.iterdir()) == [kept]  # no temporary file left


async def replay_and_merge(redis: aioredis.Redis, keys: Keys, path: Path, chats: Sequence[str]) -> None:
    """``path`` into the chat streams at speed 0 (recorded times kept), then the real merge stage until it is done."""
    await Replayer(Publisher(redis, keys, chats, 100_000), [path], ReplayOptions(speed=0, keep_time=True)).run()
    merge = MergeStage(redis, keys, chats, window=0, clock=FakeClock())
    await merge.load_cursors()
    total = sum([await redis.xlen(keys.chat(c)) for c in chats])
    while merge.counters["read"] < total or await merge.step(max_block=0.01):
        await merge.step(max_block=0.01)


def synth_night(tmp_path: Path) -> tuple[Path, list[Post]]:
    path = tmp_path / "synth.jsonl"
    with path.open("wb") as out:
        write_night(spec_for(SYNTH_CHATS, (4.0, 8.0), minutes=20, seed=7), out)
    posts = [p for p in read_records(path) if isinstance(p, Post)]
    hostile = Post("x:h", "x", ("smbiz",), Author("mallory", HOSTILE), "hi", "https://x.test/1", 0, 0)
    last = posts[-1].created
    posts += [hostile.replace(key=f"x:h{i}", text=f"hi {i}", created=last, at=last) for i in range(12)]
    path.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in posts))
    return path, posts


async def test_a_synth_night_through_the_merge_stage_gives_the_cross_posts_synth_made(
    redis: aioredis.Redis, keys: Keys, tmp_path: Path
) -> None:
    path, lines = synth_night(tmp_path)
    await replay_and_merge(redis, keys, path, SYNTH_CHATS)
    history = await load_history(redis, keys.feed, keys)
    doc = figures(history, last_event(history) or Span(0, 1), SYNTH_CHATS)
    chats_by_key: dict[str, set[str]] = {}
    for line in lines:
        if line.boost_of is None:
            chats_by_key.setdefault(line.key, set()).update(line.chats)
    expected = Counter(pair for chats in chats_by_key.values() for pair in combinations(sorted(chats), 2))
    got = {tuple(sorted(p["chats"])): p["posts"] for p in doc["matrix"]["pairs"]}
    assert got == dict(expected) and expected  # synth makes cross-posts: the matrix has exactly those
    boosts = Counter(c for line in lines if line.boost_of for c in line.chats)
    assert {c["chat"]: c["boosts"] for c in doc["per_chat"]} == {c: boosts[c] for c in SYNTH_CHATS}
    assert all(c["questions"] and c["answers"] for c in doc["per_chat"])


async def test_the_replayed_recording_reports_its_last_night_from_the_command(
    redis: aioredis.Redis,
    keys: Keys,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = [p for p in read_records(DEMO_RECORDING) if isinstance(p, Post)]
    chats = sorted({c for p in lines for c in p.chats})
    await replay_and_merge(redis, keys, DEMO_RECORDING, chats)
    monkeypatch.setenv("MIXER_REDIS_PREFIX", keys.prefix)
    code = await asyncio.to_thread(main, ["report", "--redis", redis_url, "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    span = last_event([p.to_dict() for p in lines])
    assert span is not None
    expected = figures([], span)
    assert (doc["from"], doc["to"]) == (expected["from"], expected["to"])
    cards = await feed_posts(redis, keys)  # the feed read back another way: every card, none removed here
    tonight = [p for p in cards if span.start <= p.created < span.end]
    assert 0 < len(tonight) < len(cards)
    assert doc["posts"] == len(tonight) and doc["event"]["hashtag"] == "chatmixer" and doc["profile"] == "full"
    assert doc["matrix"]["chats"] == doc["chats"] and len(doc["matrix"]["counts"]) == len(doc["chats"])
    assert err.strip().splitlines()[-1].startswith(f"mixer report: {len(tonight)} posts")


async def test_an_empty_feed_reports_no_range_rather_than_the_epoch(
    keys: Keys, redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("MIXER_REDIS_PREFIX", keys.prefix)  # nothing was ever merged under it
    assert await asyncio.to_thread(main, ["report", "--redis", redis_url, "--format", "json"]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert (doc["posts"], doc["from"], doc["to"], doc["timeline"]["start"]) == (0, None, None, None)
    assert err.splitlines()[-1] == "mixer report: 0 posts in 0 chats, the feed has no posts"
    page = tmp_path / "empty.html"
    assert await asyncio.to_thread(main, ["report", "--redis", redis_url, "-o", str(page)]) == 0
    html = page.read_text()
    assert "no posts in the feed" in html and "1970" not in html


async def test_matplotlib_chatter_stays_off_stderr_where_its_cache_cannot_be_written(
    redis: aioredis.Redis, keys: Keys, redis_url: str, tmp_path: Path
) -> None:
    await redis.xadd(keys.feed, {FIELD: pack_post(Post("x:1", "x", ("smbiz",), Author("ada", "Ada"), "hi", "", 0, 0))})
    blocked = tmp_path / "not-a-dir"  # as in a container with a read-only root: no cache dir can be made
    blocked.write_text("")
    env = mixer_env(redis_url, keys, "smbiz", MPLCONFIGDIR=str(blocked), HOME=str(blocked))
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "mixer.cli", "report", "--since", "1970-01-01", "-o", str(tmp_path / "r.html")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"mixer report: 1 posts in 1 chats, 1970-01-01T00:00:00Z to 1970-01-01T00:00:01Z, to {tmp_path / 'r.html'}"
    ]


async def test_a_report_of_a_trimmed_feed_says_it_lacks_the_posts_trimmed_away(
    redis: aioredis.Redis,
    keys: Keys,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for i in range(3):  # a feed_maxlen of 2: the first post is trimmed away
        body = Post(f"x:{i}", "x", ("smbiz",), Author("ada", "Ada"), f"hi {i}", "", 1_000 * i, 1_000 * i)
        await redis.xadd(keys.feed, {FIELD: pack_post(body)}, maxlen=2, approximate=False)
    monkeypatch.setenv("MIXER_REDIS_PREFIX", keys.prefix)
    assert await asyncio.to_thread(main, ["report", "--redis", redis_url, "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["posts"] == 2
    note, last = err.splitlines()[-2:]
    assert note.startswith("mixer report: note: the feed keeps only its newest entries ([redis] feed_maxlen)")
    assert note.endswith(": this report lacks the posts that were in them")
    assert last.startswith("mixer report: 2 posts in 1 chats")
    assert await asyncio.to_thread(main, ["report", "--redis", redis_url, "--since", "2999-01-01"]) == 0
    assert "note:" not in capsys.readouterr().err  # a range after the trim lacks nothing


async def test_bad_options_and_no_redis_exit_2_and_a_redis_that_fails_1_each_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # no `mixer run` to find
    monkeypatch.delenv("MIXER_REDIS_URL", raising=False)
    cases = [
        (["--format", "pdf"], 2, "--format must be html or json"),
        (["--profile", "nope"], 2, "--profile: no profile 'nope'"),
        (["--since", "yesterday"], 2, "--since: 'yesterday' is not an ISO 8601 time"),
        (["--since", "2026-01-02", "--until", "2026-01-01"], 2, "--since must be before --until"),
        (["--until", "9999-12-31T23:59:59", "--tz", "Etc/GMT+12"], 2, "--until: '9999-12-31T23:59:59' is out of range"),
        (["--since", "0001-01-01T00:00:00", "--tz", "Etc/GMT-14"], 2, "--since: '0001-01-01T00:00:00' is out of range"),
        (["--tz", "Mars/Base"], 2, "unknown time zone 'Mars/Base'"),
        ([], 2, "reads the feed from a shared Redis"),  # none to join: refused, as transcript and replay do
        (["--redis", "redis://127.0.0.1:1/0"], 1, "cannot read the feed from Redis"),
    ]
    for extra, code, message in cases:
        assert await asyncio.to_thread(main, ["report", *extra]) == code, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("mixer report: ") and message in err[0], (extra, err)


async def test_the_html_report_loads_nothing_runs_nothing_and_shows_its_charts(
    redis: aioredis.Redis,
    keys: Keys,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    chromium_page: Page,
) -> None:
    path, _ = synth_night(tmp_path)
    await replay_and_merge(redis, keys, path, SYNTH_CHATS)
    monkeypatch.setenv("MIXER_REDIS_PREFIX", keys.prefix)
    monkeypatch.setenv("MIXER_CHATS", ",".join(SYNTH_CHATS))
    out = tmp_path / "night.html"
    assert await asyncio.to_thread(main, ["report", "--redis", redis_url, "-o", str(out), "--tz", "Europe/Paris"]) == 0
    requests: list[str] = []
    console_errors: list[str] = []
    chromium_page.on("request", lambda request: requests.append(request.url))
    chromium_page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    dialogs = browser.record_dialogs(chromium_page)
    await chromium_page.goto(out.as_uri())
    assert requests == [out.as_uri()] and not console_errors and not dialogs
    for chart in ("#timeline svg", "#matrix svg"):
        box = await chromium_page.locator(chart).bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 200, chart
    assert await chromium_page.locator("img").count() == 0  # the hostile name stayed text
    assert HOSTILE in await chromium_page.locator("main").inner_text()
    assert await chromium_page.locator(".chat h3").all_inner_texts() == [f"#{c}" for c in SYNTH_CHATS]
    if os.environ.get("MIXER_SCREENSHOTS") == "1":
        await chromium_page.screenshot(path=str(ROOT / "docs" / "screenshots" / "report.png"), full_page=True)
