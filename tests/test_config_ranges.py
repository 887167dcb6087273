"""Dangerous config values are refused at load, from the file (with file:line:key) and from MIXER_* alike: every
number has a documented range, nesting and huge integers cannot crash the parser, the demo recording must exist,
tokens this server accepts have a minimum length, and Mastodon and X are reached over https only."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mixer.config import load_settings
from mixer.config_schema import SCHEMA, TOKEN_MIN
from mixer.keys import Keys
from mixer.settings import ConfigError
from tests.processes import mixer_env

ROOT = Path(__file__).resolve().parent.parent
LONG_TOKEN = "t" * TOKEN_MIN

# file text -> (line, key) the error must name
DANGEROUS = {
    "huge-int": ("[redis]\nchat_maxlen = 99999999999999999999\n", 2, "redis.chat_maxlen"),
    "tiny-heartbeat": ("[server]\nport = 8080\nheartbeat_seconds = 1e-300\n", 3, "server.heartbeat_seconds"),
    "deep-array": ("[event]\nname = 'n'\n\n[server]\norigins = " + "[" * 5000 + "]" * 5000 + "\n", 5, "server.origins"),
    "deep-table": ("[event]\nname = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n", 2, "event.name"),
    "5000-digits": ("[merge]\nwindow_ms = " + "9" * 5000 + "\n", 2, "merge.window_ms"),
    "float-overflow": ("[server]\ncutoff_seconds = 1" + "0" * 400 + "\n", 2, "server.cutoff_seconds"),
    "missing-demo": ("[demo]\nspeed = 1.0\nfile = 'no-such-night.jsonl'\n", 3, "demo.file"),
    "demo-is-a-dir": ("[demo]\nfile = '.'\n", 2, "demo.file"),
    "http-mastodon": ("[mastodon]\ninstances = ['https://a.example', 'http://b.example']\n", 2, "mastodon.instances"),
    "mastodon-password": ("[mastodon]\ninstances = ['https://me:pw@mastodon.social']\n", 2, "mastodon.instances"),
    "mastodon-profile-url": ("[mastodon]\ninstances = ['https://mastodon.social/@me']\n", 2, "mastodon.instances"),
    "http-x-api": ("[x]\napi = 'http://api.twitter.com'\n", 2, "x.api"),
    "short-moderation-token": ("[moderation]\ntoken = 'm0d'\n", 2, "moderation.token"),
    "short-webhook-token": ("[webhook]\ntoken = 'hook'\n", 2, "webhook.token"),
    "token-with-space": ("[webhook]\ntoken = 'a b c d e f g h i j k l'\n", 2, "webhook.token"),
    "mastodon-token-with-space": ("[mastodon]\ntoken = 'abc def'\n", 2, "mastodon.token"),
    "x-token-with-newline": ('[x]\nbearer_token = "AAAA%2Bxyz\\n"\n', 2, "x.bearer_token"),
    "profile-rate": ("[[profiles]]\nname = 'wall'\nrate = 1e9\n", 3, "profiles[0].rate"),
    "profile-weight": ("[[profiles]]\nname = 'wall'\nweights = { a = 1e300 }\n", 3, "profiles[0].weights"),
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mixer.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("case", DANGEROUS)
def test_a_dangerous_value_in_the_file_names_its_line_and_key(case: str, tmp_path: Path) -> None:
    text, line, key = DANGEROUS[case]
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), {})
    assert (info.value.line, info.value.key) == (line, key), str(info.value)
    assert len(str(info.value)) < 300  # a 5,000-digit or 5,000-deep value is not echoed whole


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MIXER_REDIS_CHAT_MAXLEN", "99999999999999999999"),
        ("MIXER_SERVER_HEARTBEAT_SECONDS", "1e-300"),
        ("MIXER_SERVER_BACKLOG_BYTES", "9" * 5000),
        ("MIXER_DEMO_FILE", "no-such-night.jsonl"),
        ("MIXER_MASTODON_INSTANCES", "https://ok.example,http://mastodon.social"),
        ("MIXER_MASTODON_INSTANCES", "https://ok.example,https://mastodon.social/tags/edchat"),
        ("MIXER_X_API", "http://api.twitter.com"),
        ("MIXER_MODERATION_TOKEN", "m0d"),
        ("MIXER_WEBHOOK_TOKEN", "x" * (TOKEN_MIN - 1)),
        ("MIXER_MASTODON_TOKEN", "tok-abcdefghijk\n"),
        ("MIXER_X_BEARER_TOKEN", "AAAA%2Bxyz\r\n"),
    ],
)
def test_a_dangerous_environment_value_is_refused_the_same_way(name: str, value: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, ""), {name: value})
    assert (info.value.file, info.value.key) == ("environment", name)


def test_a_platform_token_with_a_trailing_newline_is_refused_at_load_saying_so(tmp_path: Path) -> None:
    # the HTTP client refuses such a header at the first request, which stopped `mixer ingest` with a traceback
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, ""), {"MIXER_MASTODON_TOKEN": "tok-abcdefghijk\n"})
    assert "line break" in str(info.value) and "tok-abc" not in str(info.value)
    assert load_settings(write(tmp_path, ""), {"MIXER_X_BEARER_TOKEN": "AAAA%2Bxyz"}).x_bearer_token == "AAAA%2Bxyz"


def test_a_short_token_is_refused_without_showing_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, ""), {"MIXER_MODERATION_TOKEN": "pa55word"})
    assert "pa55word" not in str(info.value) and f"at least {TOKEN_MIN} characters" in str(info.value)
    settings = load_settings(write(tmp_path, ""), {"MIXER_MODERATION_TOKEN": LONG_TOKEN, "MIXER_WEBHOOK_TOKEN": ""})
    assert (settings.moderation_token, settings.webhook_token) == (LONG_TOKEN, "")  # empty: off, allowed


def test_http_is_allowed_only_to_this_machine(tmp_path: Path) -> None:
    local = ("http://127.0.0.1:8123", "http://localhost:9000", "http://[::1]:81", "https://mastodon.social")
    settings = load_settings(write(tmp_path, ""), {"MIXER_MASTODON_INSTANCES": ",".join(local)})
    assert settings.mastodon_instances == local
    assert load_settings(write(tmp_path, ""), {"MIXER_X_API": "http://127.0.0.1:9"}).x_api == "http://127.0.0.1:9"


NUMBERS = [(s, key, f) for s, fields in SCHEMA.items() for key, f in fields.items() if f.kind in (int, float)]


@pytest.mark.parametrize(("section", "key", "field"), NUMBERS, ids=[f"{s}.{k}" for s, k, _ in NUMBERS])
def test_every_number_has_a_range_enforced_at_both_ends_and_documented(
    section: str, key: str, field: object, tmp_path: Path
) -> None:
    f = SCHEMA[section][key]
    assert f.lo is not None and f.hi is not None
    demo = tmp_path / "night.jsonl"
    demo.write_text("")
    step = 1 if f.kind is int else max(abs(f.hi), 1) * 1e-9
    for value, ok in ((f.lo, True), (f.hi, True), (f.lo - step, False), (f.hi + step, False)):
        text = f"[{section}]\n{key} = {f.kind(value)!r}\n"
        try:
            load_settings(write(tmp_path, text), {})
        except ConfigError as exc:
            assert not ok, f"{value} refused: {exc}"
            assert (exc.line, exc.key) == (2, f"{section}.{key}")
        else:
            assert ok, f"{text!r} accepted"
    plain = [str(int(b)) if float(b).is_integer() else repr(b) for b in (f.lo, f.hi)]
    rows = (ROOT / "docs" / "config.md").read_text().splitlines()
    [row] = [r for r in rows if r.startswith(f"| `{section}.{key}` |")]
    assert f"{plain[0]} to {plain[1]}" in row, row


def mixer(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mixer.cli", *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.parametrize("case", ["huge-int", "tiny-heartbeat", "deep-array", "5000-digits", "missing-demo"])
def test_mixer_config_refuses_a_dangerous_file_in_one_line_with_exit_2(case: str, tmp_path: Path) -> None:
    text, line, key = DANGEROUS[case]
    result = mixer("config", "--config", str(write(tmp_path, text)), env=mixer_env(None, Keys(), "smbiz"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [message] = result.stderr.splitlines()
    assert re.search(rf"mixer\.toml:{line}: {re.escape(key)}: ", message), message


def test_a_server_with_a_short_moderation_token_refuses_to_start(tmp_path: Path, redis_url: str) -> None:
    env = mixer_env(redis_url, Keys("short"), "smbiz", MIXER_MODERATION_TOKEN="m0d", XDG_RUNTIME_DIR=str(tmp_path))
    result = mixer("serve", "--port", "1", env=env)  # never reached: a port it could not bind anyway
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "environment: MIXER_MODERATION_TOKEN: must be empty (off) or a token of at least 16" in result.stderr
    assert "m0d" not in result.stderr
