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
    def seen(self) -> str:
        """Sorted set of post keys already in the feed, scored by feed time (bounded)."""
        return f"{self.prefix}:{{feed}}:seen"

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
