"""The webhook's ingest side: records posted to ``POST /api/posts``, parsed and published to the chat streams.

A record is anything a recording may hold (``mixer.ingest.recorded.parse_record``): a Post,
a raw X, Mastodon or Bluesky payload. ``PublishingWebhook`` implements ``mixer.webhook.Webhook``;
the HTTP route that calls it lives in the fan-out app, and ``mixer.runner`` connects the two.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

from mixer.ingest.hashtags import ChatMatcher
from mixer.ingest.publish import Publisher, forget_oldest
from mixer.ingest.recorded import parse_record
from mixer.ingest.skips import counted
from mixer.models import Edit, Event, Ignored, Post, trimmed
from mixer.redact import escaped
from mixer.webhook import Received

log = logging.getLogger(__name__)


MASTODON_IDS_MAX = 10_000  # Mastodon statuses received (id -> uri) remembered to key their later deletes
SECONDS_BELOW_MS = 100_000_000_000  # a `created` under this (3 March 1973 in ms) was sent in seconds: 1.7e9, not 1.7e12
AHEAD_MS = 86_400_000  # a post `created` more than a day after it arrived is a wrong clock or unit, not a post


def implausible_created(created: int, now_ms: int) -> str | None:
    """Why a sender's ``created`` cannot be a post's time in ms (seconds, microseconds, a clock years off), or None.
    Recorded nights of any year pass; only times no post can have are refused, so one bad sender cannot show a
    post from 1970, nor stretch a report's range to the year 5138."""
    if created < SECONDS_BELOW_MS:
        return f"created {created} is before 1973: send ms since the epoch, not seconds"
    if created > now_ms + AHEAD_MS:
        return f"created {created} is more than a day after it was received: send ms since the epoch"
    return None


class PublishingWebhook:
    """Parses each record on its own and publishes every event of the body in one batch."""

    def __init__(self, publisher: Publisher, matcher: ChatMatcher, clock: Callable[[], float] = time.time) -> None:
        self._publisher = publisher
        self._matcher = matcher
        self._clock = clock
        self.counters: Counter[str] = Counter()
        self._mastodon_uris: OrderedDict[str, str] = OrderedDict()  # a Mastodon delete names only the local id

    async def receive(self, records: list[Any], origin: str) -> Received:
        """Good records are published even when others in the same body are bad (counted, logged, listed), a post
        in no chat followed now among the bad: listed, counted ``skipped:no_chat``, one with an implausible ``created``
        (``implausible_created``) too, counted ``malformed``. Every post's ``at`` is now,
        when it was ingested (the contract's), whatever the record says."""
        now_ms = int(self._clock() * 1000)
        events: list[Event] = []
        errors: list[dict[str, Any]] = []
        before = trimmed.copy()
        for index, record in enumerate(records):
            try:
                parsed = parse_record(record, self._matcher, now_ms, mastodon_uris=self._mastodon_uris)
            except Ignored as skip:
                self.counters[f"skipped:{counted(skip.reason, f'webhook from {origin}')}"] += 1
                continue
            except ValueError as exc:
                reason = escaped(str(exc))  # it may quote the record (a key, an id): one printable line, answer and log
                self.counters["malformed"] += 1
                errors.append({"index": index, "reason": reason})
                log.warning("webhook from %s: record %d skipped: %s (%s)", origin, index, reason, excerpt(record))
                continue
            for event in parsed:
                post = event.post if isinstance(event, Edit) else event
                if isinstance(post, Post) and (why := implausible_created(post.created, now_ms)):
                    self.counters["malformed"] += 1
                    errors.append({"index": index, "reason": why})
                    log.warning("webhook from %s: record %d skipped: %s (%s)", origin, index, why, excerpt(record))
                elif isinstance(post, Post) and self._publisher.route(post) is None:
                    reason = f"in no chat followed now ({', '.join(f'#{c}' for c in post.chats) or 'no chat'})"
                    self.counters["skipped:no_chat"] += 1
                    errors.append({"index": index, "reason": reason})
                    log.warning("webhook from %s: record %d skipped: %s", origin, index, reason)
                elif isinstance(event, Edit):
                    events.append(Edit(event.post.replace(at=now_ms)))
                else:
                    events.append(event.replace(at=now_ms) if isinstance(event, Post) else event)
        forget_oldest(self._mastodon_uris, MASTODON_IDS_MAX)
        for reason, count in (trimmed - before).items():  # parsing is synchronous: these cuts are this body's
            self.counters[f"trimmed:{reason}"] += count
            log.warning("webhook from %s: %d post(s) over a size limit (%s)", origin, count, reason)
        self.counters["received"] += len(records)
        # A request must answer now: with Redis away it fails (the caller says so) instead of waiting it out.
        if events:  # routed above: every one is written, or publish raises
            await self._publisher.publish(events, patient=False)
        self.counters["published"] += len(events)
        return Received(len(events), len(events), tuple(errors))


def excerpt(record: Any, limit: int = 120) -> str:
    """The start of a record as JSON, for a log line that shows what was sent: one line, UTF-8 encodable (JSON
    escapes C0 controls; a lone surrogate, C1 controls and U+2028/U+2029 are ``escaped``)."""
    text = escaped(json.dumps(record, ensure_ascii=False, default=str))
    return text if len(text) <= limit else text[:limit] + "..."
