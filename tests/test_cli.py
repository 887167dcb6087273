"""The `mixer` command as a user runs it: help, config errors, replay into a shared Redis, and every subcommand
failing on a missing file, bad input or an unreachable Redis with one clear line instead of a traceback."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from mixer.cli import build_parser
from mixer.keys import Keys
from tests.helpers import FIXTURES as FIXTURES_DIR
from tests.processes import free_port, mixer_env

FIXTURES = FIXTURES_DIR / "recorded"
SUBCOMMANDS = [
    "run",
    "ingest",
    "serve",
    "merge",
    "replay",
    "normalize",
    "chats",
    "transcript",
    "report",
    "record",
    "loadtest",
    "rehearse",
    "synth",
    "config",
]


def mixer(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mixer.cli", *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


DEAD = "redis://127.0.0.1:1/0"  # nothing listens on port 1
NIGHT = str(FIXTURES / "pstweetchat_2019-03-01.jsonl")
FAILURES = {
    # a missing file
    "run-missing-replay": (["run", "--no-demo", "--replay", "/nonexistent/night.jsonl"], "recording not found"),
    "ingest-missing-replay": (["ingest", "--redis", "{redis}", "--replay", "/nonexistent/a.jsonl"], "not found"),
    "replay-missing-file": (["replay", "--redis", "{redis}", "/nonexistent/night.jsonl"], "recording not found"),
    "replay-a-directory": (["replay", "--redis", "{redis}", "."], "a recording is a file, not a directory: ."),
    "replay-stdin": (["replay", "--redis", "{redis}", "-"], "'-' (stdin) cannot be replayed: give a file"),
    "run-a-directory": (["run", "--no-demo", "--replay", "."], "a recording is a file, not a directory: ."),
    "ingest-stdin": (["ingest", "--redis", "{redis}", "--replay", "-"], "'-' (stdin) cannot be replayed"),
    "loadtest-replay-a-directory": (["loadtest", "--redis", "{redis}", "--drive", "replay", "."], "not a directory"),
    "normalize-missing-file": (["normalize", "/nonexistent/night.jsonl"], "No such file"),
    "chats-import-missing-file": (["chats", "import", "/nonexistent/directory.csv"], "cannot read"),
    "config-missing-file": (["config", "--config", "/nonexistent/mixer.toml"], "no such config file"),
    "loadtest-missing-replay": (
        ["loadtest", "--redis", "{redis}", "--drive", "replay", "/nonexistent/a.jsonl"],
        "not found",
    ),
    "record-unwritable-out": (["record", "--redis", "{redis}", "--out", "/nonexistent/out.jsonl"], "No such file"),
    "transcript-unwritable-out": (["transcript", "--redis", "{redis}", "--out", "/nonexistent/t.md"], "cannot write"),
    "synth-unwritable-out": (["synth", "--out", "/nonexistent/night.jsonl", "--chats", "2"], "cannot write"),
    # bad input
    "chats-import-missing-columns": (["chats", "import", "{bad_csv}"], "missing column(s) frequency"),
    "chats-bad-zone": (["chats", "--tz", "Mars/Olympus"], "unknown time zone"),
    "run-bad-speed": (["run", "--speed", "-2"], "--speed must be 0"),
    "run-public-and-host": (["run", "--public", "--host", "10.0.0.1"], "not both"),
    "run-bad-redis-url": (["run", "--redis", "http://127.0.0.1:6379"], "is not a redis://"),
    "replay-bad-speed": (["replay", "--redis", "{redis}", "--speed", "nan", NIGHT], "--speed must be 0"),
    "replay-bad-max-gap": (["replay", "--redis", "{redis}", "--max-gap", "-1", NIGHT], "--max-gap must be 0 or more"),
    "replay-a-device": (["replay", "--redis", "{redis}", "/dev/null"], "a recording is a regular file, not a device"),
    "serve-no-workers": (["serve", "--redis", "{redis}", "--workers", "0"], "--workers must be 1 to 64"),
    "serve-too-many-workers": (["serve", "--redis", "{redis}", "--workers", "100000"], "--workers must be 1 to 64"),
    "record-bad-profile": (["record", "--redis", "{redis}", "--profile", "nope"], "--profile must be one of"),
    "record-endless-duration": (["record", "--redis", "{redis}", "--duration", "inf"], "--duration must be a finite"),
    "record-nan-duration": (["record", "--redis", "{redis}", "--duration", "nan"], "--duration must be a finite"),
    "transcript-bad-zone": (["transcript", "--redis", "{redis}", "--tz", "Mars/Olympus"], "unknown time zone"),
    "loadtest-not-loopback": (["loadtest", "--url", "ws://192.0.2.7:8080/ws"], "add --allow-remote"),
    "loadtest-too-many-processes": (["loadtest", "--processes", "100000"], "--processes must be 1 to 64, got 100000"),
    "loadtest-negative-sample": (["loadtest", "--sample", "-1"], "--sample must be at least 0, got -1"),
    "loadtest-no-processes": (["loadtest", "--processes", "0"], "--processes must be at least 1, got 0"),
    "loadtest-broken-url": (["loadtest", "--url", "ws://[::1/ws"], "--url 'ws://[::1/ws' cannot be read: Invalid IPv6"),
    "loadtest-json-nowhere": (["loadtest", "--json", "/nonexistent/x.json"], "--json /nonexistent/x.json: no such dir"),
    "loadtest-plot-nowhere": (["loadtest", "--plot", "/nonexistent/x.png"], "--plot /nonexistent/x.png: no such dir"),
    "loadtest-json-a-directory": (["loadtest", "--json", "."], "--json .: is a directory"),
    "rehearse-no-duration": (["rehearse", "--redis", "{redis}", "--duration", "0"], "--duration must be more than 0"),
    "rehearse-json-nowhere": (["rehearse", "--redis", "{redis}", "--json", "/nonexistent/x.json"], "no such directory"),
    "synth-bad-rate": (["synth", "--rate", "fast"], "--rate must be"),
    "synth-endless-rate": (["synth", "--chats", "1", "--rate", "1-inf"], "--rate needs finite numbers"),
    "synth-endless-night": (["synth", "--chats", "1", "--minutes", "inf"], "--minutes must be more than 0"),
    "synth-too-many-posts": (["synth", "--chats", "1", "--rate", "1e9", "--minutes", "1"], "at most 1,000,000"),
    "synth-start-off-calendar": (["synth", "--chats", "1", "--start", "0001-01-01T00:00+14:00"], "out of range"),
    # an unreachable Redis
    "run-dead-redis": (["run", "--redis", DEAD], "cannot reach Redis at redis://127.0.0.1:1/0"),
    "ingest-dead-redis": (["ingest", "--redis", DEAD], "cannot reach Redis"),
    "serve-dead-redis": (["serve", "--redis", DEAD], "cannot reach Redis"),
    "merge-dead-redis": (["merge", "--redis", DEAD], "cannot reach Redis"),
    "replay-dead-redis": (["replay", "--redis", DEAD, NIGHT], "cannot reach Redis"),
    "record-dead-redis": (["record", "--redis", DEAD], "Connect"),
    "transcript-dead-redis": (["transcript", "--redis", DEAD], "cannot read the feed from Redis"),
    "loadtest-dead-redis": (["loadtest", "--redis", DEAD, "--drive", "synth"], "Connect"),
}


def test_a_command_waits_for_redis_then_says_why_it_gave_up(tmp_path: Path) -> None:
    env = mixer_env(None, Keys("cli-wait"), "pstweetchat", XDG_RUNTIME_DIR=str(tmp_path), MIXER_REDIS_WAIT_SECONDS="1")
    started = time.monotonic()
    result = mixer("merge", "--redis", DEAD, env=env)
    assert result.returncode == 1
    assert time.monotonic() - started >= 1.0  # asked again until redis.wait_seconds had passed
    first, *_, last = result.stderr.strip().splitlines()
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in first and "asking again for up to 1 s" in first
    assert last.startswith("mixer merge: cannot reach Redis at redis://127.0.0.1:1/0")


def test_a_tool_run_by_hand_asks_its_redis_once(tmp_path: Path) -> None:
    env = mixer_env(None, Keys("cli-wait"), "pstweetchat", XDG_RUNTIME_DIR=str(tmp_path), MIXER_REDIS_WAIT_SECONDS="5")
    result = mixer("replay", "--redis", DEAD, NIGHT, env=env)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()  # no "asking again" first: a mistyped URL is said at once
    assert line.startswith("mixer replay: cannot reach Redis at redis://127.0.0.1:1/0: Error 111")


@pytest.mark.parametrize("case", FAILURES)
def test_every_subcommand_fails_with_one_clear_line_and_a_non_zero_exit(
    case: str, tmp_path: Path, redis_url: str
) -> None:
    argv, expected = FAILURES[case]
    bad_csv = tmp_path / "directory.csv"
    bad_csv.write_text("hashtag,topic\n#smbiz,small business\n")
    argv = [a.format(redis=redis_url, bad_csv=bad_csv) for a in argv]
    # one try at an unreachable Redis (the patient start-up: test_a_command_waits_for_redis_then_says_why_it_gave_up)
    env = mixer_env(
        None, Keys(f"cli-{case}"), "pstweetchat", XDG_RUNTIME_DIR=str(tmp_path), MIXER_REDIS_WAIT_SECONDS="0"
    )
    result = mixer(*argv, env=env)
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    [line] = result.stderr.strip().splitlines()  # one line, saying what is wrong
    assert expected in line


def test_every_option_with_a_default_names_it_in_its_help() -> None:
    def options(parser: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, argparse.Action]]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    yield from options(child, f"{name} {sub}")
            elif action.option_strings and action.help != argparse.SUPPRESS:
                yield name, action

    unnamed = [
        f"{name} {action.option_strings[-1]} (default {action.default!r})"
        for name, action in options(build_parser(), "mixer")
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in (action.help or "")
    ]
    assert unnamed == []  # `mixer serve --help` said nothing of --workers' 1, `rehearse` of --processes' 2


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command: str) -> None:
    result = mixer(command, "--help", env=mixer_env(None, Keys(), "smbiz"))
    assert result.returncode == 0
    assert f"usage: mixer {command}" in result.stdout and "--redis" in result.stdout


@pytest.mark.parametrize("command", [[c] for c in SUBCOMMANDS] + [["chats", "import"]], ids=" ".join)
def test_every_positional_argument_and_subcommand_says_what_it_is(command: list[str]) -> None:
    result = mixer(*command, "--help", env=mixer_env(None, Keys(), "smbiz"))
    assert result.returncode == 0
    description = result.stdout.split("\n\n")[1]
    assert not description.startswith(("positional arguments:", "options:")), result.stdout
    _, found, rest = result.stdout.partition("positional arguments:\n")
    for line in rest.split("\n\n")[0].splitlines() if found else []:
        assert len(line.split(maxsplit=1)) == 2 or line.startswith(" " * 10), f"{line.strip()!r} has no help"


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["normalize", "--bogus", "x"], "usage: mixer normalize"),
        (["synth", "--chats", "1", "--bogus"], "usage: mixer synth"),
        (["chats", "import", "--bogus", "x.csv"], "usage: mixer chats import"),
    ],
)
def test_an_unknown_flag_is_refused_with_the_subcommands_usage(argv: list[str], usage: str) -> None:
    result = mixer(*argv, env=mixer_env(None, Keys(), "smbiz"))
    assert result.returncode == 2 and result.stdout == ""
    first, last = result.stderr.splitlines()[0], result.stderr.splitlines()[-1]
    assert first.startswith(usage), result.stderr
    assert last == f"{usage.removeprefix('usage: ')}: error: unrecognized arguments: --bogus"


@pytest.mark.parametrize("command", ["normalize", "chats", "config", "synth"])
def test_help_of_a_command_that_starts_no_redis_does_not_offer_one_instead_of_an_embedded_one(command: str) -> None:
    result = mixer(command, "--help", env=mixer_env(None, Keys(), "smbiz"))
    assert result.returncode == 0 and "--redis" in result.stdout
    assert "embedded" not in result.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["synth", "--chats", "2", "--minutes", "5"],
        ["normalize", NIGHT],
        ["config"],
        ["chats"],
        ["transcript", "--redis", "{redis}"],
        ["report", "--redis", "{redis}", "--format", "json"],
        ["record", "--redis", "{redis}", "--count", "1"],
    ],
    ids=lambda argv: argv[0],
)
def test_a_command_whose_stdout_reader_has_gone_stops_quietly(argv: list[str], redis_url: str, tmp_path: Path) -> None:
    env = mixer_env(None, Keys(f"cli-pipe-{argv[0]}"), "pstweetchat", XDG_RUNTIME_DIR=str(tmp_path))
    result = into_a_closed_pipe([a.format(redis=redis_url) for a in argv], env)
    assert result.returncode == 0, result.stderr
    assert "Broken pipe" not in result.stderr and "Traceback" not in result.stderr and "Exception" not in result.stderr


def test_a_load_test_whose_stdout_reader_has_gone_still_gives_its_verdict(tmp_path: Path) -> None:
    env = mixer_env(None, Keys("cli-pipe-loadtest"), "smbiz", XDG_RUNTIME_DIR=str(tmp_path))
    dead = f"ws://127.0.0.1:{free_port()}/ws"  # nothing listens: the verdict is a failure
    result = into_a_closed_pipe(
        ["loadtest", "--url", dead, "--clients", "1", "--processes", "1", "--duration", "0"], env
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr and "Exception" not in result.stderr
    assert (
        result.stderr.splitlines()[-1] == f"mixer loadtest: FAILED: no client could connect to {dead} (1 of 1 failed)"
    )


def into_a_closed_pipe(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`mixer ARGV` with a stdout whose reader left before the first line (`| head -0`): every write to it fails."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "mixer.cli", *argv],
            env=env,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        os.close(write)


def test_a_bad_config_value_names_file_line_and_key(tmp_path: Path) -> None:
    config = tmp_path / "mixer.toml"
    config.write_text('[event]\nname = "Night"\n\n[server]\nport = "eighty"\n')
    result = mixer("config", "--config", str(config), env=mixer_env(None, Keys(), "smbiz"))
    assert result.returncode == 2
    assert "mixer.toml:5: server.port:" in result.stderr


def test_config_prints_settings_with_environment_overrides() -> None:
    env = mixer_env("redis://127.0.0.1:6379/3", Keys("cfg"), "smbiz,edchat", MIXER_SERVER_PORT="9123")
    result = mixer("config", env=env)
    assert result.returncode == 0
    assert "port = 9123" in result.stdout and 'url = "redis://127.0.0.1:6379/3"' in result.stdout
    assert 'tag = "edchat"' in result.stdout


def test_config_never_prints_the_redis_password_nor_a_token() -> None:
    env = mixer_env(
        "redis://:s3cretpw@db.example:6379/0", Keys("cfg"), "smbiz", MIXER_MODERATION_TOKEN="m0d-0123456789abcdef"
    )
    result = mixer("config", env=env)
    assert result.returncode == 0, result.stderr
    assert 'url = "redis://***@db.example:6379/0"' in result.stdout
    assert "s3cretpw" not in result.stdout + result.stderr and "m0d-0123456789abcdef" not in result.stdout


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["config"], {"MIXER_REDIS_URL": "http://:s3cretpw@db.example:6379"}),  # refused: not a redis:// URL
        (["ingest", "--redis", "redis://:s3cretpw@127.0.0.1:1/0"], {}),  # unreachable
        (["serve", "--redis", "redis://:s3cretpw@db.example:port/0"], {}),  # unusable
    ],
)
def test_a_refused_redis_url_is_named_without_its_password(argv: list[str], extra: dict[str, str]) -> None:
    result = mixer(*argv, env=mixer_env(None, Keys("cfg"), "smbiz", **extra))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "redis://***@" in result.stderr or "http://***@" in result.stderr, result.stderr
    assert "s3cretpw" not in result.stderr + result.stdout


async def test_replay_command_reports_the_malformed_line_and_publishes_the_rest(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    env = mixer_env(redis_url, keys, "pstweetchat")
    result = mixer("replay", str(FIXTURES / "pstweetchat_malformed.jsonl"), "--speed", "0", env=env)
    assert result.returncode == 0, result.stderr
    assert "pstweetchat_malformed.jsonl:8:" in result.stderr
    lines = (FIXTURES / "pstweetchat_malformed.jsonl").read_text().splitlines()
    records = [n for n, line in enumerate(lines, 1) if line.strip() and not line.startswith("#")]
    assert {8, 10, 12} <= set(records)  # broken on purpose, see the file's header
    assert await redis.xlen(keys.chat("pstweetchat")) == len(records) - 3
    # stderr is no terminal here (a log): progress comes as whole lines, never one rewritten with carriage returns
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mixer.cli", "replay", NIGHT, "--speed", "0", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)  # bytes, as written: no newline translation
    assert proc.returncode == 0 and b"\r" not in err
    assert re.search(rb"^replay: \d+ read, \d+ published, .* \([\d,]+ posts/s\)$", err, re.MULTILINE)


async def test_replaying_a_file_that_is_no_recording_ends_in_one_line_saying_so(
    redis: aioredis.Redis, keys: Keys, redis_url: str, tmp_path: Path
) -> None:
    export = tmp_path / "export.csv"  # a spreadsheet export of a chat: text, but no record of it is JSON
    export.write_text("Date,Screen Name,Tweet Text\n" + "".join(f"3/1/2019,@u{n},hi #pstweetchat\n" for n in range(99)))
    result = mixer("replay", str(export), "--speed", "0", env=mixer_env(redis_url, keys, "pstweetchat"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "mixer replay: nothing published: none of the 100 records read is a post or a platform payload (the first "
        "malformed ones are logged above): is it a recording? See docs/recorded-format.md"
    )
    assert result.stderr.count("skipped malformed record") == 21  # the first 20, then one saying the rest are counted


async def test_replaying_an_empty_file_says_so_and_exits_1_where_normalize_prints_nothing_and_exits_0(
    redis: aioredis.Redis, keys: Keys, redis_url: str, tmp_path: Path
) -> None:
    empty = tmp_path / "night.jsonl"
    empty.write_text("# recorded by hand\n\n")
    env = mixer_env(redis_url, keys, "pstweetchat")
    result = mixer("replay", str(empty), "--speed", "0", env=env)
    assert result.returncode == 1, result.stderr  # nothing published, as for a file of malformed records
    assert result.stderr.splitlines()[-1] == (
        f"mixer replay: nothing published: {empty} holds no records (empty, or only blank and # comment lines)"
    )
    result = mixer("normalize", str(empty), env=env)  # a conversion of nothing is nothing (docs/recorded-format.md)
    assert (result.returncode, result.stdout) == (0, "")
    assert result.stderr == f"{empty}: no records (empty, or only blank and # comment lines)\n"


def test_a_byte_that_is_not_utf8_is_named_by_line_and_byte_of_the_file_by_normalize_and_replay(
    tmp_path: Path, redis_url: str, keys: Keys
) -> None:
    posts = [line for line in Path(NIGHT).read_bytes().splitlines(keepends=True) if line.startswith(b"{")][:2]
    lines = [b"# saved by hand\n", *posts]
    at = lines[2].index(b'"text":"') + len(b'"text":"')
    lines[2] = lines[2][:at] + b"caf\xe9 " + lines[2][at:]  # a Latin-1 editor's "cafe" with an accent, line 3
    path = tmp_path / "night.jsonl"
    path.write_bytes(b"".join(lines))
    byte = len(lines[0]) + len(lines[1]) + at + len(b"caf") + 1
    expected = f"{path}:3: not UTF-8 at byte {byte} of the file (0xe9); save it as UTF-8"
    env = mixer_env(redis_url, keys, "pstweetchat")
    result = mixer("normalize", str(path), env=env)
    assert result.stderr.splitlines() == [expected]
    result = mixer("replay", str(path), "--speed", "0", env=env)
    assert result.returncode == 0 and f"skipped malformed record {expected}" in result.stderr


def test_replay_without_a_shared_redis_says_what_to_do(tmp_path: Path) -> None:
    env = mixer_env(None, Keys(), "pstweetchat", XDG_RUNTIME_DIR=str(tmp_path))  # and no `mixer run` to join
    result = mixer("replay", str(FIXTURES / "pstweetchat_2019-03-01.jsonl"), env=env)
    assert result.returncode == 2
    assert "--redis" in result.stderr and "start `mixer run`" in result.stderr


# The `mixer` console script, as a user's shell runs it, with a real SIGINT sent to itself when the command reaches
# ``{module}``'s import: a Ctrl-C in the second before the command handles signals itself lands at such a point.
INTERRUPTED_AT = """
import importlib.abc, signal, sys, tomllib

