"""Moderator actions as the merge stage applies them: pure, like dedupe.

The web app records a moderator's decision in the actions stream; the merge stage, the
feed's only writer, reads it with the chat streams and turns it into feed writes here:

- ``hide``: a ``retract`` of the post's card, and the post is marked hidden (history
  leaves it out); ``unhide``: the post comes back as a new card at the top;
- ``pin`` / ``unpin``: a ``pin`` entry with the post (or none), which every screen shows;
- ``approve``: a post held for approval is released as a new card (``reject`` drops it
  for good); the held post comes with the action, read from the approval queue.

An action naming a key the index does not know changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mixer.merge.dedupe import Book, Changes, Deduper, FeedWrite
from mixer.models import Post, Retraction

ACTIONS = ("hide", "unhide", "pin", "unpin", "approve", "reject")


def apply_action(
    action: dict[str, Any],
    book: Book,
    changes: Changes,
    deduper: Deduper,
    new_id: Callable[[], str],
    now_ms: int,
) -> list[FeedWrite]:
    """Feed writes for one moderator action; ``book`` and ``changes`` are updated to match."""
    name, key = action.get("action"), action.get("key")
    if not isinstance(key, str):
        return []
    stored = book.posts.get(key)
    if name == "approve":
        held = action.get("post")
        return deduper.apply(Post.from_dict(held), book, changes, new_id, now_ms) if held else []
    if name == "reject":
        return deduper.apply(Retraction(key, "moderator"), book, changes, new_id, now_ms)
    if name == "unpin":
        changes.pinned = None
        return [("n", new_id(), {"post": None})]
    if stored is None or stored.get("stub") or "id" not in stored:
        return []
    if name == "hide" and not stored.get("hidden"):
        _store(key, {**stored, "hidden": True}, book, changes, now_ms)
        return [("r", new_id(), {"ids": [stored["id"]], "keys": [key]})]
    if name == "unhide" and stored.get("hidden"):
        again = {k: v for k, v in stored.items() if k != "hidden"} | {"id": new_id()}
        _store(key, again, book, changes, now_ms)
        return [("p", again["id"], again)]
    if name == "pin" and not stored.get("hidden"):
        changes.pinned = stored
        return [("n", new_id(), {"post": stored})]
    return []


def _store(key: str, stored: dict[str, Any], book: Book, changes: Changes, now_ms: int) -> None:
    book.posts[key] = stored
    changes.posts[key] = stored
    changes.seen[key] = now_ms
