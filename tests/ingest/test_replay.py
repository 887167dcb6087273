from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from mixer.codec import FIELD, unpack_post
from mixer.ingest.publish import Publisher
from mixer.ingest.recorded import RecordError
from mixer.ingest.replay import SUMMARY_EVERY, Replayer, ReplayOptions, Schedule, plan, restamp
from mixer.keys import Keys
from mixer.models import Post
from tests.helpers import FIXTURES as FIXTURES_DIR
from tests.helpers import make_post

FIXTURES = FIXTURES_DIR / "recorded"
MARCH = FIXTURES / "pstweetchat_2019-03-01.jsonl"
APRIL = FIXTURES / "pstweetchat_2019-04-05.jsonl"
MALFORMED = FIXTURES / "pstweetchat_malformed.jsonl"
CHAT = "pstweetchat"
T0 = 1_700_000_000_000


def write(path: Path, posts: Iterable[Post]) -> Path:
    path.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in posts))
    return path


def posts_at(*seconds: float, chats: tuple[str, ...] = (CHAT,), prefix: str = "p") -> list[Post]:
    return [make_post(f"{prefix}{i}", chats, created=T0 + round(s * 1000)) for i, s in enumerate(seconds)]


async def chat_stream(redis: aioredis.Redis, keys: Keys, chat: str = CHAT) -> list[Post]:
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(keys.chat(chat))  # type: ignore[assignment]
    return [unpack_post(eid.decode(), fields[FIELD]) for eid, fields in entries]


def replayer(
    redis: aioredis.Redis, keys: Keys, paths: list[Path], clock: LoopClock | None = None, **options: object
) -> Replayer:
    publisher = Publisher(redis, keys, [CHAT], maxlen=100_000)
    timing = {"clock": clock, "sleep": clock.sleep} if clock is not None else {}
    return Replayer(publisher, paths, ReplayOptions(**options), wall=lambda: 1_800_000_000.5, **timing)  # type: ignore[arg-type]


