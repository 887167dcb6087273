"""Every Redis key name chatmixer uses, and nothing else.

Every key of one event is ``<prefix>:{<prefix>}:...``: the prefix (``mixer`` by default) lets several
events, or tests, share one Redis, and as the hash tag it puts all of an event's keys in one Redis Cluster
slot, so multi-key commands (the merge stage's multi-stream XREAD, its MULTI transactions, MGET) work there
and one connection to the slot's master serves the whole event (``mixer.connect``), while several events
spread over the cluster's shards. A prefix holds no braces (``config_schema``).
"""

from __future__ import annotations

from dataclasses import dataclass

CHANGES_MAXLEN = 1_000  # notices kept in ``Keys.mod_changes`` (queue or audit log changed): consoles need the newest


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "mixer"

    @property
    def tag(self) -> str:
        """The event's hash tag, ``{<prefix>}``: every key below carries it (one Cluster slot per event)."""
        return f"{{{self.prefix}}}"

    def chat(self, tag: str) -> str:
        """Stream of one chat's posts as ingested (capped, approximate MAXLEN)."""
        return f"{self.prefix}:{self.tag}:chat:{tag}"

    @property
    def feed(self) -> str:
        """The merged feed stream; its entry ids are the posts' feed ids."""
        return f"{self.prefix}:{self.tag}:feed"

    @property
    def merge_cursor(self) -> str:
        """Hash chat tag -> last chat-stream id the merge stage has fully handled."""
        return f"{self.prefix}:{self.tag}:merge:cursor"

    @property
    def merge_stats(self) -> str:
        """Hash of the leading merge stage's counters (``read``, ``written``, ``duplicate``, ``dropped:<reason>``,
        ...) plus ``at`` (ms) and ``run`` (a random id per stage instance: counters restart from 0 with a new one),
        rewritten at most once a second while it writes, expiring 30 s after: a looping replay reads it to tell
        when everything it publishes is dropped (``mixer.ingest.dropwatch``)."""
        return f"{self.prefix}:{self.tag}:merge:stats"

    @property
    def merge_lease(self) -> str:
        """String "host:pid:random" of the one merge stage allowed to write the feed; expires unless renewed."""
        return f"{self.prefix}:{self.tag}:merge:lease"

    @property
    def seen(self) -> str:
        """Sorted set of every post key the merge stage has handled, scored by when (bounds the index)."""
        return f"{self.prefix}:{self.tag}:seen"

    @property
    def index(self) -> str:
        """Hash post key -> msgpack of the post as shown (with its feed id), or a stub; trimmed with ``seen``."""
        return f"{self.prefix}:{self.tag}:index"

    @property
    def fingerprints(self) -> str:
        """Hash text fingerprint -> "key|ms" of the first post with that text (collapses repeats)."""
        return f"{self.prefix}:{self.tag}:fp"

    @property
    def fingerprint_times(self) -> str:
        """Sorted set of fingerprints by first-seen ms, to forget them after the dedupe window."""
        return f"{self.prefix}:{self.tag}:fp:time"

    @property
    def ingest_cursor(self) -> str:
        """Hash follower name -> its resume cursor (since_id, time_us, ...), written with what it published."""
        return f"{self.prefix}:{self.tag}:ingest:cursor"

    def ingest_recall(self, name: str, generation: str) -> str:
        """Hash of what follower ``name`` published (post key -> chats, status id -> uri), generation ``new`` or
        ``old``: its memory across restarts, for routing deletes and edits (``mixer.ingest.Recall``)."""
        return f"{self.prefix}:{self.tag}:ingest:recall:{name}:{generation}"

    def ingest_applied(self, writer: str) -> str:
        """Number of the last batch one Publisher (``writer``: its random id) wrote, set in the batch's transaction
        and expiring an hour after: tells a retry whether a batch whose reply was lost had landed."""
        return f"{self.prefix}:{self.tag}:ingest:applied:{writer}"

    @property
    def ingest_stats(self) -> str:
        """Hash follower name -> JSON of its counters, refreshed every few seconds by `mixer ingest`."""
        return f"{self.prefix}:{self.tag}:ingest:stats"

    def health(self, role: str, host: str) -> str:
        """String "pid N" of the ``role`` (``ingest``, ``merge``) running on ``host``, rewritten every few seconds
        with a TTL: `mixer <role> --check` reads its age (``mixer.health``)."""
        return f"{self.prefix}:{self.tag}:health:{role}:{host}"

    def bluesky_profile(self, did: str) -> str:
        """JSON of the author behind a Bluesky did (``{}``: the AppView knows none), expiring after a TTL. One hash
        tag for all of them (the event's), so a batch is read with one MGET on Redis Cluster too."""
        return f"{self.prefix}:{self.tag}:bluesky:{did}"

    def shaped(self, profile: str) -> str:
        """A shaped profile's stream (e.g. ``wall``): its own entry ids, each post with ``ref`` = its feed id."""
        return f"{self.prefix}:{self.tag}:shaped:{profile}"

    @property
    def shaped_cursor(self) -> str:
        """Hash: ``feed`` -> last feed id the shaping stage has fully handled."""
        return f"{self.prefix}:{self.tag}:shaped:cursor"

    def shaped_pinned(self, profile: str) -> str:
        """Msgpack of a shaped profile's pinned post with its ids (nil once unpinned), written with the pin entry
        the shaping stage passed on; missing until it passed one (``pinned`` stands in)."""
        return f"{self.prefix}:{self.tag}:shaped:pinned:{profile}"

    def shaped_drops(self, profile: str) -> str:
        """Hash chat -> posts the profile dropped after their maximum wait ("+N more from #chat")."""
        return f"{self.prefix}:{self.tag}:shaped:drops:{profile}"

    @property
    def mod_actions(self) -> str:
        """Stream of moderator decisions (hide, pin, approve, ...) the merge stage applies to the feed."""
        return f"{self.prefix}:{self.tag}:mod:actions"

    @property
    def mod_queue(self) -> str:
        """Hash post key -> msgpack of a post held for a moderator's approval."""
        return f"{self.prefix}:{self.tag}:mod:queue"

    @property
    def mod_rules(self) -> str:
        """JSON of the moderation rules in force (set over HTTP; the config's rules until then)."""
        return f"{self.prefix}:{self.tag}:mod:rules"

    @property
    def pinned(self) -> str:
        """Msgpack of the pinned post, if any (sent in every hello)."""
        return f"{self.prefix}:{self.tag}:pinned"

    @property
    def mod_changes(self) -> str:
        """Stream of notices that the approval queue or the audit log changed (capped): consoles wait on it."""
        return f"{self.prefix}:{self.tag}:mod:changes"

    @property
    def mod_audit(self) -> str:
        """Stream of every moderator decision: who, what, when (capped)."""
        return f"{self.prefix}:{self.tag}:mod:audit"

    def pattern(self) -> str:
        """Glob matching every key under this prefix (for cleanup)."""
        return f"{self.prefix}:*"
