"""The directory as the product shows it: /api/chats, `mixer chats`, and scheduled following."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from mixer.config import load_settings
from mixer.ingest.publish import Publisher, follow_gate
from mixer.keys import Keys
from mixer.settings import ChatSettings, ConfigError
from tests.helpers import live_all_day_now, make_post
from tests.processes import mixer_env
from tests.servers import running_app, settings_for

ALWAYS_LIVE = live_all_day_now()


async def test_api_chats_gives_live_and_next_slot_in_utc(redis: aioredis.Redis, keys: Keys, redis_url: str) -> None:
    chats = (
        ChatSettings("smbiz", "Small Biz", "#4fc3f7", schedule=ALWAYS_LIVE, topic="small business"),
        ChatSettings("journchat", "Journalism", "#81c784", schedule="Mon 20:00-22:00 America/New_York"),
        ChatSettings("edchat", "Education", "#ffb74d"),
    )
    async with running_app(settings_for(keys.prefix, chats=chats), redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.get(srv.url + "/api/chats") as resp:
            listed = {c["tag"]: c for c in (await resp.json())["chats"]}
    assert listed["smbiz"]["live"] is True and listed["smbiz"]["topic"] == "small business"
    start = datetime.fromisoformat(listed["journchat"]["next_start"])
    assert start.tzinfo is not None and start.utcoffset() == UTC.utcoffset(None)
    assert start.hour in (0, 1)  # 20:00 New York is 00:00 UTC in summer time, 01:00 in winter
    assert listed["edchat"]["live"] is None and listed["edchat"]["next_start"] is None


def test_chat_schedules_and_follow_modes_are_read_from_the_config(tmp_path: Path) -> None:
    path = tmp_path / "mixer.toml"
    path.write_text(
        '[event]\nname = "n"\nhashtag = "chatmixer"\nfollow = "scheduled"\nfollow_margin_minutes = 10\n'
        '[[chats]]\ntag = "journchat"\nschedule = "mon 20:00-22:00 America/New_York"\nhosts = ["Sarah"]\n'
        '[[chats]]\ntag = "chatmixer"\n[[chats]]\ntag = "edchat"\nschedule = "Tue 19:00-20:00 America/New_York"\n'
        'follow = "always"\n'
    )
    settings = load_settings(path, {})
    assert settings.chats[0].schedule.startswith("Mon 20:00-22:00")
    assert settings.chats[0].hosts == ("Sarah",)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[chats]]\ntag = "x"\nschedule = "Funday 25:00 Mars/Olympus"\n')
    with pytest.raises(ConfigError, match=r"bad\.toml:3: chats\[0\]\.schedule"):
        load_settings(bad, {})


def test_scheduled_following_keeps_a_chat_only_during_its_slot_and_margin(tmp_path: Path) -> None:
    chats = (
        ChatSettings("journchat", "J", "#111111", schedule="Mon 20:00-22:00 America/New_York"),
        ChatSettings("edchat", "E", "#222222", follow="always"),
        ChatSettings("chatmixer", "The night", "#333333"),
        ChatSettings("quiet", "Q", "#444444", schedule="Mon 20:00-22:00 America/New_York", follow="never"),
    )
    now = [datetime(2026, 7, 7, 0, 30, tzinfo=UTC)]  # Monday 6 July 20:30 in New York: in the slot
    settings = settings_for("p", chats=chats, follow="scheduled", follow_margin_minutes=15.0)
    gate = follow_gate(settings, clock=lambda: now[0])
    assert gate is not None
    assert gate("journchat") and gate("edchat") and gate("chatmixer") and not gate("quiet")
    now[0] = datetime(2026, 7, 7, 2, 10, tzinfo=UTC)  # 22:10 New York: within the 15-minute margin
    assert gate("journchat")
    now[0] = datetime(2026, 7, 8, 0, 30, tzinfo=UTC)  # Tuesday: off slot
    assert not gate("journchat") and gate("edchat") and gate("chatmixer")
    assert follow_gate(settings_for("p", chats=chats[1:3])) is None  # nothing scheduled: no gate


async def test_an_off_slot_post_is_not_published_but_counted(redis: aioredis.Redis, keys: Keys) -> None:
    publisher = Publisher(redis, keys, ["journchat", "edchat"], 1000, active=lambda chat: chat == "edchat")
    await publisher.publish([make_post("x:1", ("journchat",)), make_post("x:2", ("journchat", "edchat"))])
    assert await redis.xlen(keys.chat("journchat")) == 0
    assert await redis.xlen(keys.chat("edchat")) == 1
    assert publisher.counters["skipped_off_slot"] == 1


def test_mixer_chats_lists_next_starts_in_a_time_zone_and_marks_live_ones(tmp_path: Path) -> None:
    path = tmp_path / "mixer.toml"
    path.write_text(
        f'[[chats]]\ntag = "smbiz"\nschedule = "{ALWAYS_LIVE}"\n'
        '[[chats]]\ntag = "journchat"\nschedule = "Mon 20:00-22:00 America/New_York"\n'
    )
    env = mixer_env(None, Keys(), "x")
    del env["MIXER_CHATS"]  # the chats come from the file
    result = subprocess.run(
        [sys.executable, "-m", "mixer.cli", "chats", "--config", str(path), "--tz", "Europe/London"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert "LIVE until" in lines["#smbiz"]
    assert "next Tue" in lines["#journchat"] and "Europe/London" in lines["#journchat"]
