"""Settings: one frozen object, read once at the edge from mixer.toml and MIXER_* env.

Nothing below the CLI reads the environment or the config file; everything gets a
``Settings``. Loading reports a bad value as ``ConfigError`` naming file, line, key
and reason. The loading itself (TOML, ``MIXER_*`` overrides, rendering back to TOML)
lives in ``mixer.config``; this module holds only the data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from mixer.models import normalize_tag

PACKAGE_DIR = Path(__file__).resolve().parent
DEMO_RECORDING = PACKAGE_DIR / "data" / "pstweetchat.jsonl"


class ConfigError(Exception):
    """A config value that cannot be used. ``str()`` is ``file:line: key: reason``, omitting what is unknown.

    ``file`` is the config path as given, or ``environment`` for a ``MIXER_*`` variable; ``key`` is
    dotted (``server.port``, ``chats[2].colour``) or the variable's name; ``line`` is 1-based.
    """

    def __init__(self, file: str, line: int | None, key: str, reason: str) -> None:
        super().__init__(file, line, key, reason)
        self.file = file
        self.line = line
        self.key = key
        self.reason = reason

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.key}: {self.reason}" if self.key else f"{where}: {self.reason}"


DEFAULT_WEIGHT = 1.0  # share weight of a chat the profile does not name


@dataclass(frozen=True, slots=True)
class Profile:
    """A named shape; raises ValueError naming the bad field. Unshaped when ``rate`` is 0 or infinite."""

    name: str
    rate: float = 0.5  # posts per second on average; 0 or inf: unshaped (everything, in offer order)
    burst: int = 3  # posts that may leave back to back after a quiet spell; >= 1 when shaped
    max_wait: float = 30.0  # seconds a post may wait (inf: no limit); older ones are dropped and counted
    weights: Mapping[str, float] = field(default_factory=dict, hash=False)  # chat -> share weight (default 1.0)
    max_queue: int = 1000  # hard cap of posts waiting in one chat's queue; beyond it its oldest is dropped

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("a profile needs a non-empty name")
        where = f"profile {self.name!r}"
        if not _is_number(self.rate) or not self.rate >= 0:
            raise ValueError(f"{where}: 'rate' must be posts per second, >= 0 (0 or inf: unshaped), got {self.rate!r}")
        if not isinstance(self.burst, int) or isinstance(self.burst, bool) or self.burst < (1 if self.shaped else 0):
            raise ValueError(f"{where}: 'burst' must be a whole number of posts >= 1, got {self.burst!r}")
        if not _is_number(self.max_wait) or not self.max_wait > 0:
            raise ValueError(f"{where}: 'max_wait' must be seconds > 0 (inf: no limit), got {self.max_wait!r}")
        if not isinstance(self.max_queue, int) or isinstance(self.max_queue, bool) or self.max_queue < 1:
            raise ValueError(f"{where}: 'max_queue' must be a whole number >= 1, got {self.max_queue!r}")
        weights: dict[str, float] = {}
        for chat, weight in dict(self.weights).items():
            if not _is_number(weight) or not 0 < weight < math.inf:
                raise ValueError(f"{where}: weight of chat {chat!r} must be a number > 0, got {weight!r}")
            weights[normalize_tag(chat)] = float(weight)
        object.__setattr__(self, "weights", MappingProxyType(weights))

    @property
    def shaped(self) -> bool:
        """False for a profile that passes everything through at once (rate 0 or inf)."""
        return 0 < self.rate < math.inf

    def weight(self, chat: str) -> float:
        """The share weight of ``chat`` (``DEFAULT_WEIGHT`` unless the profile names it)."""
        return self.weights.get(chat, DEFAULT_WEIGHT)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


WALL = Profile("wall", rate=0.5, burst=3, max_wait=30.0)  # a projector: one post every 2 s, bursts of 3
FULL = Profile("full", rate=0.0)  # everything, unshaped
DEFAULT_PROFILES: tuple[Profile, ...] = (WALL, FULL)


LIVE_SOURCES = ("mastodon", "bluesky", "x")  # the followers a chat's ``sources`` may name


@dataclass(frozen=True, slots=True)
class ChatSettings:
    tag: str  # lower case, without '#'
    title: str  # shown on screens
    colour: str  # CSS hex colour '#rrggbb' for the chat's badge
    schedule: str = ""  # its weekly slot, e.g. "Mon 20:00-22:00 America/New_York" (docs/directory.md); "": none
    topic: str = ""  # what the chat is about, for the directory
    hosts: tuple[str, ...] = ()  # who runs it
    follow: str = ""  # "always", "scheduled" or "never" for this chat; "": the event's [event] follow
    sources: tuple[str, ...] | None = None  # the live followers that follow it (LIVE_SOURCES); None: every one


@dataclass(frozen=True, slots=True)
class Settings:
    # [event]
    event_name: str = "#chatmixer night"  # shown at the top of every screen
    event_hashtag: str = "chatmixer"  # the event's own hashtag, without '#'
    event_link: str = ""  # http(s) link people open to join, shown on the wall as a QR code; "": no QR code
    follow: str = "always"  # "always", "scheduled" (a chat only during its slot +- follow_margin), or "never"
    follow_margin_minutes: float = 15.0  # with follow = "scheduled": how early and how late a slot is followed
    chats: tuple[ChatSettings, ...] = field(default_factory=tuple)  # [[chats]] tables, in order
    # [redis]
    # (secrets and the Redis URL, which may hold a password, are left out of repr: a logged Settings shows none)
    redis_url: str = field(default="", repr=False)  # empty: start an embedded redis-server on a private socket
    key_prefix: str = "mixer"  # every Redis key starts with this, so events or tests can share a Redis
    chat_maxlen: int = 10_000  # approximate cap of each chat stream
    feed_maxlen: int = 100_000  # approximate cap of the merged feed (how far back `since` can resume)
    redis_wait_seconds: float = 10.0  # how long a command waits at start for a Redis that does not answer yet
    # [server]
    host: str = "127.0.0.1"  # where the fan-out server listens
    port: int = 8080
    backlog_bytes: int = 1 << 20  # per-client unsent bytes above which the client is skipped
    cutoff_seconds: float = 10.0  # a client whose backlog stays full this long is disconnected
    heartbeat_seconds: float = 20.0  # websocket ping interval; no pong within it closes the socket
    stats_seconds: float = 5.0  # how often every screen gets a ``stats`` frame (posts per minute per chat)
    origins: tuple[str, ...] = ()  # browser Origins allowed on /ws and /events (e.g. "https://blog.example"); (): any
    max_connections: int = 20_000  # open /ws + /events clients per process; more get 503
    max_per_ip: int = 1_000  # open clients from one address; more get 429
    # [[profiles]]: shaped streams clients can pick with profile=; "full" (everything) always exists
    profiles: tuple[Profile, ...] = (WALL,)
    # [merge]
    window_ms: int = 500  # reorder window: how long a post waits for its twins from other chats
    seen_max: int = 200_000  # post keys remembered for dedupe (oldest forgotten first)
    # [mastodon]
    mastodon_instances: tuple[str, ...] = ()  # instance URLs on which every chat's hashtag is followed
    mastodon_token: str = field(default="", repr=False)  # access token: streaming API; empty: poll tag timelines
    mastodon_poll_seconds: float = 10.0  # polling interval without a token
    # [bluesky]
    bluesky_enabled: bool = False  # follow every chat's hashtag on Bluesky through Jetstream
    bluesky_endpoint: str = "wss://jetstream2.us-east.bsky.network/subscribe"  # the Jetstream instance
    bluesky_profiles: bool = True  # resolve authors' dids to handle, display name and avatar (cards update later)
    bluesky_appview: str = "https://public.api.bsky.app"  # the AppView asked (app.bsky.actor.getProfiles)
    bluesky_profile_ttl_seconds: float = 21_600.0  # how long a resolved profile is cached in Redis
    # [x]
    x_bearer_token: str = field(default="", repr=False)  # X API v2 bearer token (filtered stream); empty: no X
    x_api: str = "https://api.twitter.com"  # the X API base URL
    x_backfill_minutes: int = 0  # 1-5: X replays that many minutes on each (re)connect (Pro/Enterprise); 0: off
    # [webhook]
    webhook_token: str = field(default="", repr=False)  # bearer token for POST /api/posts; empty: webhook off
    # [moderation]
    moderation_token: str = field(default="", repr=False)  # bearer token for /api/mod/... and /mod; empty: off
    moderation_words: tuple[str, ...] = ()  # blocked everywhere (whole words or phrases)
    moderation_accounts: tuple[str, ...] = ()  # blocked everywhere: "handle", "@handle" or "source:handle"
    moderation_profanity: bool = False  # also block a well-kept English profanity list
    moderation_approval: bool = False  # hold every post until a moderator approves it
    # [demo]
    demo_file: str = str(DEMO_RECORDING)  # recording `mixer run` replays when not told otherwise
    demo_speed: float = 20.0  # replay speed of the demo (x real time)
    demo_max_gap: float = 5.0  # seconds: longer silences in the recording are cut to this
    # where these settings came from (for `mixer config` and error messages)
    source: str = "defaults"

    def chat(self, tag: str) -> ChatSettings | None:
        for chat in self.chats:
            if chat.tag == tag:
                return chat
        return None

    @property
    def profile_names(self) -> tuple[str, ...]:
        """Every profile a client may ask for: ``full`` and the shaped ones."""
        return ("full", *(p.name for p in self.profiles if p.name != "full"))

    @property
    def chat_tags(self) -> tuple[str, ...]:
        return tuple(c.tag for c in self.chats)

    @property
    def live_sources(self) -> tuple[str, ...]:
        """The live followers configured (LIVE_SOURCES order): [mastodon] instances, [bluesky] enabled, an [x] token.
        One that no chat's ``sources`` name is configured, yet follows nothing (``tags_for`` is empty)."""
        configured = (bool(self.mastodon_instances), self.bluesky_enabled, bool(self.x_bearer_token))
        return tuple(source for source, on in zip(LIVE_SOURCES, configured, strict=True) if on)

    def tags_for(self, source: str) -> tuple[str, ...]:
        """The chats the live follower ``source`` (one of LIVE_SOURCES) follows: those whose ``sources`` name it."""
        return tuple(c.tag for c in self.chats if c.sources is None or source in c.sources)
