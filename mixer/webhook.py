"""The webhook contract: what the fan-out's ``POST /api/posts`` route hands to the ingest code behind it.

The route (``mixer.fanout.app``) owns HTTP: the bearer token, reading the JSON body, the
status code. What the records are and where they go is ingest's (``mixer.ingest.webhook``);
the composition root (``mixer.runner``) gives the app a ``Webhook``, so neither stage
imports the other.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Received:
    """What became of one body's records."""

    published: int  # posts, edits and retractions written to the chat streams
    events: int  # posts, edits and retractions parsed from the records
    errors: tuple[dict[str, Any], ...] = ()  # {"index", "reason"} of each record that could not be used


class Webhook(Protocol):
    counters: Counter[str]  # received, published, malformed (a body that is not JSON too), skipped:<reason>

    async def receive(self, records: list[Any], origin: str) -> Received:
        """Parse and publish ``records`` (from ``origin``, for the log): good ones are published even when others
        are bad, which are counted, logged and listed in ``Received.errors``. Raises only for a Redis failure."""
        ...
