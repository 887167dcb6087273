"""`mixer replay` as a user runs it: which keys a looping and a one-shot replay publish."""

from __future__ import annotations

import asyncio
import re
import signal

import redis.asyncio as aioredis

from mixer.codec import FIELD, unpack_post
from mixer.ingest.recorded import read_records
from mixer.keys import Keys
from mixer.models import Post
from tests.helpers import FIXTURES
from tests.processes import die_with_parent, mixer_env, read_until, start_mixer

NIGHT = FIXTURES / "recorded" / "pstweetchat_2019-03-01.jsonl"  # 10 posts
CHAT = "pstweetchat"


async def chat_posts(redis: aioredis.Redis, keys: Keys, at_least: int) -> list[Post]:
    """The posts in the chat stream once it holds ``at_least`` (XREAD BLOCK: waits on the stream itself)."""
    last, found = "0-0", []
    while len(found) < at_least:
        reply = await redis.xread({keys.chat(CHAT): last}, count=1000, block=10_000)
        assert reply, f"the chat stream stuck at {len(found)} of {at_least}"
        for _, entries in reply:
            found += [unpack_post(eid.decode(), fields[FIELD]) for eid, fields in entries]
            last = entries[-1][0]
    return found


async def test_a_looping_replay_gives_every_pass_of_its_run_keys_of_their_own(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    env = mixer_env(redis_url, keys, CHAT)
    proc = await start_mixer("replay", "--loop", "--speed", "0", str(NIGHT), env=env, preexec=die_with_parent())
    try:
        published = await chat_posts(redis, keys, 20)
    finally:
        proc.send_signal(signal.SIGINT)
        assert await proc.wait() == 130
    tags = {re.fullmatch(r"x:\d+~([0-9a-z]{8})\.[01]", p.key).group(1) for p in published[:20]}  # type: ignore[union-attr]
    assert len(tags) == 1  # one run tag, every pass (the first too): a restart gets another
    assert {p.key.rpartition(".")[2] for p in published[:20]} == {"0", "1"}
    assert all(p.text.endswith(f" [{p.key.rpartition('~')[2]}]") for p in published)  # no text dedupe across runs


async def test_a_one_shot_replay_keeps_the_recorded_keys(redis: aioredis.Redis, keys: Keys, redis_url: str) -> None:
    env = mixer_env(redis_url, keys, CHAT)
    proc = await start_mixer("replay", "--speed", "0", str(NIGHT), env=env, preexec=die_with_parent())
    output, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, output.decode()
    recorded = {p.key: p.text for p in read_records(NIGHT) if isinstance(p, Post)}
    assert {p.key: p.text for p in await chat_posts(redis, keys, 10)} == recorded  # a second run: deduplicated


async def test_a_replay_whose_chats_are_not_followed_says_so_and_fails(redis_url: str, keys: Keys) -> None:
    env = mixer_env(redis_url, keys, "smbiz,edchat")  # the recording's chat is not among them
    proc = await start_mixer("replay", "--speed", "0", str(NIGHT), env=env, preexec=die_with_parent())
    output, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1  # nothing could be published
    assert (
        "mixer replay: none of the 10 posts read is in a chat this deployment follows (smbiz, edchat): configure "
        "the recording's chats (MIXER_CHATS or [[chats]], docs/loadtools.md)"
    ) in output.decode()


async def test_a_looping_replay_into_unfollowed_chats_says_so_once(redis_url: str, keys: Keys) -> None:
    env = mixer_env(redis_url, keys, "smbiz")
    proc = await start_mixer("replay", "--loop", "--speed", "0", str(NIGHT), env=env, preexec=die_with_parent())
    try:
        line = (await read_until(proc, "is in a chat this deployment follows"))[-1]
        assert "none of the" in line and "(smbiz)" in line
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 130
    assert "this deployment follows" not in output.decode()  # once, not at every pass
