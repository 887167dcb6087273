from __future__ import annotations

import bz2
import gzip
import io
import json
import logging
import lzma
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from mixer.codec import FIELD, RETRACT_FIELD, pack_post, unpack_post
from mixer.ingest.hashtags import ChatMatcher
from mixer.ingest.publish import Publisher
from mixer.ingest.recorded import (
    LOGGED_ERRORS,
    RecordError,
    event_dict,
    parse_line,
    parse_record,
    read_events,
    read_grouped,
    read_records,
    record_kind,
)
from mixer.ingest.replay import Replayer, ReplayOptions, plan, restamp, restamp_event
from mixer.keys import Keys
from mixer.models import Edit, Ignored, Post, Retraction
from mixer.settings import DEMO_RECORDING
from tests.helpers import FIXTURES as FIXTURES_DIR
from tests.helpers import make_post

T0 = 1_700_000_000_000

FIXTURES = FIXTURES_DIR / "recorded"
MALFORMED = FIXTURES / "pstweetchat_malformed.jsonl"


def test_malformed_lines_are_reported_with_line_numbers_and_every_good_line_is_still_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="mixer.ingest.recorded"):
        records = list(read_records(MALFORMED))
    errors = [r for r in records if isinstance(r, RecordError)]
    posts = [r for r in records if isinstance(r, Post)]
    assert [e.line for e in errors] == [8, 10, 12]
    assert errors[0].reason.startswith("not JSON")
    assert "'chats'" in errors[1].reason
    assert "JSON object" in errors[2].reason
    assert len(posts) == 5
    assert [r.line if isinstance(r, RecordError) else r.key for r in records][:3] == [
        "x:1101542707992899584",
        "x:1101543019856228352",
        8,
    ]
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 3
    assert f"{MALFORMED}:8: not JSON" in logged[0]
    assert f"{MALFORMED}:12: " in logged[2]


@pytest.mark.parametrize(
    ("encode", "kind"),
    [
        (gzip.compress, "gzip-compressed"),
        (bz2.compress, "bzip2-compressed"),
        (lzma.compress, "xz-compressed"),
        (lambda data: data.decode().encode("utf-16"), "UTF-16 text"),
        (lambda data: data.decode().encode("utf-32"), "UTF-32 text"),
    ],
)
def test_a_compressed_or_utf16_recording_is_one_error_naming_what_it_is(
    tmp_path: Path, encode: Callable[[bytes], bytes], kind: str
) -> None:
    path = tmp_path / "night.jsonl.packed"
    path.write_bytes(encode(MALFORMED.read_bytes()))  # line by line, each "line" would be an error of its own
    records = list(read_records(path, log_errors=False))
    assert len(records) == 1 and isinstance(records[0], RecordError)
    assert records[0].line == 1
    assert records[0].reason.startswith(f"{kind}, not a recording (UTF-8 JSON text): ")


def test_a_file_of_nothing_but_malformed_records_logs_the_first_ones_and_counts_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "export.csv"
    path.write_text("".join(f"2019-03-01,user{n},hello #pstweetchat\n" for n in range(500)))
    with caplog.at_level(logging.WARNING, logger="mixer.ingest.recorded"):
        records = list(read_records(path))
    assert len(records) == 500 and all(isinstance(r, RecordError) for r in records)
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == LOGGED_ERRORS + 1
    assert logged[0].startswith(f"skipped malformed record {path}:1: not JSON")
    assert logged[-1].endswith(f"further malformed records of {path} are counted, not logged")