class LoopClock:
    """Seconds that pass only when the replayer sleeps: a paced loop is seen without waiting for it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


# Pure scheduling, driven by a fake clock.


def test_schedule_at_speed_2_makes_each_post_due_at_half_its_recorded_offset() -> None:
    posts = posts_at(0, 10, 30)
    schedule = Schedule(plan([posts]), start=100.0, speed=2)
    assert schedule.next_due() == 100.0
    assert schedule.take_due(100.0, limit=10) == posts[:1]
    assert schedule.next_due() == 105.0
    assert schedule.take_due(104.99, limit=10) == []
    assert schedule.take_due(105.0, limit=10) == posts[1:2]
    assert schedule.next_due() == 115.0
    assert schedule.take_due(200.0, limit=10) == posts[2:]
    assert schedule.next_due() is None


def test_max_gap_cuts_long_silences_to_the_cap_in_recorded_time() -> None:
    posts = posts_at(0, 2, 30 * 86400, 30 * 86400 + 1, 60 * 86400)  # a monthly chat
    offsets = [s.offset for s in plan([posts], max_gap=5)]
    assert offsets == [0, 2000, 7000, 8000, 13000]
    schedule = Schedule(plan([posts], max_gap=5), start=0.0, speed=10)
    assert [schedule.take_due(t, limit=10) for t in (0.0, 0.2, 0.7, 0.8, 1.3)] == [[p] for p in posts]


def test_two_recordings_are_aligned_to_start_together_and_interleaved_by_offset() -> None:
    early = posts_at(0, 3, 4, prefix="a")
    late = [make_post(f"b{i}", created=T0 + 10**9 + s * 1000) for i, s in enumerate((1, 3, 5))]  # offsets 0, 2, 4
    order = [s.item.key for s in plan([early, late]) if isinstance(s.item, Post)]
    assert order == ["a0", "b0", "b1", "a1", "a2", "b2"]  # ties go to the first recording


def test_speed_0_makes_everything_due_at_once_and_batches_by_limit() -> None:
    schedule = Schedule(plan([posts_at(*range(1200))]), start=5.0, speed=0)
    assert [len(schedule.take_due(5.0, limit=500)) for _ in range(4)] == [500, 500, 200, 0]


def test_an_unsorted_recording_keeps_file_order_and_an_error_falls_with_the_post_before_it() -> None:
    a, b, c = posts_at(10, 5, 20)
    error = RecordError("f", 3, "bad")
    assert [(s.offset, s.item) for s in plan([[a, error, b, c]])] == [(0, a), (0, error), (0, b), (15000, c)]


# The async runner against a real Redis.


async def test_malformed_line_is_reported_with_its_line_number_and_the_rest_is_published(
    redis: aioredis.Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        progress = await replayer(redis, keys, [MALFORMED], speed=0).run()
    published = await chat_stream(redis, keys)
    assert [p.key for p in published] == [
        "x:1101542707992899584",
        "x:1101543019856228352",
        "x:1101543455069749248",
        "x:1101543472715063298",
        "x:1101543496962531330",
    ]
    assert progress.published == 5
    assert progress.read == 8
    assert progress.skipped["malformed"] == 3
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [m.split(f"{MALFORMED}:")[1].split(":")[0] for m in logged] == ["8", "10", "12"]


async def test_comment_lines_are_skipped_and_not_counted(redis: aioredis.Redis, keys: Keys) -> None:
    progress = await replayer(redis, keys, [MARCH], speed=0).run()
    assert progress.read == progress.published == 10
    assert not progress.skipped


async def test_two_files_start_together_and_are_published_interleaved_in_time_order(
    redis: aioredis.Redis, keys: Keys
) -> None:
    await replayer(redis, keys, [MARCH, APRIL], speed=0).run()
    published = await chat_stream(redis, keys)

    def offsets(path: Path) -> dict[str, int]:
        created = [json.loads(line)["created"] for line in path.read_text().splitlines() if line.startswith("{")]
        keys_ = [json.loads(line)["key"] for line in path.read_text().splitlines() if line.startswith("{")]
        return {k: c - created[0] for k, c in zip(keys_, created, strict=True)}

    expected = sorted({**offsets(MARCH), **offsets(APRIL)}.items(), key=lambda kv: kv[1])
    assert [p.key for p in published] == [k for k, _ in expected]
    assert {p.key[:8] for p in published[:4]} == {"x:110154", "x:111421"}  # both files from the start


async def test_speed_0_publishes_everything_in_several_batches(
    tmp_path: Path, redis: aioredis.Redis, keys: Keys
) -> None:
    path = write(tmp_path / "big.jsonl", posts_at(*range(1201)))
    progress = await replayer(redis, keys, [path], speed=0).run()
    assert progress.published == 1201
    assert await redis.xlen(keys.chat(CHAT)) == 1201


async def test_loop_gives_every_pass_after_the_first_unique_keys(
    tmp_path: Path, redis: aioredis.Redis, keys: Keys
) -> None:
    path = write(tmp_path / "r.jsonl", posts_at(0, 1))
    progress = await replayer(redis, keys, [path], speed=0, loop=True, max_passes=3).run()
    assert progress.passes == 3
    assert [p.key for p in await chat_stream(redis, keys)] == ["p0", "p1", "p0~1", "p1~1", "p0~2", "p1~2"]


async def test_keep_keys_publishes_the_recorded_keys_on_every_pass(
    tmp_path: Path, redis: aioredis.Redis, keys: Keys
) -> None:
    path = write(tmp_path / "r.jsonl", posts_at(0, 1))
    await replayer(redis, keys, [path], speed=0, loop=True, max_passes=2, min_pass=0, keep_keys=True).run()
    assert [p.key for p in await chat_stream(redis, keys)] == ["p0", "p1", "p0", "p1"]  # the merge stage drops repeats


async def test_a_run_tag_suffixes_every_pass_including_the_first(
    tmp_path: Path, redis: aioredis.Redis, keys: Keys
) -> None:
    path = write(tmp_path / "r.jsonl", posts_at(0, 1))
    await replayer(redis, keys, [path], speed=0, loop=True, max_passes=2, min_pass=0, run_tag="k3x").run()
    assert [p.key for p in await chat_stream(redis, keys)] == ["p0~k3x.0", "p1~k3x.0", "p0~k3x.1", "p1~k3x.1"]


async def test_keep_keys_wins_over_a_run_tag(tmp_path: Path, redis: aioredis.Redis, keys: Keys) -> None:
    path = write(tmp_path / "r.jsonl", posts_at(0))
    await replayer(redis, keys, [path], speed=0, loop=True, max_passes=2, min_pass=0, keep_keys=True, run_tag="t").run()
    assert [p.key for p in await chat_stream(redis, keys)] == ["p0", "p0"]


async def test_pass_starts_records_the_wall_clock_at_the_start_of_each_pass(
    tmp_path: Path, redis: aioredis.Redis, keys: Keys
) -> None:
    path = write(tmp_path / "r.jsonl", posts_at(0, 1))
    walls = iter(range(1000, 2000, 10))
    publisher = Publisher(redis, keys, [CHAT], maxlen=1000)
    options = ReplayOptions(speed=0, loop=True, max_passes=3, min_pass=0)
    replay = Replayer(publisher, [path], options, wall=lambda: float(next(walls)))
    progress = await replay.run()
    # Each pass reads the wall once as it starts and once per batch (one batch of two posts here).
    assert progress.pass_starts == [1000.0, 1020.0, 1040.0]


def test_a_rekeyed_post_names_rekeyed_posts_and_its_text_says_which_pass_it_is() -> None:
    post = make_post("x:2").replace(boost_of="x:1", quote_of="x:0", reply_to="x:9", text="hello there")
    first = restamp(post, T0, 0, keep_time=False, run_tag="k3x")
    assert (first.key, first.boost_of, first.quote_of, first.reply_to) == (
        "x:2~k3x.0",
        "x:1~k3x.0",
        "x:0~k3x.0",
        "x:9~k3x.0",
    )
    assert first.text == "hello there"  # texts stay as recorded on the first pass (a wall shows them)
    assert restamp(post, T0, 1, keep_time=False, run_tag="k3x").text == "hello there (pass 2)"
    assert restamp(post, T0, 1, keep_time=False).text == "hello there (pass 2)"
    assert restamp(post, T0, 0, keep_time=False, run_tag="k3x", tag_text=True).text == "hello there [k3x.0]"
    assert restamp(post, T0, 0, keep_time=False, tag_text=True) == post.replace(created=T0, at=T0)


def test_a_run_tag_that_cannot_sit_in_a_key_is_refused() -> None:
    for tag in ("a b", "x~1", "t" * 33):
        with pytest.raises(ValueError, match="run tag"):
            ReplayOptions(run_tag=tag)


async def test_posts_are_restamped_to_publish_time_by_default(
    tmp_path: Path, redis: aioredis.Redis, keys: Keys
) -> None:
    path = write(tmp_path / "r.jsonl", posts_at(0, 1))
    await replayer(redis, keys, [path], speed=0).run()
    assert {(p.created, p.at) for p in await chat_stream(redis, keys)} == {(1_800_000_000_500, 1_800_000_000_500)}


async def test_keep_time_keeps_recorded_created_and_stamps_at(
    tmp_path: Path, redis: aioredis.Redis, keys: Keys
) -> None:
    path = write(tmp_path / "r.jsonl", posts_at(0, 1))
    await replayer(redis, keys, [path], speed=0, keep_time=True).run()
    stamps = [(p.created, p.at) for p in await chat_stream(redis, keys)]
    assert stamps == [(T0, 1_800_000_000_500), (T0 + 1000, 1_800_000_000_500)]


async def test_post_in_no_configured_chat_is_counted_and_skipped(
    tmp_path: Path, redis: aioredis.Redis, keys: Keys
) -> None:
    path = write(tmp_path / "r.jsonl", posts_at(0) + posts_at(1, chats=("elsewhere",), prefix="q"))
    progress = await replayer(redis, keys, [path], speed=0).run()
    assert (progress.published, progress.skipped["no_chat"]) == (1, 1)


async def test_paced_replay_waits_on_the_loop_clock_until_each_post_is_due(
    tmp_path: Path, redis: aioredis.Redis, keys: Keys
) -> None:
    path = write(tmp_path / "r.jsonl", posts_at(0, 0.2, 0.4))
    loop = asyncio.get_running_loop()
    started = loop.time()
    progress = await replayer(redis, keys, [path], speed=4).run()
    assert progress.published == 3
    assert loop.time() - started >= 0.1  # 0.4 s recorded at 4x; a lower bound only


async def test_cancelling_a_looping_replay_propagates_and_publishes_nothing_more(
    tmp_path: Path, redis: aioredis.Redis, keys: Keys
) -> None:
    path = write(tmp_path / "r.jsonl", posts_at(0, 3600))  # the second post is an hour away
    task = asyncio.create_task(replayer(redis, keys, [path], speed=1, loop=True).run())
    assert await redis.xread({keys.chat(CHAT): "0-0"}, block=5000)  # the first post is out
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await redis.xlen(keys.chat(CHAT)) == 1


async def test_looping_over_a_recording_without_posts_stops_instead_of_spinning(
    tmp_path: Path, redis: aioredis.Redis, keys: Keys
) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("# nothing here\nnot json\n")
    progress = await replayer(redis, keys, [path], speed=0, loop=True).run()
    assert (progress.passes, progress.skipped["malformed"]) == (1, 1)


async def test_a_missing_recording_is_a_clear_error_before_anything_is_published(
    tmp_path: Path, redis: aioredis.Redis, keys: Keys
) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.jsonl"):
        await replayer(redis, keys, [MARCH, tmp_path / "missing.jsonl"], speed=0).run()
    assert await redis.exists(keys.chat(CHAT)) == 0


@pytest.mark.parametrize("speed", [-1.0, float("nan"), float("inf")])
def test_options_reject_a_speed_that_is_not_a_finite_non_negative_number(speed: float) -> None:
    with pytest.raises(ValueError, match="speed"):
        ReplayOptions(speed=speed)


def test_options_reject_a_negative_or_nan_max_gap() -> None:
    for gap in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="max_gap"):
            ReplayOptions(max_gap=gap)


@pytest.mark.parametrize("lines", [1, 2], ids=["one-line", "newest-first"])
async def test_a_looping_replay_of_a_file_without_time_span_paces_itself_and_logs_passes_at_debug(
    lines: int, tmp_path: Path, redis: aioredis.Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "r.jsonl", posts_at(*[-s for s in range(lines)]))  # newest first: every offset is 0
    clock = LoopClock()
    with caplog.at_level(logging.DEBUG, logger="mixer.ingest.replay"):
        progress = await replayer(redis, keys, [path], clock, speed=1, loop=True, max_passes=5).run()
    assert progress.passes == 5
    assert clock.now == 4.0  # four waits of one second between five passes
    passes = [r for r in caplog.records if "replay pass" in r.getMessage()]
    assert [r.levelno for r in passes] == [logging.DEBUG] * 4
    assert [r.getMessage().split(":")[0] for r in caplog.records if r.levelno >= logging.INFO] == ["replay done"]


async def test_a_long_loop_logs_a_summary_at_info_at_most_once_a_minute(
    tmp_path: Path, redis: aioredis.Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "r.jsonl", posts_at(0))
    clock = LoopClock()
    with caplog.at_level(logging.INFO, logger="mixer.ingest.replay"):
        await replayer(redis, keys, [path], clock, speed=0, loop=True, max_passes=130).run()
    summaries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("replay: ")]
    assert len(summaries) == int(clock.now // SUMMARY_EVERY) == 2  # 129 s of passes
    assert "61 passes" in summaries[0]


def test_options_reject_a_negative_minimum_pass() -> None:
    with pytest.raises(ValueError, match="min_pass"):
        ReplayOptions(min_pass=-1.0)