class CtrlC(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == {module!r}:
            print("SIGINT importing", name, file=sys.stderr)
            signal.raise_signal(signal.SIGINT)
        return None

sys.meta_path.insert(0, CtrlC())
entry = tomllib.load(open("pyproject.toml", "rb"))["project"]["scripts"]["mixer"]
module, _, function = entry.partition(":")
sys.argv = ["mixer", *{argv!r}]
sys.exit(getattr(__import__(module, fromlist=[function]), function)())
"""


@pytest.mark.parametrize(
    ("argv", "module"),
    [
        (["run", "--ephemeral", "--port", "{port}"], "mixer.runner"),  # the command's own import
        (["ingest"], "mixer.ingest.replay"),
        (["replay", NIGHT], "mixer.tools.replay"),
        (["serve", "--port", "{port}"], "uvloop"),  # the command running, before its event loop
    ],
    ids=lambda value: value[0] if isinstance(value, list) else value,
)
def test_ctrl_c_before_a_command_handles_signals_stops_it_quietly_with_130(
    argv: list[str], module: str, redis_url: str, tmp_path: Path
) -> None:
    env = mixer_env(redis_url if argv[0] != "run" else None, Keys(), "pstweetchat", XDG_RUNTIME_DIR=str(tmp_path))
    argv = [a.format(port=free_port()) for a in argv]
    result = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_AT.format(module=module, argv=argv)],
        cwd=Path(__file__).parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.stderr == f"SIGINT importing {module}\n"  # no traceback, no KeyboardInterrupt
    assert result.returncode == 130
