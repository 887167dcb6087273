"""Sources: per platform, its payload parser in a module named after it, its live follower beside it.

Bluesky: ``bluesky`` (parser), ``bluesky_follow`` (with ``bluesky_profiles`` resolving
authors' dids through the AppView, its pure batcher and answer reader in ``bluesky_appview``).
Mastodon: ``mastodon`` (parser, with
``mastodon_html`` for status HTML), ``mastodon_follow`` (with ``mastodon_rest`` and
``mastodon_stream`` for its REST and streaming transport). X: ``x_v1`` and ``x_v2`` (parsers,
on the fields they share in ``x``), ``x_stream``.

Parsers are pure functions from one platform payload to a list of ``Event``s (Post,
Edit, Retraction); they raise ``ValueError`` for a malformed payload and ``Ignored`` for
a well-formed one that is not a post. Followers implement ``Source``: ``run()`` follows
until cancelled, resumes from its cursor in Redis, backs off with a cap on every
failure, logs with context, and keeps counters (received, published, skipped by
reason, malformed, reconnects).
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol


class Source(Protocol):
    name: str  # e.g. "mastodon:mastodon.social", "bluesky", "x": also its cursor name
    counters: Counter[str]

    async def run(self) -> None:
        """Follow until cancelled; never returns otherwise, never raises for network or payload trouble."""
        ...