def test_comment_and_blank_lines_are_skipped_silently(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    post = json.loads(MALFORMED.read_text().splitlines()[4])
    path = tmp_path / "r.jsonl"
    path.write_text("# origin: somewhere\n\n   \n  # indented note\n" + json.dumps(post) + "\n\n")
    with caplog.at_level(logging.WARNING):
        records = list(read_records(path))
    assert [r.key for r in records if isinstance(r, Post)] == [post["key"]]
    assert len(records) == 1
    assert caplog.records == []


def test_bad_bytes_and_unstorable_values_become_errors_not_crashes(tmp_path: Path) -> None:
    good = MALFORMED.read_text().splitlines()[4]
    post = json.loads(good)
    path = tmp_path / "r.jsonl"
    lines = [
        b"\xef\xbb\xbf" + good.encode(),  # a byte-order mark from a Windows editor is not an error
        b'{"text": "\xff"}',
        json.dumps({**post, "created": 10**30}).encode(),
        json.dumps({**post, "text": "\ud800"}).encode(),
        good.replace('"created":', '"created":1e999,"x":').encode(),
        b"[" * 100_000,
        good.encode(),
    ]
    path.write_bytes(b"\n".join(lines))
    records = list(read_records(path, log_errors=False))
    assert [type(r).__name__ for r in records] == ["Post"] + ["RecordError"] * 5 + ["Post"]
    at = len(lines[0]) + 1 + len(b'{"text": "') + 1  # the \xff: its position in the file, from 1
    assert next(r.reason for r in records if isinstance(r, RecordError)) == (
        f"not UTF-8 at byte {at} of the file (0xff); save it as UTF-8"
    )


@pytest.mark.parametrize(
    "body",
    [
        b'\xef\xbb\xbf# a byte-order mark counts: it is in the file\n{"a": 1}\n\n  {"text": "caf\xe9"}\n',
        b'[\n  {"a": 1},\n  {"text": "caf\xe9"}\n]\n',
        b'{\n  "a": 1\n}\n{\n  "text": "caf\xe9"\n}\n',
        b'event: update\ndata: {"a": 1}\n\nevent: update\ndata: {"text": "caf\xe9"}\n\n',
    ],
    ids=["json-lines", "json-array", "json-documents", "sse"],
)
def test_a_byte_that_is_not_utf8_is_named_by_its_line_and_position_in_the_file(tmp_path: Path, body: bytes) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(body)
    errors = [r for r in read_records(path, log_errors=False) if isinstance(r, RecordError)]
    [error] = [e for e in errors if "UTF-8" in e.reason]  # ({"a": 1} is an error of its own: no post)
    at = body.index(b"\xe9")
    assert error.line == body.count(b"\n", 0, at) + 1
    assert error.reason == f"not UTF-8 at byte {at + 1} of the file (0xe9); save it as UTF-8"


def test_the_demo_recording_reads_as_posts_of_the_pstweetchat_chat() -> None:
    records = list(read_records(DEMO_RECORDING))
    assert all(isinstance(r, Post) for r in records)
    assert len(records) == 3350
    assert all("pstweetchat" in r.chats for r in records if isinstance(r, Post))


def test_reader_opens_the_file_lazily_and_closes_it_when_closed(tmp_path: Path) -> None:
    missing = read_records(tmp_path / "missing.jsonl")  # no error until read
    with pytest.raises(FileNotFoundError):
        next(missing)
    reader = read_records(MALFORMED)
    assert isinstance(next(reader), Post)
    reader.close()  # would warn (an error here) if the file stayed open


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
_post_like = st.fixed_dictionaries(
    {"key": _json | st.text(min_size=1), "source": _json | st.just("x"), "created": _json | st.integers()},
    optional={
        "chats": _json | st.lists(st.text(max_size=5)),
        "author": _json | st.fixed_dictionaries({"handle": st.text(), "name": st.text()}),
        "at": _json,
        "media": _json,
        "text": _json,
    },
)


_platform_like = st.fixed_dictionaries(
    {},
    optional={
        k: _json
        for k in (
            *("id_str", "user", "data", "includes", "event", "payload", "id", "uri", "account", "content"),
            *("did", "time_us", "kind", "commit", "action", "delete", "limit", "type", "post", "key", "source"),
        )
    },
)


@given(
    st.one_of(
        st.binary(max_size=200),
        _json.map(lambda v: json.dumps(v).encode()),
        _post_like.map(json.dumps).map(str.encode),
        _platform_like.map(json.dumps).map(str.encode),
    )
)
def test_any_line_is_events_a_skip_or_a_value_error_and_every_post_can_be_stored(raw: bytes) -> None:
    try:
        events = parse_line(raw)
    except (ValueError, Ignored):
        return
    for event in events or []:
        if isinstance(event, Post | Edit):
            pack_post(event.post if isinstance(event, Edit) else event)


# Recognising every recorded format (parse_record) and every file shape (read_events).

FIXTURE_ROOT = FIXTURES_DIR
MIXED = FIXTURE_ROOT / "mixed"
NIGHT = MIXED / "night.jsonl"
EVERY = ChatMatcher(None)
NOW = 1_800_000_000_000


def fixture_json(relative: str) -> Any:
    return json.loads((FIXTURE_ROOT / relative).read_text(encoding="utf-8"))


def fixture_line(relative: str, index: int) -> Any:
    return json.loads((FIXTURE_ROOT / relative).read_text(encoding="utf-8").splitlines()[index])


@pytest.mark.parametrize(
    ("record", "kind"),
    [
        (lambda: fixture_line("recorded/pstweetchat_2019-03-01.jsonl", 4), "post"),
        (lambda: fixture_json("x-v1/original/lt140_hidden/reply.json"), "x-v1"),
        (lambda: {"delete": {"status": {"id_str": "1", "user_id_str": "2"}}}, "x-v1"),
        (lambda: {"limit": {"track": 5}}, "x-v1"),
        (lambda: fixture_line("x-v2/two_tweets.jsonl", 0), "x-v2"),
        (lambda: fixture_line("x-v2/tweets_compliance.jsonl", 1), "x-v2"),
        (lambda: fixture_line("x-v2/streaming_output.jsonl", 4), "x-v2"),  # a stream error message
        (lambda: fixture_json("mastodon/test_status_reply.00.json"), "mastodon-status"),
        (lambda: fixture_line("mastodon/streaming_events_extracted.jsonl", 2), "mastodon-event"),
        (lambda: fixture_line("bluesky/subscribe_golden_v1.jsonl", 1), "bluesky"),
        (lambda: {"type": "edit", "post": {}}, "edit"),
        (lambda: {"type": "retract", "key": "x:1", "source": "x"}, "retract"),
    ],
)
def test_each_recorded_format_is_recognised_by_its_own_keys(record: Callable[[], Any], kind: str) -> None:
    assert record_kind(record()) == kind


def test_platform_records_are_parsed_by_their_platform_parser_with_the_matcher() -> None:
    events = parse_record(fixture_line("x-v2/two_tweets.jsonl", 0), ChatMatcher(["PoiuytrewQ"]), NOW)
    assert [(type(e).__name__, e.chats) for e in events if isinstance(e, Post)] == [("Post", ("poiuytrewq",))] * 2
    status = fixture_json("x-v1/original/lt140_hidden/reply.json")
    assert [e.key for e in parse_record(status, EVERY, NOW) if isinstance(e, Post)] == ["x:758797113446641664"]
    assert parse_record(fixture_line("x-v2/tweets_compliance.jsonl", 1), EVERY, NOW) == [
        Retraction("x:1170025343920402432", "x")
    ]
    timeline = fixture_json("mastodon/test_hashtag_tl.02.json")
    assert [p.chats for p in parse_record(timeline[0], EVERY, NOW) if isinstance(p, Post)] == [("hoot",)]
    assert [p.at for p in parse_record(timeline[0], EVERY, NOW) if isinstance(p, Post)] == [NOW]
    jetstream = fixture_line("bluesky/subscribe_golden_v1.jsonl", 1)
    assert [p.source for p in parse_record(jetstream, EVERY, NOW)] == ["bluesky"]


def test_a_normalised_post_keeps_its_recorded_chats_and_at_whatever_the_matcher() -> None:
    recorded = fixture_line("recorded/pstweetchat_2019-03-01.jsonl", 4)
    [post] = parse_record(recorded, ChatMatcher(["smbiz"]), NOW)
    assert isinstance(post, Post)
    assert (post.chats, post.at) == (("pstweetchat",), recorded["at"])


def test_a_streaming_event_payload_may_be_a_json_string_an_object_or_a_bare_id() -> None:
    extracted = fixture_line("mastodon/streaming_events_extracted.jsonl", 2)  # an update, payload an object
    as_object = parse_record({"event": "update", "payload": extracted["payload"]}, EVERY, NOW)
    as_string = parse_record({"event": "update", "payload": extracted["data"]}, EVERY, NOW)
    assert as_object == as_string and len(as_object) == 1
    delete = fixture_line("mastodon/streaming_events_extracted.jsonl", 7)
    assert isinstance(delete["payload"], int)
    try:
        parse_record(delete, EVERY, NOW)  # no instance is known in a file: the parser may ignore it
    except Ignored:
        pass


def test_edit_and_retract_lines_read_back_as_edit_and_retraction() -> None:
    post = parse_record(fixture_line("recorded/pstweetchat_2019-03-01.jsonl", 4), EVERY, NOW)[0]
    assert isinstance(post, Post)
    assert parse_record(event_dict(Edit(post)), EVERY, NOW) == [Edit(post)]
    retraction = Retraction("x:1", "x", ("smbiz",))
    assert parse_record(event_dict(retraction), EVERY, NOW) == [retraction]
    assert event_dict(Retraction("x:1", "x")) == {"type": "retract", "key": "x:1", "source": "x"}


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"foo": 1, "bar": 2, "baz": 3}, "unrecognised record: keys bar, baz, foo"),
        ({}, "unrecognised record: an empty object"),
        ([1, 2], "a record is a JSON object, got array"),
        ("text", "a record is a JSON object, got string"),
        ({"type": "retract", "key": "", "source": "x"}, "a retract record needs"),
        ({"event": 5, "payload": "x"}, "a streaming event needs"),
    ],
)
def test_an_unrecognised_or_broken_record_is_a_value_error_saying_why(record: Any, reason: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(reason)):
        parse_record(record, EVERY, NOW)


