"""Small builders shared by tests."""

from __future__ import annotations

from mixer.models import Author, Post


def make_post(key: str, chats: tuple[str, ...] = ("smbiz",), created: int = 1_700_000_000_000, text: str = "") -> Post:
    return Post(
        key=key,
        source="replay",
        chats=chats,
        author=Author(handle="alice", name="Alice"),
        text=text or f"post {key}",
        url=f"https://example.test/{key}",
        created=created,
        at=created,
    )
