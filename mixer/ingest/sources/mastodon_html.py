"""Mastodon HTML to plain text: the one place a status's ``content`` markup becomes the text a reader sees.

``html_to_text`` keeps what Mastodon's web client shows: paragraphs split by a blank line,
``<br>`` by a newline, the ``invisible`` spans of shortened links dropped and their
``ellipsis`` drawn (and, when asked, a quote post's "RE:" line dropped), no markup left.
Reading the rest of a status lives in ``mastodon``.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_BLOCKS = frozenset({"p", "div", "blockquote", "pre", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6"})
_HIDDEN = frozenset({"script", "style", "template"})
_VOID = frozenset({"br", "img", "hr", "input", "meta", "link", "wbr"})
_SPACES = re.compile(r"[ \t\r\n\f]+")


class _TextExtractor(HTMLParser):
    """Collects the text a reader sees: hidden spans dropped, blocks and ``<br>`` as line breaks."""

    def __init__(self, hide_quote_line: bool = False) -> None:
        super().__init__(convert_charrefs=True)
        self._hidden_classes = {"invisible", "quote-inline"} if hide_quote_line else {"invisible"}
        self.parts: list[str] = []
        self._stack: list[tuple[str, bool, bool]] = []  # (tag, hides its text, ellipsis span)
        self._hidden = 0
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.parts.append("\n")
            return
        if tag in _VOID:
            return
        classes = (dict(attrs).get("class") or "").split()
        hides = tag in _HIDDEN or not self._hidden_classes.isdisjoint(classes)
        self._stack.append((tag, hides, tag == "span" and "ellipsis" in classes))
        self._hidden += hides
        self._pre += tag == "pre"
        if tag in _BLOCKS:
            self.parts.append("\n\n")
        elif tag == "li":
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        # Close up to the matching open tag; a stray end tag is ignored, as a browser would.
        if not any(open_tag == tag for open_tag, _, _ in self._stack):
            return
        while self._stack:
            open_tag, hides, ellipsis = self._stack.pop()
            self._hidden -= hides
            self._pre -= open_tag == "pre"
            if ellipsis and not self._hidden:
                self.parts.append("\u2026")  # Mastodon's CSS draws this after a shortened link
            if open_tag in _BLOCKS:
                self.parts.append("\n\n")
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        self.parts.append(data if self._pre else _SPACES.sub(" ", data))


def html_to_text(html: str, *, hide_quote_line: bool = False) -> str:
    """Plain text of Mastodon HTML: paragraphs split by a blank line, ``<br>`` by a newline, no markup left.

    ``hide_quote_line`` drops a quote post's ``quote-inline`` "RE: <link>" paragraph, as Mastodon's web UI
    does when it shows the quote itself. Raises ValueError for markup ``html.parser`` cannot read (Mastodon
    sanitises ``content``, so only a broken payload has it)."""
    parser = _TextExtractor(hide_quote_line)
    try:
        parser.feed(html)
        parser.close()
    except AssertionError as exc:  # html.parser asserts on some broken declarations ("<![-->")
        raise ValueError(f"content is not parseable HTML ({exc})") from None
    lines = [line.strip(" ") for line in "".join(parser.parts).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
