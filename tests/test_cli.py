"""The `mixer` command as a user runs it: help, config errors, replay into a shared Redis."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from mixer.keys import Keys
from tests.helpers import FIXTURES as FIXTURES_DIR
from tests.processes import mixer_env

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
    "record",
    "loadtest",
    "synth",
    "config",
]


def mixer(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mixer.cli", *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command: str) -> None:
    result = mixer(command, "--help", env=mixer_env(None, Keys(), "smbiz"))
    assert result.returncode == 0
    assert f"usage: mixer {command}" in result.stdout and "--redis" in result.stdout


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
    assert "published" in result.stderr


def test_replay_without_a_shared_redis_says_what_to_do() -> None:
    result = mixer("replay", str(FIXTURES / "pstweetchat_2019-03-01.jsonl"), env=mixer_env(None, Keys(), "pstweetchat"))
    assert result.returncode == 2
    assert "--redis" in result.stderr
