"""Every Redis key name chatmixer uses, and nothing else.

The chat streams, the merged feed, the merge cursor and the seen-set share one hash
tag (``{feed}``) so the merge stage's multi-stream XREAD and its MULTI transaction work
on Redis Cluster, where all keys of one command must live in one slot. The prefix
(``mixer`` by default) lets several events, or tests, share one Redis.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "mixer"

    def chat(self, tag: str) -> str:
        """Stream of one chat's posts as ingested (capped, approximate MAXLEN)."""
        return f"{self.prefix}:{{feed}}:chat:{tag}"

    @property
    def feed(self) -> str:
        """The merged feed stream; its entry ids are the posts' feed ids."""
        return f"{self.prefix}:{{feed}}:feed"

    @property
    def merge_cursor(self) -> str:
        """Hash chat tag -> last chat-stream id the merge stage has fully handled."""
        return f"{self.prefix}:{{feed}}:merge:cursor"

    @property
    def merge_lease(self) -> str:
        """String "host:pid:random" of the one merge stage allowed to write the feed; expires unless renewed."""
        return f"{self.prefix}:{{feed}}:merge:lease"

    @property
    def seen(self) -> str:
        """Sorted set of every post key the merge stage has handled, scored by when (bounds the index)."""
        return f"{self.prefix}:{{feed}}:seen"

    @property
    def index(self) -> str:
        """Hash post key -> msgpack of the post as shown (with its feed id), or a stub; trimmed with ``seen``."""
        return f"{self.prefix}:{{feed}}:index"

    @property
    def fingerprints(self) -> str:
        """Hash text fingerprint -> "key|ms" of the first post with that text (collapses repeats)."""
        return f"{self.prefix}:{{feed}}:fp"

    @property
    def fingerprint_times(self) -> str:
        """Sorted set of fingerprints by first-seen ms, to forget them after the dedupe window."""
        return f"{self.prefix}:{{feed}}:fp:time"

    @property
    def ingest_cursor(self) -> str:
        """Hash follower name -> its resume cursor (since_id, time_us, ...), written with what it published."""
        return f"{self.prefix}:{{feed}}:ingest:cursor"

    @property
    def ingest_stats(self) -> str:
        """Hash follower name -> JSON of its counters, refreshed every few seconds by `mixer ingest`."""
        return f"{self.prefix}:ingest:stats"

    def pattern(self) -> str:
        """Glob matching every key under this prefix (for cleanup)."""
        return f"{self.prefix}:*"
