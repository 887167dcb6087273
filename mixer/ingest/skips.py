"""The fixed set of reasons a record is skipped for, as counted (``skipped:<reason>``) and shown by /metrics.

Parsers name why a well-formed record is no post (``Ignored.reason``), and some names come from the
payload (a Mastodon event's name, a Bluesky collection, an X compliance event): counted as they are,
any payload could add a label to /metrics, without bound. So every counting site passes the reason
through ``counted``: a reason in ``REASONS`` stays, any other becomes ``other`` and is logged with
its origin (at INFO the first time it is seen, within a bounded memory; at DEBUG after that).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

_X_V1 = ("limit", "warning", "scrub_geo", "status_withheld", "user_withheld", "disconnect", "event", "friends")
# https://docs.x.com/x-api/compliance/streams/introduction: the compliance events besides delete (a retraction)
_X_COMPLIANCE = (
    "tweet_delete tweet_undelete tweet_withheld tweet_drop tweet_undrop tweet_edit user_delete user_undelete "
    "user_suspend user_unsuspend user_withheld user_protect user_unprotect user_profile_modification scrub_geo"
).split()
# https://docs.joinmastodon.org/methods/streaming/#events: the events besides update, status.update and delete
_MASTODON_EVENTS = (
    "notification conversation filters_changed announcement announcement_reaction announcement_delete "
    "encrypted_message notifications_merged"
).split()
# app.bsky.* / chat.bsky.* record types that are not posts (the last part of the collection NSID)
_BLUESKY_COLLECTIONS = (
    "like repost follow block list listitem listblock profile threadgate postgate generator starterpack service "
    "verification declaration other"
).split()

REASONS = frozenset(
    [f"{notice}_notice" for notice in _X_V1]
    + ["stream_error", "unknown_message", "compliance"]
    + [f"compliance_{name}" for name in _X_COMPLIANCE]
    + ["edit_of_boost", "delete_unknown_instance", "delete_of_unseen_status"]
    + [f"event_{name}" for name in _MASTODON_EVENTS]
    + ["visibility_private", "visibility_direct", "visibility_limited"]
    + ["kind_identity", "kind_account", "kind_sync", "kind_other", "operation_other"]
    + [f"collection_{name}" for name in _BLUESKY_COLLECTIONS]
    # counted by the followers and the replay themselves
    + ["duplicate", "replayed", "no_chat", "delete_unpublished", "malformed"]
    + ["other"]
)
LOGGED_MAX = 200  # unlisted reasons logged at INFO once each; past this many, only at DEBUG

_logged: set[str] = set()


def counted(reason: str, origin: str) -> str:
    """``reason`` when it is in ``REASONS``, else ``other`` (logged with ``origin``: a file, a stream URL)."""
    if reason in REASONS:
        return reason
    shown = reason[:80]
    if shown not in _logged and len(_logged) < LOGGED_MAX:
        _logged.add(shown)
        log.info("%s: skipped a record for an unlisted reason %r, counted as 'other'", origin, shown)
    else:
        log.debug("%s: skipped a record for an unlisted reason %r, counted as 'other'", origin, shown)
    return "other"
