"""Every parser entry point under random input (hypothesis): nothing but its documented error types comes out.

Platform parsers (X v1.1 and v2 and the filtered stream's ids, Mastodon events, statuses and stream framings,
Bluesky Jetstream, getProfiles and the profile cache), recorded-file lines and whole files in every shape, the
webhook's Post, the codec's JSON and msgpack decoding, and ``mixer.toml`` loading: ValueError or ``Ignored`` for
parsers, ConfigError for the config. Examples are bounded so the module runs in well under a minute.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixer.codec import loads, unpack_post
from mixer.config import load_settings
from mixer.config_schema import SCHEMA
from mixer.ingest.hashtags import ChatMatcher
from mixer.ingest.recorded import parse_line, parse_record, read_records
from mixer.ingest.recorded_shapes import RecordError
from mixer.ingest.sources.bluesky import parse_jetstream
from mixer.ingest.sources.bluesky_appview import parse_profiles, read_cached
from mixer.ingest.sources.mastodon import parse_event, parse_status, status_uris
from mixer.ingest.sources.mastodon_html import html_to_text
from mixer.ingest.sources.mastodon_stream import SseDecoder, parse_ws_message
from mixer.ingest.sources.x_stream import tweet_ids
from mixer.ingest.sources.x_v1 import parse_v1
from mixer.ingest.sources.x_v2 import parse_v2
from mixer.models import Ignored, Post
from mixer.settings import ConfigError

FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
MATCHER = ChatMatcher(("smbiz", "edchat"))
NOW = 1_700_000_000_000

# Text that has broken parsers before: surrogates, Arabic-Indic digits, huge numbers, hashtags, HTML, NULs.
NASTY = st.sampled_from(
    ["", "\ud800", "\udfff", "١٢٣٤", "18446744073709551615", "9" * 400, "-1", "1e309", "NaN", "#smbiz", "#SMBIZ",
     "<p>#edchat <a href='x'>x</a></p>", "\x00", "did:plc:abc", "at://did:plc:x/app.bsky.feed.post/1",
     "2019-03-01T18:00:00Z", "Fri Mar 01 18:00:00 +0000 2019", "update", "delete", "status.update", "commit", "create",
     "app.bsky.feed.post", "https://h.example/@u/1", "x:1", "\u202e", "ﷺ" * 50]
)  # fmt: skip
TEXT = st.one_of(NASTY, st.text(max_size=40), st.text(st.characters(codec=None), max_size=20))
SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), TEXT,
)  # fmt: skip
# Keys the parsers look for, so the random objects reach past the first check.
FIELDS = st.sampled_from(
    ["key", "source", "chats", "author", "text", "url", "created", "at", "id", "id_str", "full_text", "user",
     "screen_name", "name", "entities", "hashtags", "retweeted_status", "quoted_status", "extended_tweet", "data",
     "includes", "users", "tweets", "referenced_tweets", "author_id", "created_at", "event", "payload", "stream",
     "content", "account", "acct", "username", "tags", "reblog", "quote", "visibility", "media_attachments", "kind",
     "did", "commit", "collection", "rkey", "operation", "record", "createdAt", "facets", "embed", "time_us",
     "profiles", "handle", "displayName", "avatar", "post", "edit", "retract", "type", "reply", "parent", "uri"]
)  # fmt: skip
JSON = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.one_of(FIELDS, st.text(max_size=5)), inner, max_size=6)
    ),
    max_leaves=25,
)
OBJECT = st.dictionaries(FIELDS, JSON, max_size=8)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


def _parses_or_refuses(call: Any, *args: Any) -> None:
    try:
        call(*args)
    except (ValueError, Ignored):
        pass


@FUZZ
@given(OBJECT)
def test_platform_parsers_raise_only_value_error_or_ignored(data: dict[str, Any]) -> None:
    _parses_or_refuses(parse_v1, data, MATCHER, NOW)
    _parses_or_refuses(parse_v2, data, MATCHER, NOW)
    _parses_or_refuses(parse_status, data, MATCHER, NOW)
    _parses_or_refuses(parse_jetstream, data, MATCHER, NOW)
    _parses_or_refuses(parse_profiles, data)
    _parses_or_refuses(Post.from_dict, data)
    _parses_or_refuses(parse_record, data, MATCHER, NOW)


@FUZZ
@given(OBJECT, st.one_of(TEXT, st.sampled_from(["\u00b2", "\u0663", "12", "\u2460"])))
def test_the_x_stream_and_cache_readers_take_any_message(data: dict[str, Any], tweet_id: str) -> None:
    for message in (data, {"data": {"id": tweet_id}}, {"data": [{"id": tweet_id}, data]}):
        assert all(isinstance(i, int) for i in tweet_ids(message))  # "empty for other messages": never an error
        assert isinstance(status_uris(message), list)
    _parses_or_refuses(read_cached, json.dumps(data))
    _parses_or_refuses(read_cached, tweet_id.encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.one_of(TEXT, st.sampled_from(["update", "delete", "status.update", "notification"])), JSON)
def test_mastodon_events_raise_only_value_error_or_ignored(event: str, payload: Any) -> None:
    _parses_or_refuses(parse_event, event, payload, MATCHER, NOW)
    _parses_or_refuses(parse_event, event, json.dumps(payload), MATCHER, NOW)
    message = {"stream": ["hashtag", "smbiz"], "event": event, "payload": payload}
    _parses_or_refuses(parse_ws_message, json.dumps(message))


@FUZZ
@given(st.one_of(TEXT, st.text(max_size=300)))
def test_mastodon_html_and_stream_framing_never_raise(text: str) -> None:
    assert isinstance(html_to_text(text), str)
    decoder = SseDecoder(max_event_bytes=256)
    raw = text.encode("utf-8", "surrogatepass")
    for cut in range(0, len(raw) + 1, 7):  # fed in pieces, as a socket delivers it
        decoder.feed(raw[cut : cut + 7])
    _parses_or_refuses(parse_ws_message, text)


@FUZZ
@given(st.one_of(st.binary(max_size=200), JSON.map(_json_bytes), OBJECT.map(_json_bytes)))
def test_recorded_lines_and_codec_json_raise_only_value_error_or_ignored(raw: bytes) -> None:
    _parses_or_refuses(parse_line, raw, MATCHER, NOW)
    _parses_or_refuses(loads, raw)
    _parses_or_refuses(loads, raw.decode("utf-8", "replace"))


def _msgpack_or_nothing(value: Any) -> bytes:
    """``value`` packed, or b"" for the values msgpack cannot pack (surrogates, integers past 64 bits)."""
    try:
        return bytes(msgpack.packb(value, use_bin_type=True))
    except (OverflowError, UnicodeEncodeError):
        return b""


@FUZZ
@given(st.one_of(st.binary(max_size=200), JSON.map(_msgpack_or_nothing)))
def test_codec_unpack_post_raises_only_value_error(raw: bytes) -> None:
    _parses_or_refuses(unpack_post, "1700000000000-0", raw)


RECORDING = st.lists(
    st.one_of(st.binary(max_size=60), OBJECT.map(_json_bytes), st.sampled_from([b"#", b"[", b"{", b"data: {", b""])),
    max_size=6,
)


@settings(FUZZ, max_examples=60)
@given(RECORDING, st.sampled_from([b"\n", b"\r\n", b"\n\n", b",\n"]), st.sampled_from([b"", b"[", b"event: update\n"]))
def test_a_recording_of_any_shape_reads_as_events_and_record_errors(
    tmp_path_factory: Any, lines: list[bytes], sep: bytes, head: bytes
) -> None:
    path = Path(tmp_path_factory.mktemp("rec")) / "night.jsonl"
    path.write_bytes(head + sep.join(lines))
    for item in read_records(path, log_errors=False):
        assert isinstance(item, RecordError) or hasattr(item, "key")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)  # a TOML basic string (lone surrogates come out as \ud800 escapes TOML refuses)


TOML_VALUE = st.recursive(
    st.one_of(
        st.booleans(), st.integers(), st.integers(min_value=-(10**30), max_value=10**30), st.floats(), TEXT,
        st.sampled_from([0, -1, 1e-300, 2**63, 99999999999999999999]),
    ),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
SECTION_KEYS = [(section, key) for section, keys in SCHEMA.items() for key in keys]
TOML_DOC = st.lists(st.tuples(st.sampled_from(SECTION_KEYS), TOML_VALUE), max_size=6).map(
    lambda items: "".join(f"[{s}]\n{k} = {_toml_value(v)}\n" for (s, k), v in items)
)
CHAT_TABLES = st.lists(
    st.dictionaries(st.sampled_from(["tag", "title", "colour", "slots", "tz", "follow"]), TOML_VALUE, max_size=4),
    max_size=3,
).map(
    lambda tables: "".join("[[chats]]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in t.items()) for t in tables)
)
RAW_TOML = st.one_of(
    st.text(max_size=120),
    st.integers(min_value=1, max_value=6000).map(lambda n: "[server]\norigins = " + "[" * n + "]" * n + "\n"),
)


@settings(FUZZ, max_examples=200)
@given(st.one_of(TOML_DOC, CHAT_TABLES, RAW_TOML, st.tuples(TOML_DOC, CHAT_TABLES).map("".join)))
def test_any_mixer_toml_loads_or_is_refused_with_a_config_error(tmp_path_factory: Any, text: str) -> None:
    path = Path(tmp_path_factory.mktemp("cfg")) / "mixer.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        load_settings(path, {})
    except ConfigError as exc:
        assert str(exc)
