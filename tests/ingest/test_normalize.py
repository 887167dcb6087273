"""`mixer normalize` as a real process over real recorded data in every recorded format."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from mixer.keys import Keys
from tests.helpers import FIXTURES as FIXTURES_DIR
from tests.processes import mixer_env

FIXTURES = FIXTURES_DIR
NIGHT = FIXTURES / "mixed" / "night.jsonl"  # 7 posts, 1 retraction, 1 like (see its ORIGIN.md)
X_V2_RESPONSE = FIXTURES / "mixed" / "x-v2-response.json"  # a retweet: the original and the retweet
X_V1_SEARCH = FIXTURES / "mixed" / "x-v1-search.json"  # a reply, and a retweet with its original
X_V2_TRUNCATED = FIXTURES / "x-v2" / "streaming_output_with_error.jsonl"  # line 8 cut off upstream
X_V1_CONCATENATED = FIXTURES / "x-v1" / "original" / "classic_no_hidden" / "tweet.json"  # two objects, no newline
MASTODON_SSE = FIXTURES / "mastodon" / "test_stream_user_direct.12.sse"
MASTODON_TIMELINE = FIXTURES / "mastodon" / "test_hashtag_tl.02.json"  # GET /timelines/tag/hoot: a JSON array


def normalize(*args: str, chats: str = "poiuytrewq", stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "mixer.cli", "normalize", *args],
        env=mixer_env(None, Keys(), chats),
        input=stdin,
        capture_output=True,
        timeout=30,
        check=False,
    )


def lines(result: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def posts(result: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    return [line for line in lines(result) if "type" not in line]


def of_type(result: subprocess.CompletedProcess[bytes], kind: str) -> list[dict[str, Any]]:
    return [line for line in lines(result) if line.get("type") == kind]


def errors(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    return result.stderr.decode().splitlines()


def test_a_mix_of_formats_in_one_call_prints_every_post_edit_and_retraction() -> None:
    files = [NIGHT, X_V2_RESPONSE, X_V1_SEARCH, X_V1_CONCATENATED, MASTODON_SSE, MASTODON_TIMELINE]
    result = normalize(*map(str, files))
    assert result.returncode == 0, result.stderr
    assert errors(result) == []
    # night 7, response 2, search 3, concatenated 2, SSE 1 public update, timeline 1
    assert len(posts(result)) == 16
    assert len(of_type(result, "edit")) == 1  # the SSE body's status.update
    assert {"type": "retract", "key": "x:1170025343920402432", "source": "x"} in of_type(result, "retract")
    assert {p["source"] for p in posts(result)} == {"x", "mastodon", "bluesky"}


def test_a_mastodon_delete_in_an_sse_body_is_printed_as_the_retraction_of_the_status_before_it() -> None:
    result = normalize(str(MASTODON_SSE))
    assert result.returncode == 0 and errors(result) == []
    [status] = [p for p in posts(result) if p["text"] == "only real cars respond."]
    assert of_type(result, "retract") == [{"type": "retract", "key": status["key"], "source": "mastodon"}]


def test_every_post_line_is_the_contracts_post_json() -> None:
    result = normalize(str(NIGHT))
    for post in posts(result):
        assert {"id", "key", "source", "chats", "author", "text", "url", "created", "at"} <= set(post)
        assert set(post["author"]) == {"handle", "name", "avatar"}
        assert isinstance(post["created"], int) and isinstance(post["at"], int)
    edit = of_type(normalize(str(MASTODON_SSE)), "edit")[0]
    assert set(edit) == {"type", "post"} and edit["post"]["key"].startswith("mastodon:http")


def test_a_json_array_file_gives_each_element_and_a_bad_element_is_reported_at_its_first_line(tmp_path: Path) -> None:
    timeline = json.loads(MASTODON_TIMELINE.read_text())
    elements = [*timeline, {"unknown": 1}, json.loads(X_V2_RESPONSE.read_text())]
    path = tmp_path / "array.json"
    text = json.dumps(elements, indent=2)
    path.write_text(text)
    bad_line = text.splitlines().index('    "unknown": 1')  # 0-based index of the line after the element's "{"
    result = normalize(str(path))
    assert result.returncode == 0
    assert len(posts(result)) == 1 + 2
    assert errors(result) == [f"{path}:{bad_line}: unrecognised record: keys unknown"]
    assert len(posts(normalize(str(MASTODON_TIMELINE)))) == len(timeline) == 1


def test_an_api_response_file_holding_data_is_one_record_with_all_its_tweets() -> None:
    from_response = posts(normalize(str(X_V2_RESPONSE)))
    from_line = posts(normalize(str(FIXTURES / "x-v2" / "two_tweets.jsonl")))
    assert len(from_response) == 2
    assert [p["key"] for p in from_response] == [p["key"] for p in from_line]
    retweet = next(p for p in from_response if p.get("boost_of"))
    assert retweet["boost_of"] in {p["key"] for p in from_response}


def test_a_search_response_holding_statuses_gives_each_status() -> None:
    result = normalize(str(X_V1_SEARCH))
    assert len(posts(result)) == 3
    assert {p["key"] for p in posts(result)} >= {"x:758797113446641664"}


def test_a_recorded_sse_body_gives_its_events_and_skips_comments_and_non_posts() -> None:
    result = normalize(str(MASTODON_SSE))
    assert result.returncode == 0 and errors(result) == []
    assert [p["text"] for p in posts(result)] == ["only real cars respond."]
    assert len(of_type(result, "edit")) == 1


def test_a_malformed_line_is_reported_with_file_and_line_and_the_rest_is_printed() -> None:
    result = normalize(str(X_V2_TRUNCATED))
    assert result.returncode == 0
    assert len(errors(result)) == 1
    assert errors(result)[0].startswith(f"{X_V2_TRUNCATED}:8: not JSON")
    assert len(posts(result)) == 8  # seven messages; the first quotes a tweet its includes carry


def test_exit_status_is_non_zero_only_when_nothing_could_be_read(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('not json\n{"no": "such record"}\n')
    result = normalize(str(bad))
    assert result.returncode == 1
    assert errors(result) == [
        f"{bad}:1: not JSON: Expecting value at column 1",
        f"{bad}:2: unrecognised record: keys no",
    ]
    missing = tmp_path / "missing.jsonl"
    result = normalize(str(missing))
    assert result.returncode == 1
    assert errors(result) == [f"{missing}: cannot read: No such file or directory"]
    result = normalize(str(missing), str(bad), str(NIGHT))
    assert result.returncode == 0
    assert len(posts(result)) == 7 and len(errors(result)) == 3
    only_notes = tmp_path / "notes.jsonl"
    only_notes.write_text("# nothing recorded yet\n\n")
    assert normalize(str(only_notes)).returncode == 0
    likes = tmp_path / "likes.jsonl"
    likes.write_text(NIGHT.read_text().splitlines()[7] + "\n")  # a Jetstream like: read fine, no post
    result = normalize(str(likes))
    assert (result.returncode, result.stdout, errors(result)) == (0, b"", [])


def test_dash_reads_stdin_in_any_shape() -> None:
    for path in (NIGHT, X_V2_RESPONSE, MASTODON_SSE):
        from_stdin = normalize("-", stdin=path.read_bytes())
        from_file = normalize(str(path))
        assert from_stdin.returncode == 0
        assert posts(from_stdin) and [p["key"] for p in posts(from_stdin)] == [p["key"] for p in posts(from_file)]
    result = normalize("-", stdin=X_V2_TRUNCATED.read_bytes())
    assert errors(result)[0].startswith("-:8: not JSON")


def test_chats_come_from_the_config_and_all_tags_makes_every_hashtag_a_chat() -> None:
    configured = posts(normalize(str(X_V2_RESPONSE), str(MASTODON_TIMELINE), chats="PoiuytrewQ,smbiz"))
    assert [p["chats"] for p in configured] == [["poiuytrewq"], ["poiuytrewq"], []]
    every = posts(normalize("--all-tags", str(X_V2_RESPONSE), str(MASTODON_TIMELINE), chats="smbiz"))
    assert [p["chats"] for p in every] == [["poiuytrewq"], ["poiuytrewq"], ["hoot"]]


def test_normalised_output_reads_back_unchanged(tmp_path: Path) -> None:
    first = normalize(str(NIGHT), str(MASTODON_SSE))
    again = tmp_path / "normalised.jsonl"
    again.write_bytes(first.stdout)
    second = normalize(str(again))
    assert second.returncode == 0 and errors(second) == []
    assert second.stdout == first.stdout


def test_normalize_has_help_naming_its_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mixer.cli", "normalize", "--help"],
        env=mixer_env(None, Keys(), "smbiz"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0
    assert "usage: mixer normalize" in result.stdout and "--all-tags" in result.stdout