def test_a_crash_inside_a_platform_parser_becomes_a_value_error_not_a_crash(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from mixer.ingest.sources import bluesky

    def broken(data: Any, matcher: ChatMatcher, now_ms: int) -> list[Any]:
        raise KeyError("commit")

    monkeypatch.setattr(bluesky, "parse_jetstream", broken)
    with pytest.raises(ValueError, match="bluesky record could not be parsed: KeyError"):
        parse_record({"did": "d", "time_us": 1, "kind": "commit"}, EVERY, NOW)
    assert "parser failed" in caplog.text


def test_ignored_records_yield_nothing_and_are_counted_by_reason() -> None:
    ignored: Counter[str] = Counter()
    events = list(read_events(FIXTURE_ROOT / "bluesky" / "subscribe_golden_v1.jsonl", EVERY, NOW, ignored=ignored))
    assert [type(e).__name__ for e in events] == ["Post"]
    assert sum(ignored.values()) == 9 and ignored["collection_like"] == 1


def test_a_mixed_json_lines_night_reads_every_format_in_file_order() -> None:
    ignored: Counter[str] = Counter()
    groups = list(read_grouped(NIGHT, EVERY, NOW, ignored=ignored))
    assert [len(g) for g in groups if isinstance(g, tuple)] == [1, 2, 1, 1, 1, 1, 1]
    sources = [e.source for g in groups if isinstance(g, tuple) for e in g]
    assert sources == ["x", "x", "x", "x", "mastodon", "mastodon", "bluesky", "x"]
    assert isinstance(groups[-1], tuple) and isinstance(groups[-1][0], Retraction)
    assert ignored == Counter({"collection_like": 1})


def test_a_pretty_printed_file_with_a_caption_line_gives_both_objects_and_one_error() -> None:
    path = FIXTURE_ROOT / "x-v1" / "initial" / "compatibility_classic_13995.json"
    items = list(read_grouped(path, EVERY, NOW, log_errors=False))
    assert [type(i).__name__ for i in items] == ["tuple", "RecordError", "tuple"]
    assert isinstance(items[1], RecordError) and items[1].line == 170
    assert items[1].reason.startswith("not JSON: Expecting value")


def test_concatenated_objects_are_records_each() -> None:
    path = FIXTURE_ROOT / "x-v1" / "original" / "classic_no_hidden" / "tweet.json"
    items = list(read_grouped(path, EVERY, NOW))
    assert len(items) == 2 and all(isinstance(i, tuple) for i in items)


def test_a_json_array_reports_a_broken_element_at_its_line_and_reads_on(tmp_path: Path) -> None:
    post = fixture_line("recorded/pstweetchat_2019-03-01.jsonl", 4)
    good = json.dumps(post, indent=2).replace("\n", "\n  ")
    path = tmp_path / "array.json"
    path.write_bytes(b"\xef\xbb\xbf# a note\n[\n  " + f"{good},\n  {{\n    oops\n  }},\n  {good}\n]\n".encode())
    items = list(read_events(path, EVERY, NOW, log_errors=False))
    assert [type(i).__name__ for i in items] == ["Post", "RecordError", "Post"]
    error = items[1]
    assert isinstance(error, RecordError)
    assert error.line == 3 + good.count("\n") + 1
    assert "line" in error.reason and "column" in error.reason


def test_a_search_response_gives_its_statuses_and_an_api_response_is_one_record() -> None:
    statuses = [i for i in read_grouped(MIXED / "x-v1-search.json", EVERY, NOW) if isinstance(i, tuple)]
    assert [len(g) for g in statuses] == [1, 2]
    response = list(read_grouped(MIXED / "x-v2-response.json", EVERY, NOW))
    assert len(response) == 1 and isinstance(response[0], tuple) and len(response[0]) == 2


def test_a_json_lines_file_whose_first_line_is_broken_is_still_read_line_by_line(tmp_path: Path) -> None:
    lines = NIGHT.read_text().splitlines()[1:4]
    path = tmp_path / "r.jsonl"
    path.write_text(lines[0][:50] + "\n" + "\n".join(lines[1:]) + "\n")
    items = list(read_grouped(path, EVERY, NOW, log_errors=False))
    assert [type(i).__name__ for i in items] == ["RecordError", "tuple", "tuple"]
    assert isinstance(items[0], RecordError) and items[0].line == 1


def test_an_sse_body_gives_one_record_per_event_at_the_line_of_its_first_field(tmp_path: Path) -> None:
    status = fixture_json("mastodon/test_status_reply.00.json")
    post = fixture_line("recorded/pstweetchat_2019-03-01.jsonl", 4)
    body = (
        ":)\n\n"  # a comment, as Mastodon's stream opens
        + "event: update\ndata: "
        + json.dumps(status)
        + "\n\n:thump\n\n"
        + "data: "
        + json.dumps(post).replace(', "source"', '\ndata: , "source"')
        + "\n\n"  # no event name: the data is a record itself, split over two data lines
        + "event: update\ndata: {broken\n\n"
        + "event: notification\ndata: {}\n\n"
        + "event: update\ndata: "
        + json.dumps(status)  # cut off: no blank line at the end
    )
    path = tmp_path / "stream.sse"
    path.write_text(body)
    ignored: Counter[str] = Counter()
    items = list(read_grouped(path, EVERY, NOW, log_errors=False, ignored=ignored))
    assert [type(i).__name__ for i in items] == ["tuple", "tuple", "RecordError", "tuple"]
    assert isinstance(items[2], RecordError) and items[2].line == 11
    assert sum(ignored.values()) == 1
    post_event = items[1][0]  # type: ignore[index]
    assert isinstance(post_event, Post) and post_event.key == post["key"]


def test_json_lines_are_read_lazily_from_a_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    record = NIGHT.read_text().splitlines()[1].encode() + b"\n"

    class Endless(io.RawIOBase):
        """A stdin that yields the same record forever: only a lazy reader can return from it."""

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            buffer[: len(record)] = record
            return len(record)

    stdin = io.TextIOWrapper(io.BufferedReader(Endless()))
    monkeypatch.setattr("sys.stdin", stdin)
    reader = read_events("-", EVERY, NOW)
    assert [next(reader).key for _ in range(3)] == [json.loads(record)["key"]] * 3  # type: ignore[union-attr]
    reader.close()


# Replaying recordings in any format.


async def test_replay_publishes_every_format_of_a_mixed_night_to_the_configured_chats(
    redis: aioredis.Redis, keys: Keys
) -> None:
    publisher = Publisher(redis, keys, ["pstweetchat", "poiuytrewq"], maxlen=1000)
    progress = await Replayer(publisher, [NIGHT], ReplayOptions(speed=0)).run()
    assert progress.read == 7  # every record but the Jetstream like
    assert progress.skipped["collection_like"] == 1
    assert progress.published == 3  # the PSTweetChat post, and the retweet with its original
    assert progress.retractions == 1
    entries = {chat: await redis.xrange(keys.chat(chat)) for chat in ("pstweetchat", "poiuytrewq")}
    posts = {chat: [unpack_post(i.decode(), f[FIELD]).key for i, f in e if FIELD in f] for chat, e in entries.items()}
    assert posts == {
        "pstweetchat": ["x:1101542707992899584"],
        "poiuytrewq": ["x:1391677057810288641", "x:1394735776701816833"],
    }
    retractions = [f for e in entries.values() for _, f in e if RETRACT_FIELD in f]
    assert len(retractions) == 2  # a retraction with no known chat goes to every chat


def test_a_records_events_share_its_time_so_an_old_original_does_not_stretch_the_schedule() -> None:
    first = make_post("a", created=T0)
    original, retweet = make_post("o", created=T0 - 86_400_000), make_post("r", created=T0 + 1000)
    last = make_post("c", created=T0 + 3000)
    offsets = [s.offset for s in plan([[first, (original, retweet), Retraction("x:1", "x"), last]])]
    assert offsets == [0, 1000, 1000, 3000]


def test_restamp_gives_edits_and_retractions_the_same_pass_suffix_as_posts() -> None:
    post = make_post("x:1", created=T0)
    assert restamp_event(Edit(post), NOW, 2, keep_time=False) == Edit(restamp(post, NOW, 2, keep_time=False))
    assert restamp_event(Retraction("x:1", "x"), NOW, 2, keep_time=False) == Retraction("x:1~2", "x")
    assert restamp_event(Retraction("x:1", "x"), NOW, 0, keep_time=False) == Retraction("x:1", "x")
