"""What the Bluesky AppView is asked for and what it answers: the profile batcher, its answers, the cached form.

Pure (the clock is passed in): ``ProfileBatcher`` decides which dids to ask
``app.bsky.actor.getProfiles`` for and when, at most ``MAX_ACTORS`` (25, the call's limit) at
a time, oldest first, as soon as 25 wait or the oldest has waited ``linger`` seconds, and
nothing before a failure's backoff is over; ``parse_profiles`` reads an answer into Authors;
``cache_record`` / ``read_cached`` are a profile's form in the Redis cache; ``with_author``
puts a resolved author on a post. The I/O around them (the cache, the calls, the Edits) is
``bluesky_profiles``; Jetstream parsing is ``bluesky``.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from mixer.models import Author, Post

MAX_ACTORS = 25  # getProfiles refuses more actors per call
_HANDLE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$")
_INVALID_HANDLE = "handle.invalid"  # the AppView's word for a handle that no longer verifies
_AVATAR = re.compile(r"^https?://\S+$")


class ProfileBatcher:
    """Which dids to ask for next and when: up to ``MAX_ACTORS`` a call, oldest first. Pure: ``now`` is passed in."""

    def __init__(self, linger: float = 0.25) -> None:
        self.linger = linger  # seconds the oldest wanted did may wait for others to fill its batch
        self._wanted: dict[str, float] = {}  # did -> when first wanted; insertion order is age order
        self._asking: set[str] = set()  # in a call now
        self._not_before = 0.0  # after a failure: nothing is asked before this

    def __len__(self) -> int:
        return len(self._wanted)

    def want(self, did: str, now: float) -> None:
        """Ask for ``did`` in a coming batch: once however often it is wanted, and not while it is being asked."""
        if did not in self._asking:
            self._wanted.setdefault(did, now)

    def due(self, now: float) -> list[str]:
        """The next batch (at most 25 dids, oldest first) if one is due at ``now``, else []; they count as asked."""
        wait = self.next_due(now)
        if wait is None or wait > 0:
            return []
        batch = list(itertools.islice(self._wanted, MAX_ACTORS))
        for did in batch:
            del self._wanted[did]
        self._asking.update(batch)
        return batch

    def next_due(self, now: float) -> float | None:
        """Seconds from ``now`` until ``due`` gives a batch (0: now); None when nothing is wanted."""
        if not self._wanted:
            return None
        at = self._not_before
        if len(self._wanted) < MAX_ACTORS:
            at = max(at, next(iter(self._wanted.values())) + self.linger)
        return max(0.0, at - now)

    def done(self, dids: Iterable[str]) -> None:
        """A batch was answered (or given up): its dids are no longer being asked."""
        self._asking.difference_update(dids)

    def failed(self, dids: Iterable[str], now: float, delay: float) -> None:
        """A batch failed: its dids go back first in line, and nothing is asked before ``now + delay``."""
        again = {did: now - self.linger for did in dids}
        self._asking.difference_update(again)
        self._wanted = again | {did: t for did, t in self._wanted.items() if did not in again}
        self._not_before = now + delay


def parse_profiles(data: Any) -> dict[str, Author]:
    """The authors of a getProfiles answer by did; raises ValueError if it is not one (a bad entry is left out)."""
    profiles = data.get("profiles") if isinstance(data, dict) else None
    if not isinstance(profiles, list):
        raise ValueError("a getProfiles answer is an object with a 'profiles' list")
    found: dict[str, Author] = {}
    for profile in profiles:
        did = profile.get("did") if isinstance(profile, dict) else None
        if not isinstance(did, str) or not did.startswith("did:"):
            continue
        handle = profile.get("handle")
        name = profile.get("displayName")
        avatar = profile.get("avatar")
        found[did] = Author(
            handle=handle if isinstance(handle, str) and handle != _INVALID_HANDLE and _HANDLE.match(handle) else did,
            name=" ".join(name.split()) if isinstance(name, str) else "",
            avatar=avatar if isinstance(avatar, str) and _AVATAR.match(avatar) else None,
        )
    return found


def with_author(post: Post, author: Author) -> Post | None:
    """``post`` by ``author``, validated (and capped) as any post is; None if the author cannot be shown."""
    try:
        return Post.from_dict({**post.to_dict(), "author": author.to_dict()})
    except ValueError:
        return None


def retry_after_seconds(headers: Mapping[str, str] | None) -> float:
    """The server's ``Retry-After`` in seconds (0 when absent or unreadable), capped at 15 minutes."""
    value = (headers or {}).get("Retry-After", "")
    try:
        return min(max(float(value), 0.0), 900.0)
    except ValueError:
        return 0.0


def cache_record(author: Author | None) -> str:
    """How a profile is cached: its author as JSON, or ``{}`` for a did the AppView did not know."""
    return json.dumps(author.to_dict() if author is not None else {})


def read_cached(raw: Any) -> Author | None:
    """A cached profile: its Author, None for a did the AppView did not know; ValueError when absent or unreadable."""
    if raw is None:
        raise ValueError("not cached")
    data = json.loads(raw)
    if data == {}:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("handle"), str) or not data["handle"]:
        raise ValueError("not a cached profile")
    name, avatar = data.get("name"), data.get("avatar")
    return Author(data["handle"], name if isinstance(name, str) else "", avatar if isinstance(avatar, str) else None)
