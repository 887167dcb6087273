"""Posts per chat, for the screens' legends: the total seen and the rate over the last minute.

Memory is bounded by the posts of the last ``span`` seconds, whether or not anyone asks for the rate: older
ones are let go as new ones come (a hub whose rates nobody reads, such as a shaped profile's, kept every post
of the night before).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable


class ChatRates:
    """Posts per chat: the total seen and how many in the last minute (clock passed in)."""

    def __init__(self, span: float = 60.0) -> None:
        self.span = span
        self.totals: Counter[str] = Counter()
        self._recent: deque[tuple[float, tuple[str, ...]]] = deque()

    def __len__(self) -> int:
        """Posts held for the rate: those of the last ``span`` seconds (as of the latest ``add`` or ``per_minute``)."""
        return len(self._recent)

    def add(self, chats: Iterable[str], now: float) -> None:
        chats = tuple(chats)
        self.totals.update(chats)
        self._recent.append((now, chats))
        self._forget(now)

    def per_minute(self, now: float) -> Counter[str]:
        """Posts per chat over the last ``span`` seconds, scaled to a minute."""
        self._forget(now)
        counts: Counter[str] = Counter()
        for _, chats in self._recent:
            counts.update(chats)
        scale = 60.0 / self.span
        return Counter({chat: round(n * scale) for chat, n in counts.items()})

    def _forget(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - self.span:
            self._recent.popleft()
