"""Recordings of real payloads read as they were lived (issue 14): a Mastodon delete retracts a status published
earlier in the same file, a line of NULs is called what it is, and a 50 MB post never reaches the feed whole."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from mixer.ingest import recorded
from mixer.ingest.hashtags import ChatMatcher
from mixer.ingest.publish import Publisher
from mixer.ingest.recorded import RecordError, read_events, read_grouped
from mixer.ingest.replay import Replayer, ReplayOptions
from mixer.keys import Keys
from mixer.merge.stage import MergeStage
from mixer.models import ELLIPSIS, LIMITS, Post, Retraction
from tests.helpers import FIXTURES, FakeClock, feed_entries

MASTODON = FIXTURES / "mastodon"
SSE = MASTODON / "test_stream_user_direct.12.sse"  # update, notification, update (direct), ..., status.update, delete
EVERY = ChatMatcher(None)
NOW = 1_800_000_000_000


def hoot_status() -> dict[str, Any]:
    """A real public status tagged #hoot (the hashtag timeline), so a replay has a chat to publish it to."""
    status: dict[str, Any] = json.loads((MASTODON / "test_hashtag_tl.02.json").read_text())[0]
    return status


def write_lines(path: Path, *records: Any) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_a_delete_in_a_recorded_sse_body_retracts_the_status_published_earlier_in_it() -> None:
    events = list(read_events(SSE, EVERY, NOW))
    first, *_, last = events
    assert isinstance(first, Post)
    assert last == Retraction(first.key, "mastodon")  # keyed by uri, like the post, so it leaves every screen


def test_a_delete_of_a_boost_and_of_its_original_in_a_recording_retract_each(tmp_path: Path) -> None:
    boost = json.loads((MASTODON / "test_status_reblog_unreblog.01.json").read_text())
    deletes = [{"event": "delete", "payload": s["id"]} for s in (boost, boost["reblog"])]
    original, boosted, *retractions = read_events(write_lines(tmp_path / "r.jsonl", boost, *deletes), EVERY, NOW)
    assert isinstance(original, Post) and isinstance(boosted, Post)
    assert retractions == [Retraction(boosted.key, "mastodon"), Retraction(original.key, "mastodon")]


def test_a_delete_of_a_status_not_earlier_in_the_file_is_counted_as_unseen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = hoot_status(), json.loads((MASTODON / "test_status_card.01.json").read_text())
    path = write_lines(
        tmp_path / "r.jsonl",
        {"event": "delete", "payload": first["id"]},
        first,
        second,
        *[{"event": "delete", "payload": s["id"]} for s in (first, second)],
    )
    monkeypatch.setattr(recorded, "MASTODON_IDS_MAX", 1)  # a reader remembers a bounded number of statuses
    ignored: Counter[str] = Counter()
    events = [e for group in read_grouped(path, EVERY, NOW, ignored=ignored) for e in group]  # type: ignore[union-attr]
    assert [type(e).__name__ for e in events] == ["Post", "Post", "Retraction"]
    assert events[2] == Retraction(f"mastodon:{second['uri']}", "mastodon")
    assert ignored == {"delete_of_unseen_status": 2}  # before its status, and after it was forgotten


async def test_mixer_replay_of_a_status_and_its_delete_retracts_the_card_on_the_feed(
    redis: aioredis.Redis, keys: Keys, tmp_path: Path
) -> None:
    status = hoot_status()
    path = write_lines(tmp_path / "night.jsonl", status, {"event": "delete", "payload": status["id"]})
    progress = await Replayer(Publisher(redis, keys, ["hoot"], maxlen=1000), [path], ReplayOptions(speed=0)).run()
    assert (progress.published, progress.retractions) == (1, 1)
    stage = MergeStage(redis, keys, ["hoot"], window=0, clock=FakeClock())
    await stage.load_cursors()
    await stage.step(max_block=0.01)
    (post_kind, post), (kind, retract) = await feed_entries(redis, keys)
    assert (post_kind, kind) == ("p", "r")
    assert retract["ids"] == [post["id"]] and retract["keys"] == [f"mastodon:{status['uri']}"]


def test_a_line_of_nul_bytes_is_reported_as_nul_bytes_and_the_next_line_is_read(tmp_path: Path) -> None:
    post = Post.from_dict(
        {"key": "x:1", "source": "x", "chats": ["smbiz"], "author": {"handle": "a"}, "created": 1_700_000_000_000}
    )
    path = tmp_path / "cut.jsonl"  # a recorder killed mid-write leaves its pre-allocated tail as NULs
    path.write_bytes(b"\x00" * 4096 + b"\n" + json.dumps(post.to_dict()).encode() + b'\n{"key":\x00\x00}\n')
    error, good, binary = read_events(path, EVERY, NOW, log_errors=False)
    assert error == RecordError(str(path), 1, "4,096 NUL bytes, not JSON (a file padded or cut short?)")
    assert good == post
    assert isinstance(binary, RecordError) and binary.reason == "binary data, not JSON: a NUL byte at character 8"


async def test_a_50_mb_text_in_a_recording_reaches_the_feed_cut_to_the_text_limit(
    redis: aioredis.Redis, keys: Keys, tmp_path: Path
) -> None:
    huge = {
        "key": "webhook:huge",
        "source": "webhook",
        "chats": ["smbiz"],
        "author": {"handle": "flood", "name": "Flood"},
        "text": "Q1: " + "w" * 50_000_000,
        "url": "https://example.test/huge",
        "created": int(time.time() * 1000),
    }
    path = write_lines(tmp_path / "huge.jsonl", huge)
    progress = await Replayer(Publisher(redis, keys, ["smbiz"], maxlen=1000), [path], ReplayOptions(speed=0)).run()
    assert progress.published == 1
    stage = MergeStage(redis, keys, ["smbiz"], window=0, clock=FakeClock())
    await stage.load_cursors()
    await stage.step(max_block=0.01)
    [(kind, post)] = await feed_entries(redis, keys)
    assert kind == "p" and isinstance(post["text"], str)
    assert len(post["text"]) == LIMITS.text and post["text"].endswith(ELLIPSIS)
    assert await redis.memory_usage(keys.feed) < 100_000
