"""Posts per chat, for the screens' legends: the total seen and the rate over the last minute."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable


class ChatRates:
    """Posts per chat: the total seen and how many in the last minute (clock passed in)."""

    def __init__(self, span: float = 60.0) -> None:
        self.span = span
        self.totals: Counter[str] = Counter()
        self._recent: deque[tuple[float, tuple[str, ...]]] = deque()

    def add(self, chats: Iterable[str], now: float) -> None:
        chats = tuple(chats)
        self.totals.update(chats)
        self._recent.append((now, chats))

    def per_minute(self, now: float) -> Counter[str]:
        """Posts per chat over the last ``span`` seconds, scaled to a minute."""
        while self._recent and self._recent[0][0] < now - self.span:
            self._recent.popleft()
        counts: Counter[str] = Counter()
        for _, chats in self._recent:
            counts.update(chats)
        scale = 60.0 / self.span
        return Counter({chat: round(n * scale) for chat, n in counts.items()})
