"""The merge stage's stream entries as bytes: chat-stream entries read as events, feed entries written in one call.

``decode_event`` reads a chat-stream entry (a post, an edit or a retraction) as an ``Event``, raising on anything
else; ``Twins`` decodes the copies of one post that a single publish wrote to several chat streams (the same bytes)
only once, keeping nothing that failed or was cut, so every entry still counts and logs its own trouble. On the way
out, ``batch_write`` turns a batch's feed writes and index changes into ``BATCH_WRITE``'s one argument (a new post's
feed body without its ``id``: the entry id is its id), and ``FeedIds`` hands out entry ids in increasing order,
never below a stream's newest (the shaped streams' too). Pure: no Redis I/O; reading, holding, deduplicating and
committing are ``stage``.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import msgpack

from mixer.codec import EDIT_FIELD, FIELD, PIN_FIELD, RETRACT_FIELD, pack, unpack_post
from mixer.merge.dedupe import Changes, FeedWrite
from mixer.models import Edit, Event, Retraction, trimmed
from mixer.streams import id_key

_KIND_FIELD = {"p": FIELD, "u": EDIT_FIELD, "r": RETRACT_FIELD, "n": PIN_FIELD}
# A batch's per-post writes (feed entries, index, seen-set, fingerprints) as one script call with one msgpack argument:
# one command per post (an XADD each, an HSET/ZADD argument pair each) cost the client more than anything else it sends
# (building the commands, parsing a QUEUED reply per command: docs/benchmarks.md "Merge stage"). Redis's Lua reads
# msgpack without the bin type, hence ``use_bin_type=False`` for the wrapper (the bodies inside are msgpack already).
# In the MULTI like the rest of the batch: no reader sees half of it, and a connection lost before EXEC writes none.
BATCH_WRITE = """
local batch = cmsgpack.unpack(ARGV[2])
for _, e in ipairs(batch[1]) do
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], e[1], e[2], e[3])
end
for n, cmd in ipairs({'HSET', 'ZADD', 'HSET', 'ZADD'}) do
    local items = batch[n + 1]
    for i = 1, #items, 1000 do
        redis.call(cmd, KEYS[n + 1], unpack(items, i, math.min(i + 999, #items)))
    end
end
return #batch[1]
"""


def decode_event(kind: bytes, raw: bytes) -> Event:
    """A chat-stream entry as an Event; raises ValueError (or a msgpack error) if it is not one."""
    if kind == FIELD:
        return unpack_post("", raw)
    if kind == EDIT_FIELD:
        return Edit(unpack_post("", raw))
    if kind == RETRACT_FIELD:
        data = msgpack.unpackb(raw, raw=False)
        if not isinstance(data, dict) or not isinstance(data.get("key"), str):
            raise ValueError("a retraction needs a 'key'")
        return Retraction(data["key"], str(data.get("source", "")), tuple(data.get("chats", ())))
    raise ValueError("an entry without a post, edit or retraction field")


class Twins:
    """Posts decoded from recent chat-stream entries, by the entry's bytes (``events``): one publish writes the same
    bytes to each of a post's chat streams (29% of the demo's posts are in two), and decoding a copy again cost ~6 us.

    A post is the same value however often its bytes are decoded (``decode_event`` of a post reads nothing but them;
    Posts are immutable), so a copy may take the first one's. Only what decoded without a cut or drop counted in
    ``models.trimmed`` is kept, so every entry still counts its own; what fails to decode is never kept, so every
    malformed copy is counted and logged. A read's posts are forgotten once the watermark passes its last stamp (every
    chat has then been read past it, so a copy written with them has come), and no more than ``limit`` are kept.
    """

    def __init__(self, limit: int = 50_000) -> None:
        self.events: dict[bytes, Event] = {}  # a post's bytes -> the post
        self._limit = limit
        self._kept: list[bytes] = []  # bytes kept since the last ``read``
        self._reads: dict[str, deque[tuple[int, list[bytes]]]] = {}  # chat -> (last stamp, bytes kept), read order

    def decode(self, kind: bytes, raw: bytes) -> Event:
        """``decode_event(kind, raw)``, kept for a copy when it is a post (the caller asked ``events`` first)."""
        if kind != FIELD or len(self.events) >= self._limit:
            return decode_event(kind, raw)
        cuts = trimmed.total() if trimmed else 0  # none at all, as a rule: no sum to take
        post = decode_event(kind, raw)
        if not trimmed or trimmed.total() == cuts:
            self.events[raw] = post
            self._kept.append(raw)
        return post

    def read(self, chat: str, last_ms: int) -> None:
        """The posts kept since the last call came in a read of ``chat`` up to ``last_ms``."""
        if self._kept:
            self._reads.setdefault(chat, deque()).append((last_ms, self._kept))
            self._kept = []

    def forget(self, watermark: int) -> None:
        """Drop the posts of reads whose last stamp the watermark has passed."""
        for reads in self._reads.values():
            while reads and reads[0][0] < watermark:
                for raw in reads.popleft()[1]:
                    self.events.pop(raw, None)


def batch_write(writes: list[FeedWrite], changes: Changes) -> list[list[Any]]:
    """``BATCH_WRITE``'s argument: feed entries ``[id, field, body]`` (a post's body without its ``id``: the entry id
    is its id), then flat argument lists for HSET index, ZADD seen, HSET fingerprints, ZADD fingerprint times."""
    feed = []
    for kind, entry_id, payload in writes:
        body = payload
        if kind == "p":
            body = payload.copy()  # a dict copy and a del (order kept): a third of a comprehension's time
            body.pop("id", None)
        feed.append([entry_id, _KIND_FIELD[kind], pack(body)])
    index: list[Any] = []
    for key, stored in changes.posts.items():
        index += (key, pack(stored))
    seen: list[Any] = []
    for key, ms in changes.seen.items():
        seen += (str(ms), key)
    prints: list[Any] = []
    times: list[Any] = []
    for fp, (key, ms) in changes.fingerprints.items():
        prints += (fp, f"{key}|{ms}")
        times += (str(ms), fp)
    return [feed, index, seen, prints, times]


class FeedIds:
    """Feed entry ids in increasing order: ``<ms>-<seq>``, never below the feed's newest id."""

    def __init__(self, last: str = "0-0") -> None:
        self.ms, self.seq = id_key(last)

    def next(self, now_ms: int) -> str:
        if now_ms > self.ms:
            self.ms, self.seq = now_ms, 0
        else:
            self.seq += 1
        return f"{self.ms}-{self.seq}"
