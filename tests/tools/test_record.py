"""`mixer record`: what the live feed (or ingest) carries from now on, as a recording replay reads back."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import sys
from pathlib import Path

import msgpack
import pytest
import redis.asyncio as aioredis

from mixer.codec import EDIT_FIELD, FIELD, RETRACT_FIELD, pack_post
from mixer.ingest.hashtags import ChatMatcher
from mixer.ingest.recorded import RecordError, read_events
from mixer.keys import Keys
from mixer.models import Post
from mixer.settings import Settings
from mixer.tools.record import (
    RecordOptions,
    RecordProgress,
    add_record_parser,
    options_from_args,
    record,
    record_command,
    redact,
)
from tests.helpers import make_post


def _read_back(path: Path) -> list[Post]:
    events = list(read_events(path, ChatMatcher(None), 0))
    assert not [e for e in events if isinstance(e, RecordError)]
    return [e for e in events if isinstance(e, Post)]


async def _start(
    redis_url: str, keys: Keys, options: RecordOptions, path: Path
) -> tuple[asyncio.Task[RecordProgress], asyncio.Event, io.BufferedWriter]:
    out = path.open("wb")
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(record(redis_url, keys, options, out, stop, ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    return task, stop, out


async def test_feed_recording_starts_now_and_replay_reads_back_the_same_posts(
    redis: aioredis.Redis, redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    await redis.xadd(keys.feed, {FIELD: pack_post(make_post("x:old"))})  # before the start: not recorded
    path = tmp_path / "feed.jsonl"
    task, _, out = await _start(redis_url, keys, RecordOptions(count=3), path)
    posts = [
        make_post(f"x:{i}", ("smbiz", "edchat") if i == 1 else ("smbiz",), 1_700_000_000_000 + i) for i in range(3)
    ]
    expected = []
    for i, post in enumerate(posts):
        entry_id = await redis.xadd(keys.feed, {FIELD: pack_post(post)})
        if i == 0:
            await redis.xadd(keys.feed, {EDIT_FIELD: pack_post(post)})  # an update: not a post, not recorded
        expected.append(
            Post.from_dict({**post.to_dict(), "id": entry_id.decode() if isinstance(entry_id, bytes) else entry_id})
        )
    done = await asyncio.wait_for(task, 10)
    out.close()
    assert done.posts == 3 and done.skipped == {"not_post": 1}
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# recorded by mixer record") and "profile full" in lines[0]
    assert lines[1].startswith("# started: ") and keys.prefix in lines[2]
    assert lines[-1].startswith("# ended: ") and lines[-1].endswith("3 posts")
    assert _read_back(path) == expected


async def test_shaped_profile_recording_keeps_feed_ids_and_only_the_chats_asked_for(
    redis: aioredis.Redis, redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    path = tmp_path / "wall.jsonl"
    task, _, out = await _start(redis_url, keys, RecordOptions(profile="wall", chats=("edchat",), count=1), path)
    for i, chat in enumerate(("smbiz", "edchat")):
        body = {**make_post(f"x:{i}", (chat,)).to_dict(), "ref": f"17-{i}"}
        del body["id"]
        await redis.xadd(keys.shaped("wall"), {FIELD: msgpack.packb(body)})
    done = await asyncio.wait_for(task, 10)
    out.close()
    assert done.skipped == {"other_chat": 1}
    assert [(p.key, p.id, p.chats) for p in _read_back(path)] == [("x:1", "17-1", ("edchat",))]


async def test_a_recording_of_some_chats_keeps_a_post_that_joins_one_of_them_later_under_its_feed_id(
    redis: aioredis.Redis, redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    path = tmp_path / "joined.jsonl"
    task, _, out = await _start(redis_url, keys, RecordOptions(chats=("edchat",), count=2), path)
    post = make_post("x:late", ("smbiz",))
    post_id = (await redis.xadd(keys.feed, {FIELD: pack_post(post)})).decode()
    now = {**post.to_dict(), "id": post_id, "chats": ["smbiz", "edchat"]}
    await redis.xadd(keys.feed, {EDIT_FIELD: msgpack.packb({**now, "joined": ["edchat"]})})  # now in edchat
    await redis.xadd(keys.feed, {EDIT_FIELD: msgpack.packb({**now, "text": "edited"})})  # an edit: not a post
    await redis.xadd(keys.feed, {FIELD: pack_post(make_post("x:next", ("edchat",)))})
    done = await asyncio.wait_for(task, 10)
    out.close()
    assert done.skipped == {"other_chat": 1, "not_post": 1}
    late, following = _read_back(path)
    assert (late.key, late.id, late.chats) == ("x:late", post_id, ("smbiz", "edchat"))
    assert following.key == "x:next"


async def test_a_feed_recording_writes_a_post_again_when_it_gains_a_chat_so_replay_keeps_the_cross_post(
    redis: aioredis.Redis, redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    path = tmp_path / "feed.jsonl"
    task, _, out = await _start(redis_url, keys, RecordOptions(count=3), path)
    post = make_post("x:cross", ("smbiz",))
    post_id = (await redis.xadd(keys.feed, {FIELD: pack_post(post)})).decode()
    now = {**post.to_dict(), "id": post_id, "chats": ["smbiz", "edchat"]}
    await redis.xadd(keys.feed, {EDIT_FIELD: msgpack.packb({**now, "joined": ["edchat"]})})  # its copy in edchat
    await redis.xadd(keys.feed, {EDIT_FIELD: msgpack.packb({**now, "boosts": 1})})  # a count: not a post
    await redis.xadd(keys.feed, {FIELD: pack_post(make_post("x:next", ("edchat",)))})
    try:
        done = await asyncio.wait_for(task, 10)  # the third line is written only if the joined copy is
    finally:
        out.close()
    assert done.skipped == {"not_post": 1}
    assert [(p.key, p.id, p.chats) for p in _read_back(path)] == [
        ("x:cross", post_id, ("smbiz",)),
        ("x:cross", post_id, ("smbiz", "edchat")),
        ("x:next", _read_back(path)[2].id, ("edchat",)),
    ]


async def test_raw_recording_writes_each_post_key_once_in_time_order(
    redis: aioredis.Redis, redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    path = tmp_path / "raw.jsonl"
    options = RecordOptions(raw=True, chats=("smbiz", "edchat"), count=2)
    task, _, out = await _start(redis_url, keys, options, path)
    twin = make_post("x:both", ("smbiz", "edchat"), created=1_700_000_000_500)
    early = make_post("x:early", ("edchat",), created=1_700_000_000_000)
    async with redis.pipeline(transaction=True) as tx:  # one read sees all of it
        tx.xadd(keys.chat("smbiz"), {FIELD: pack_post(twin)})
        tx.xadd(keys.chat("edchat"), {FIELD: pack_post(twin)})
        tx.xadd(keys.chat("edchat"), {RETRACT_FIELD: msgpack.packb({"key": "x:9", "source": "x"})})
        tx.xadd(keys.chat("edchat"), {FIELD: pack_post(early)})
        await tx.execute()
    done = await asyncio.wait_for(task, 10)
    out.close()
    assert done.posts == 2 and done.skipped == {"duplicate": 1, "not_post": 1}
    assert "chat streams as ingest published them" in path.read_text().splitlines()[0]
    assert _read_back(path) == [early, twin]


async def test_raw_recording_keeps_a_cross_post_published_apart_in_each_chat_it_reached(
    redis: aioredis.Redis, redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    path = tmp_path / "raw.jsonl"
    options = RecordOptions(raw=True, chats=("smbiz", "edchat"), count=3)
    task, _, out = await _start(redis_url, keys, options, path)
    # one post published twice, apart, in two chats (as a follower of each chat would, or mixer synth's cross-posts)
    first = make_post("x:cross", ("smbiz",), created=1_700_000_000_000)
    apart = make_post("x:cross", ("edchat",), created=1_700_000_000_000)
    last = make_post("x:last", ("edchat",), created=1_700_000_000_100)
    async with redis.pipeline(transaction=True) as tx:
        tx.xadd(keys.chat("smbiz"), {FIELD: pack_post(first)})
        tx.xadd(keys.chat("edchat"), {FIELD: pack_post(apart)})
        tx.xadd(keys.chat("edchat"), {FIELD: pack_post(apart)})  # brings no new chat: a repeat
        tx.xadd(keys.chat("edchat"), {FIELD: pack_post(last)})
        await tx.execute()
    try:
        done = await asyncio.wait_for(task, 10)  # the third post is written only if the second copy is
    finally:
        out.close()
    assert done.posts == 3 and done.skipped == {"duplicate": 1}
    assert [(p.key, p.chats) for p in _read_back(path)] == [
        ("x:cross", ("smbiz",)),
        ("x:cross", ("edchat",)),
        ("x:last", ("edchat",)),
    ]


async def test_raw_without_chats_reads_every_chat_stream_there_is(
    redis: aioredis.Redis, redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    await redis.xadd(keys.chat("dogchat"), {FIELD: pack_post(make_post("x:old", ("dogchat",)))})
    path = tmp_path / "raw.jsonl"
    task, _, out = await _start(redis_url, keys, RecordOptions(raw=True, count=1), path)
    await redis.xadd(keys.chat("dogchat"), {FIELD: pack_post(make_post("x:new", ("dogchat",)))})
    await asyncio.wait_for(task, 10)
    out.close()
    assert [p.key for p in _read_back(path)] == ["x:new"]


async def test_stops_after_its_duration_and_when_told(redis_url: str, keys: Keys, tmp_path: Path) -> None:
    path = tmp_path / "quiet.jsonl"
    with path.open("wb") as out:
        done = await asyncio.wait_for(record(redis_url, keys, RecordOptions(duration=0.2), out, asyncio.Event()), 10)
    assert done.posts == 0 and _read_back(path) == []
    task, stop, out = await _start(redis_url, keys, RecordOptions(), tmp_path / "told.jsonl")
    stop.set()
    assert (await asyncio.wait_for(task, 10)).posts == 0
    out.close()
    assert (tmp_path / "told.jsonl").read_text().splitlines()[-1].startswith("# ended: ")


def test_header_never_shows_the_redis_password() -> None:
    assert redact("redis://:s3cret@db.example:6380/2") == "redis://***@db.example:6380/2"
    assert redact("redis://user:pw@db/0") == "redis://***@db/0"
    assert redact("unix:///run/redis.sock") == "unix:///run/redis.sock"


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_record_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["record", *argv])


def test_flags_become_options_and_bad_ones_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0")
    assert options_from_args(settings, _args("--chats", "#SmBiz,edchat", "--count", "5")) == RecordOptions(
        chats=("smbiz", "edchat"), count=5
    )
    assert options_from_args(settings, _args("--profile", "wall", "--duration", "2")).profile == "wall"
    for bad in (["--profile", "nope"], ["--duration", "0"], ["--count", "0"]):
        assert record_command(settings, _args(*bad)) == 2
    assert record_command(Settings(), _args()) == 2
    assert "--redis" in capsys.readouterr().err


async def test_sigterm_stops_the_command_with_everything_read_written(
    redis: aioredis.Redis, redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    path = tmp_path / "signal.jsonl"
    script = (
        "import sys; from mixer.tools.record import add_record_parser, record_command; import argparse; "
        "from mixer.settings import Settings; p = argparse.ArgumentParser(); "
        "add_record_parser(p.add_subparsers(dest='command')); "
        f"sys.exit(record_command(Settings(redis_url={redis_url!r}, key_prefix={keys.prefix!r}), "
        f"p.parse_args(['record', '--out', {str(path)!r}])))"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stderr=asyncio.subprocess.PIPE, cwd=os.getcwd()
    )
    assert proc.stderr is not None
    lines: list[str] = []

    async def until(marker: str) -> None:
        while marker not in (line := (await proc.stderr.readline()).decode()):  # type: ignore[union-attr]
            assert line, f"exited before {marker!r}: {lines}"
            lines.append(line)

    await asyncio.wait_for(until("recording the full feed"), 20)
    await redis.xadd(keys.feed, {FIELD: pack_post(make_post("x:1"))})
    await asyncio.wait_for(until("1 posts recorded"), 20)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 20) == 0
    assert [p.key for p in _read_back(path)] == ["x:1"]
    assert path.read_text().splitlines()[-1].endswith("1 posts")
