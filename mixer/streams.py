"""Redis stream I/O: the one place that issues XREAD/XRANGE and parses their replies.

Blocking readers get a dedicated connection whose socket timeout exceeds the block
time (redis-py raises a timeout otherwise, and cancelling a blocking read on a pooled
connection has mixed up replies in the past). Replies come back as plain
``(entry_id, payload)`` pairs; entries without the post field are returned with an
empty payload and kind so callers can count and skip them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from mixer import connect
from mixer.codec import ACTION_FIELD, EDIT_FIELD, FIELD, PIN_FIELD, RETRACT_FIELD

KINDS = (FIELD, EDIT_FIELD, RETRACT_FIELD, PIN_FIELD, ACTION_FIELD)
Entry = tuple[str, bytes, bytes]  # (entry id, payload, kind: the field name b"p", b"u", b"r"; b"" if unknown)


# Many stream entries in one command: KEYS the streams, ARGV[1] the MAXLEN (~), ARGV[2] msgpack of [[stream number,
# field, value], ...]. One XADD per entry cost the client a command to build and, in a MULTI, a QUEUED reply to parse
# each: the largest share of a publish batch's time (docs/benchmarks.md "Merge stage"). Redis's Lua reads msgpack
# without the bin type: the wrapper is packed with ``use_bin_type=False`` (values inside stay as they were).
_APPEND_MANY = """
local entries = cmsgpack.unpack(ARGV[2])
for _, e in ipairs(entries) do
    redis.call('XADD', KEYS[e[1]], 'MAXLEN', '~', ARGV[1], '*', e[2], e[3])
end
return #entries
"""


def append_many(pipe: Pipeline, entries: Sequence[tuple[str, Mapping[bytes, bytes]]], maxlen: int) -> None:
    """Queue on ``pipe`` one XADD per ``(stream, {field: value})`` (one field each), in order, as a single command."""
    streams: dict[str, int] = {}
    packed = [
        [streams.setdefault(key, len(streams) + 1), field, value]
        for key, fields in entries
        for field, value in fields.items()
    ]
    blob = msgpack.packb(packed, use_bin_type=False)
    pipe.eval(_APPEND_MANY, len(streams), *streams, maxlen, blob)


def raise_if_cancelling() -> None:
    """Re-raise a cancellation that redis-py swallowed: its read timeouts can eat a CancelledError
    delivered mid-read, and the caller's loop would then block on the next read forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def dedicated_client(url: str, block_ms: int, key: str | None = None) -> aioredis.Redis:
    """A client with one connection of its own, safe for XREAD BLOCK up to ``block_ms``; ``key``: any key of the
    event it serves (on Redis Cluster it connects to that slot's master, ``mixer.connect``)."""
    client = connect.client(
        url, key, single=True, socket_timeout=block_ms / 1000 + 10, socket_connect_timeout=5, health_check_interval=30
    )
    client.set_response_callback("XREAD", _as_sent)  # read_new reads the reply as Redis sent it
    return client


def _as_sent(response: Any, **options: Any) -> Any:
    """XREAD's reply untouched: redis-py's parser builds a dict per entry that ``_entry`` would take apart again (a
    tenth of the merge stage's time, docs/benchmarks.md "Merge stage")."""
    return response


def text(value: bytes | str) -> str:
    """A Redis reply value as ``str`` (replies are bytes unless decoding was asked for)."""
    return value.decode() if isinstance(value, bytes) else value


def _entry(raw: Any) -> Entry:
    entry_id, fields = raw
    eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    if isinstance(fields, list):  # as Redis sent it: [field, value, ...]
        if len(fields) == 2:
            return (eid, fields[1], fields[0]) if fields[0] in KINDS else (eid, b"", b"")
        fields = dict(zip(fields[::2], fields[1::2], strict=False))
    if isinstance(fields, dict):
        for kind in KINDS:
            payload = fields.get(kind)
            if payload is not None:
                return eid, payload, kind
    return eid, b"", b""


async def read_range(redis: aioredis.Redis, key: str, after: str, last: str = "+", count: int = 1000) -> list[Entry]:
    """Entries of ``key`` strictly after ``after`` up to ``last``, oldest first, at most ``count``."""
    start = "-" if after in ("", "0", "0-0") else f"({after}"
    reply: Any = await redis.xrange(key, min=start, max=last, count=count)
    return [_entry(raw) for raw in reply]


async def read_tail(redis: aioredis.Redis, key: str, count: int, before: str = "+") -> list[Entry]:
    """The newest ``count`` entries of ``key`` (strictly before ``before`` when given), oldest first."""
    reply: Any = await redis.xrevrange(key, max=before if before == "+" else f"({before}", count=count)
    return [_entry(raw) for raw in reversed(reply)]


