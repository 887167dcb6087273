"""The options of a load test, and the guards on where and how fast it connects.

``LoadOptions`` checks itself when made (ValueError with a message for the user). ``check_url`` refuses a
``--url`` on another machine unless allowed (no name is looked up: only ``localhost`` and loopback addresses count
as this machine); ``capped_ramp`` stretches a ramp to the connection-rate cap. All pure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from mixer.models import normalize_tag
from mixer.redact import redact
from mixer.tools.loadtest.client import POLL_MS

# New connections per second at most, by default: a ramp that would open them faster is stretched, so that a
# load balancer's connection-rate limits or SYN-flood protection do not take a rehearsal for an attack.
MAX_CONNECT_RATE = 500.0
MAX_PROCESSES = 64  # load-generating processes at most: a mistyped count must not start thousands of them


NO_MEASURING_CLIENT = (
    "--sample 0 leaves no client that parses what it gets, so the loss and latency of the driven posts cannot be "
    "measured: give --sample 1 or more (or --sse-clients)"
)


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """One load test: the clients, how they are spread, and what drives posts."""

    url: str = "ws://127.0.0.1:8080/ws"
    clients: int = 100  # N websocket clients over all processes
    ramp: float = 5.0  # seconds over which the N clients connect, evenly
    processes: int = 2  # worker processes, each with its own event loop
    sample: int = 5  # clients per process that parse every frame (latency, loss)
    poll_ms: float = POLL_MS  # milliseconds between the counting clients' read rounds
    duration: float = 10.0  # seconds of measurement after the ramp (driving runs this long)
    drive: str = "none"  # synth | replay | none
    replay_file: Path | None = None  # the recording for drive == "replay"
    rate: float = 100.0  # posts/s published when driving
    drain: float = 5.0  # most seconds to wait after driving for sampled clients to get every driven post
    server_pid: int | None = None  # the server's process, for CPU and memory figures
    allow_remote: bool = False  # a --url on another machine is refused unless this is set
    max_connect_rate: float = MAX_CONNECT_RATE  # new connections per second at most: a longer --ramp when needed
    sse_clients: int = 0  # clients on /events (same host and query as --url), besides the websocket ones

    @property
    def chats(self) -> frozenset[str] | None:
        """The chats filter of ``url`` (``url_chats``): None when it has none."""
        return url_chats(self.url)

    @property
    def measured(self) -> bool:
        """Whether any client parses what it gets (a sampled /ws client, an /events client): loss and latency
        come from those alone."""
        return (self.sample > 0 and self.clients > 0) or self.sse_clients > 0

    def __post_init__(self) -> None:
        check_url(self.url, self.allow_remote)
        fmt = dict(parse_qsl(urlsplit(self.url).query, keep_blank_values=True)[::-1]).get("format") or "json"
        if fmt != "json":  # (the server reads the first format=, as this does)
            raise ValueError(
                f"--url asks for format={fmt}: the load test's clients read JSON frames only (the counting ones find "
                "posts in JSON text, the sampled ones parse it; msgpack frames would all count as nothing): leave "
                "format out of --url"
            )
        for flag, value, least in (
            ("--clients", self.clients, 0),
            ("--sse-clients", self.sse_clients, 0),
            ("--sample", self.sample, 0),
            ("--processes", self.processes, 1),
        ):
            if value < least:
                raise ValueError(f"{flag} must be at least {least}, got {value}")
        if self.processes > MAX_PROCESSES:
            raise ValueError(f"--processes must be 1 to {MAX_PROCESSES}, got {self.processes}")
        if self.clients + self.sse_clients < 1:
            raise ValueError("no clients: give --clients (or --sse-clients) of at least 1")
        if self.drive != "none" and not self.measured:
            raise ValueError(NO_MEASURING_CLIENT)
        if urlsplit(self.url).scheme == "wss" and self.clients > self.processes * self.sample:
            raise ValueError(
                "the counting clients speak plain ws:// only: for a wss:// (TLS) URL, make every client a sampled "
                "one (--sample at least --clients / --processes) or give a replica's plain http:// address"
            )
        if not (math.isfinite(self.max_connect_rate) and self.max_connect_rate > 0):
            raise ValueError(
                f"--max-connect-rate must be a positive number of connections/s, got {self.max_connect_rate}"
            )
        if not (math.isfinite(self.poll_ms) and 1 <= self.poll_ms <= 1000):
            raise ValueError(f"--poll-ms must be 1 to 1000 ms, got {self.poll_ms}")
        for name in ("ramp", "duration", "drain"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"--{name} must be 0 or more seconds, got {value}")
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"--rate must be a positive number of posts/s, got {self.rate}")
        if self.drive not in ("synth", "replay", "none"):
            raise ValueError(f"--drive is synth, replay FILE or none, not {self.drive!r}")
        if (self.drive == "replay") != (self.replay_file is not None):
            raise ValueError("--drive replay takes one FILE (and only replay does)")


def url_chats(url: str) -> frozenset[str] | None:
    """The chats a ``?chats=`` in ``url`` asks for, read as the server reads it (its first ``chats=``, split on
    commas, each tag normalised); None when there is no filter: every chat."""
    raw = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True)[::-1]).get("chats") or ""
    return frozenset(normalize_tag(t) for t in raw.split(",") if t.strip()) or None


def passes(chats: frozenset[str] | None, post_chats: Iterable[str]) -> bool:
    """Whether a post in ``post_chats`` reaches a client filtering on ``chats``: any chat in common, as the server's
    ``mixer.fanout.messages.wants`` (no filter: every post)."""
    return chats is None or not chats.isdisjoint(post_chats)


def check_filter(chats: frozenset[str] | None, driven: Iterable[str]) -> None:
    """ValueError when a ``chats`` filter lets no post of the ``driven`` chats through: every client would expect
    nothing, and the run would measure no loss and no latency."""
    if chats is not None and not passes(chats, driven):
        where = ", ".join(sorted(set(driven))) or "no chat"
        raise ValueError(
            f"--url asks for chats={','.join(sorted(chats))} but the driven posts are in {where}: no driven post "
            "would reach a client; filter on a driven chat or leave chats= out of --url"
        )


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine by itself: ``localhost`` or a loopback address (no DNS lookup)."""
    try:
        return host == "localhost" or ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, allow_remote: bool = False) -> str:
    """``url`` when it is a ws:// URL with a host, on this machine unless ``allow_remote``; ValueError otherwise.

    The guard is against accidents: a load test aimed at a server others depend on must be asked for by name."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:  # 'Invalid IPv6 URL' and such: say which flag
        raise ValueError(f"--url {redact(url)!r} cannot be read: {exc}") from None
    if parts.scheme not in ("ws", "wss") or not host:
        raise ValueError(f"--url must be a ws:// URL such as ws://127.0.0.1:8080/ws, got {redact(url)!r}")
    if not allow_remote and not is_loopback(host):
        raise ValueError(f"refusing {host!r}: it is not this machine; add --allow-remote to load-test another host")
    return url


def capped_ramp(clients: int, ramp: float, max_rate: float) -> float:
    """The ramp in seconds that opens ``clients`` at no more than ``max_rate`` connections/s: ``ramp`` or longer."""
    return max(ramp, clients / max_rate)
