from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mixer.codec import pack_post
from mixer.models import Post
from mixer.recorded import RecordError, parse_line, read_records
from mixer.settings import DEMO_RECORDING

FIXTURES = Path(__file__).parent / "fixtures" / "recorded"
MALFORMED = FIXTURES / "pstweetchat_malformed.jsonl"


def test_malformed_lines_are_reported_with_line_numbers_and_every_good_line_is_still_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="mixer.recorded"):
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
    assert next(r.reason for r in records if isinstance(r, RecordError)) == "not UTF-8 (byte 11)"


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


@given(
    st.one_of(
        st.binary(max_size=200), _json.map(lambda v: json.dumps(v).encode()), _post_like.map(json.dumps).map(str.encode)
    )
)
def test_any_line_is_a_post_a_skip_or_a_value_error_and_every_post_can_be_stored(raw: bytes) -> None:
    try:
        post = parse_line(raw)
    except ValueError:
        return
    if post is not None:
        pack_post(post)
