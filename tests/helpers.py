"""Small helpers shared by tests: where things are, posts, a recorded night re-timed to now, a test clock,
the feed read back, and waiting for a condition."""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgpack
import redis.asyncio as aioredis

from mixer.codec import FIELD, unpack_post
from mixer.keys import Keys
from mixer.models import Author, Post
from mixer.settings import DEMO_RECORDING
from mixer.streams import read_range

ROOT = Path(__file__).resolve().parent.parent  # the checkout
FIXTURES = ROOT / "tests" / "fixtures"

BUSY_HOUR = 1_551_463_200_000  # 2019-03-01 18:00 UTC, the demo recording's hour with the most posts


def make_post(key: str, chats: tuple[str, ...] = ("smbiz",), created: int = 1_700_000_000_000, text: str = "") -> Post:
    return Post(
        key=key,
        source="replay",
        chats=chats,
        author=Author(handle="alice", name="Alice"),
        text=text or f"post {key}",
        url=f"https://example.test/{key}",
        created=created,
        at=created,
    )


def live_all_day_now() -> str:
    """A chat schedule live from 6 h before now to 6 h after, every day: live for any test run, unlike
    "00:00-23:59", which is not live in the last minute of each UTC day (a run at 23:59 failed)."""
    now = datetime.now(UTC)
    start, end = (f"{(now + timedelta(hours=h)):%H:%M}" for h in (-6, 6))  # (an end before its start: past midnight)
    return f"Mon,Tue,Wed,Thu,Fri,Sat,Sun {start}-{end} UTC"


def now_ms() -> int:
    return int(time.time() * 1000)


def wall_post(
    key: str,
    chats: tuple[str, ...] = ("smbiz",),
    text: str = "",
    *,
    name: str = "Alice",
    handle: str = "alice",
    avatar: str | None = None,
    url: str | None = None,
    media: tuple[str, ...] = (),
    created: int | None = None,
) -> Post:
    """A post as screens show it, created now unless told otherwise."""
    base = make_post(key, chats, created=created or now_ms(), text=text)
    return base.replace(author=Author(handle=handle, name=name, avatar=avatar), url=url or base.url, media=media)


def recorded_night(limit: int, chats: set[str] | None = None, ago_ms: int = 150_000) -> list[Post]:
    """The first ``limit`` posts of the demo recording's busiest hour, re-timed to end ``ago_ms`` ago,
    their chats narrowed to ``chats`` (all kept when None)."""
    lines = [line for line in DEMO_RECORDING.read_text().splitlines() if line and not line.startswith("#")]
    posts = [Post.from_dict(json.loads(line)) for line in lines]
    chosen = [p for p in posts if BUSY_HOUR <= p.created < BUSY_HOUR + 3_600_000][:limit]
    shift = now_ms() - ago_ms - chosen[-1].created
    return [
        p.replace(
            created=p.created + shift,
            at=p.at + shift,
            chats=p.chats if chats is None else tuple(c for c in p.chats if c in chats),
        )
        for p in chosen
    ]


class FakeClock:
    """Wall-clock seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def feed_posts(redis: aioredis.Redis, keys: Keys) -> list[Post]:
    """The posts (cards) in the feed, leaving out update and retract entries."""
    entries = await read_range(redis, keys.feed, "0-0", count=100_000)
    return [unpack_post(eid, raw) for eid, raw, kind in entries if kind == FIELD]


async def feed_entries(redis: aioredis.Redis, keys: Keys) -> list[tuple[str, dict[str, object]]]:
    """Every feed entry as (kind, payload), kind 'p', 'u' or 'r'."""
    entries = await read_range(redis, keys.feed, "0-0", count=100_000)
    return [
        (kind.decode(), msgpack.unpackb(raw) | ({"id": eid} if kind == FIELD else {})) for eid, raw, kind in entries
    ]


def logged(records: Iterable[logging.LogRecord], logger: str, level: int, words: str) -> list[str]:
    """The messages of ``logger`` (``""``: any) at ``level`` that say ``words``, from caplog's records."""
    return [
        message
        for r in records
        if (not logger or r.name == logger) and r.levelno == level and words in (message := r.getMessage())
    ]


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0) -> None:
    """Poll ``check`` (plain or async) until it holds; fails the test after ``timeout`` seconds. Only for what
    offers nothing to await (counters, a follower's state): a Redis stream can be waited on with XREAD BLOCK."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(0.005)


def client_frame(first: int, payload: bytes, mask: bytes, mask_bit: int = 0x80) -> bytes:
    """A websocket client frame (RFC 6455 5.2) with first byte ``first``; masked unless ``mask_bit`` is 0."""
    size = len(payload)
    if size < 126:
        head = bytes([first, mask_bit | size])
    elif size < 1 << 16:
        head = bytes([first, mask_bit | 126]) + struct.pack("!H", size)
    else:
        head = bytes([first, mask_bit | 127]) + struct.pack("!Q", size)
    if not mask_bit:
        return head + payload
    key = (mask * (size // 4 + 1))[:size]
    return head + mask + bytes(b ^ k for b, k in zip(payload, key, strict=True))
