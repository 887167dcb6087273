"""``adopt_old_keys``: an event's keys written under the older key layout, renamed to the current one.

Before Redis Cluster support every event shared the literal hash tag ``{feed}`` (``mixer:{feed}:feed``),
Bluesky profiles had ``{profiles}``, and the stats and audit log had none; now every key of an event carries its
prefix as the tag (``mixer:{mixer}:feed``, ``mixer.keys``). A night kept on disk, or a shared Redis, from
before would look empty to this version, so every role renames what it finds of the old layout when it starts
(``RENAMENX``: a key of the new layout is never overwritten, and roles starting together do not conflict).
Not on a Cluster: the old layout never worked there, and a rename across slots is refused. Upgrade every role
of an event at once: an old one still running would go on writing the old names.
"""

from __future__ import annotations

import logging
import re

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from mixer import connect
from mixer.keys import Keys

log = logging.getLogger(__name__)

_GLOB = re.compile(r"([*?\[\]\\])")  # characters SCAN MATCH treats as a pattern


def old_names(keys: Keys) -> list[tuple[str, str]]:
    """(SCAN pattern, old-name prefix) of each part of the old layout, for ``keys``'s prefix."""
    escaped = _GLOB.sub(r"\\\1", keys.prefix)
    olds = [f"{keys.prefix}:{{feed}}:", f"{keys.prefix}:{{profiles}}:"]
    singles = [f"{keys.prefix}:ingest:stats", f"{keys.prefix}:mod:audit"]
    return [(_GLOB.sub(r"\\\1", old) + "*", old) for old in olds] + [
        (f"{escaped}{single[len(keys.prefix) :]}", single) for single in singles
    ]


def new_name(keys: Keys, old: str) -> str:
    """The current name of ``old``, a key of ``keys``'s prefix in the old layout."""
    for part in ("{feed}:", "{profiles}:"):
        head = f"{keys.prefix}:{part}"
        if old.startswith(head):
            return f"{keys.prefix}:{keys.tag}:{old[len(head) :]}"
    return f"{keys.prefix}:{keys.tag}:{old[len(keys.prefix) + 1 :]}"


async def adopt_old_keys(redis: aioredis.Redis, keys: Keys) -> int:
    """Rename every key of ``keys``'s prefix still in the old layout to its current name (an existing current key
    wins: the old one is left, with a WARNING); how many were renamed. Raises RedisError as any command."""
    renamed = kept = 0
    for pattern, _ in old_names(keys):
        async for raw in redis.scan_iter(match=pattern, count=1000):
            old = raw.decode() if isinstance(raw, bytes) else str(raw)
            try:
                done = await redis.renamenx(old, new_name(keys, old))
            except ResponseError:  # another role starting at the same time renamed it first
                continue
            renamed, kept = renamed + bool(done), kept + (not done)
    if renamed:
        log.info("renamed %d keys of prefix %r from the old key layout to %s:%s:...", renamed, keys.prefix,
                 keys.prefix, keys.tag)  # fmt: skip
    if kept:
        log.warning("%d keys of prefix %r in the old key layout were left: a key of the new name exists", kept,
                    keys.prefix)  # fmt: skip
    return renamed


async def adopt_old_keys_at(url: str, keys: Keys) -> int:
    """``adopt_old_keys`` on the Redis at ``url`` (nothing on a Cluster); a Redis error is logged, not raised: the
    role starts anyway, and the old keys wait for the next start."""
    if connect.parse(url).kind == "cluster":
        return 0
    redis = connect.client(url, keys.feed, socket_timeout=10)
    try:
        return await adopt_old_keys(redis, keys)
    except (RedisError, OSError) as exc:
        log.warning("could not rename the old key layout's keys of prefix %r: %s", keys.prefix, exc)
        return 0
    finally:
        await redis.aclose()