def block_for(wait_ms: float) -> int | None:
    """XREAD's BLOCK for a wait of ``wait_ms``: None (do not block) under 1 ms. Redis times out a blocked read only on
    a server tick (``hz``, 10 a second by default), so even ``BLOCK 1`` can last 100 ms: what is due now must not
    wait for a tick (docs/redis.md "Blocking reads and hz")."""
    return int(wait_ms) if wait_ms >= 1 else None


async def read_new(
    redis: aioredis.Redis, cursors: dict[str, str], block_ms: int | None, count: int
) -> dict[str, list[Entry]]:
    """Entries after each stream's cursor (XREAD), keyed by stream; waits up to ``block_ms``."""
    keys = list(cursors)
    pieces: list[Any] = ["COUNT", count] if block_ms is None else ["COUNT", count, "BLOCK", block_ms]
    # execute_command, not redis.xread: the same command without redis-py's per-reply streaming-lag bookkeeping
    reply: Any = await redis.execute_command("XREAD", *pieces, "STREAMS", *keys, *cursors.values(), keys=keys)  # type: ignore[no-untyped-call]
    out: dict[str, list[Entry]] = {}
    if not reply:
        return out
    if isinstance(reply, dict):  # RESP3 shape
        items = list(reply.items())
    else:
        items = [(k, v) for k, v in reply]
    for key, raws in items:
        name = key.decode() if isinstance(key, bytes) else str(key)
        out[name] = [_entry(raw) for raw in raws]
    return out


async def last_id(redis: aioredis.Redis, key: str) -> str:
    """The id of the newest entry of ``key``, or ``0-0`` when empty or missing."""
    reply: Any = await redis.xrevrange(key, count=1)
    return _entry(reply[0])[0] if reply else "0-0"


def id_before(entry_id: str) -> str:
    """The largest stream id smaller than ``entry_id`` (so XREAD after it returns ``entry_id``)."""
    ms_s, _, seq_s = entry_id.partition("-")
    ms, seq = int(ms_s), int(seq_s or 0)
    if seq > 0:
        return f"{ms}-{seq - 1}"
    if ms == 0:
        return "0-0"
    return f"{ms - 1}-{(1 << 64) - 1}"


def id_key(entry_id: str) -> tuple[int, int]:
    """A stream id as a sortable pair."""
    ms_s, _, seq_s = entry_id.partition("-")
    return int(ms_s), int(seq_s or 0)


def id_ms(entry_id: str) -> int:
    """A stream id's milliseconds: ``id_key``'s first half without building the pair (asked per merged entry)."""
    return int(entry_id.partition("-")[0])


async def gap_lost(redis: aioredis.Redis, key: str, since: str) -> bool:
    """Whether entries after ``since`` may have been trimmed away, so resuming from it could leave a silent hole.

    True when ``since`` is older than the oldest entry still held and the stream has been trimmed (or an
    entry after ``since`` deleted); conservative: a client whose ``since`` was the very last entry trimmed
    is told to reset too. True as well when ``since`` is beyond every id the stream ever gave: the stream went
    back (a Redis that lost its newest writes), so what the client holds is not all in it and new ids may repeat.
    """
    if since in ("", "0", "0-0"):
        return False
    fields = await _stream_info(redis, key)
    generated = fields.get("last-generated-id")
    if generated is not None and id_key(since) > id_key(text(generated)):
        return True
    deleted = fields.get("max-deleted-entry-id")
    if deleted is not None and id_key(text(deleted)) > id_key(since):
        return True
    first: Any = fields.get("first-entry")
    if not first:
        return False
    added = fields.get("entries-added")
    trimmed = added is None or int(added) > int(fields.get("length", 0))
    return trimmed and id_key(text(first[0])) > id_key(since)


async def trimmed_from(redis: aioredis.Redis, key: str) -> str | None:
    """The id of the oldest entry ``key`` still holds when older ones were trimmed away (its MAXLEN) or deleted, so a
    reader from its start does not see all it was given; None when it holds every entry (or is missing or empty, or
    the server does not count entries added: Redis before 7)."""
    if not await redis.exists(key):
        return None
    fields = await _stream_info(redis, key)
    first: Any = fields.get("first-entry")
    added = fields.get("entries-added")
    if not first or added is None or int(added) <= int(fields.get("length", 0)):
        return None
    return _entry(first)[0]


async def _stream_info(redis: aioredis.Redis, key: str) -> dict[str, Any]:
    info: Any = await redis.xinfo_stream(key)
    return {text(k) if isinstance(k, bytes | str) else str(k): v for k, v in info.items()}
