"""Judging posts by the moderation rules: show, hold or block.

``Moderator(rules)`` compiles a ``Rules`` (``mixer.rules``, the data a moderator edits) once
into one regular expression per word list; ``Moderator.judge(post)`` is pure and fast: a post
blocked by a global rule is blocked; a post blocked only by some of its chats' rules is
narrowed to the others (blocked when none remain); in approval mode what is left is held.
Word matching is described in docs/moderation.md. Not here: the rules' validation and JSON
form (``mixer.rules``), storing rules, the held queue, retracting posts already shown (the
merge stage and the moderation API do that).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any, Literal

import msgspec

from mixer.models import Post
from mixer.rules import Rules, fold

Action = Literal["show", "hold", "block"]
HitKind = Literal["account", "word", "profanity"]

# Leetspeak. The text is matched through a "view" where digits, '$' and '|' read as letters (a context-free,
# one-for-one translation, so positions still line up with the folded text) and '_' separates words. Inside a
# word (never first) '@' also reads as "a" and '!' as "i"; first, '@' starts a mention. The classes are disjoint,
# so neighbouring letters never compete for the same characters and a match costs linear time on any input.
_VIEW = str.maketrans({"4": "a", "3": "e", "1": "i", "0": "o", "5": "s", "$": "s", "7": "t", "|": "l", "_": " "})
_VIEW_ASCII = bytes.maketrans(b"43105$7|_", b"aeiosstl ")
_INNER = {"a": "a@", "i": "i!"}  # after a word's first letter
_INNER_SIGNS = re.compile(r"(?<=[^\W_])[@!]+")  # in an entry: the '@' and '!' that read as letters
_NO_START = re.compile(r"[\w@!][@!]$")  # what may not precede a word's first letter (with \w itself)
_ENTRY_WORD = re.compile(r"[^\W_]+(?:\*+[^\W_]+)*")  # '*' only inside a word ("f*ck")
# Scripts written without spaces between words: an entry in them matches anywhere, not as a whole word.
_UNSPACED = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\U00020000-\U0002ffff]"
)
_LETTER = re.compile(r"[^\W\d_]")
# A direction override (LRO U+202D, RLO U+202E) makes a browser draw the letters after it, up to its PDF (U+202C) or
# the end of the paragraph, in reverse: "\u202ekcuf" is shown as "fuck". Such a run is judged as drawn too.
_OVERRIDE_RUN = re.compile("[\u202d\u202e]([^\u202c\n\r\u2029\x00]*)")
Token = tuple[str, int]  # (character, run length); ("", 0) is the gap between the words of a phrase


def _as_drawn(*texts: str) -> str:
    """For texts holding a direction override: each with its override runs reversed, as a screen draws them, after a
    NUL each (a phrase never spans two of them); "" for the others (nearly every post), which read as they are."""
    if not any("\u202d" in t or "\u202e" in t for t in texts):
        return ""
    return "".join("\x00" + _OVERRIDE_RUN.sub(lambda m: m.group(1)[::-1], t) for t in texts)


def _view(folded: str) -> str:
    """``folded.translate(_VIEW)``, done on its UTF-8 bytes: an ASCII byte never occurs inside a longer character's
    encoding, so the one-byte table maps the same characters, and a text with other characters costs a tenth as
    much as str.translate (which looks every character up in the table). ``surrogatepass``: any str round-trips."""
    return folded.encode("utf-8", "surrogatepass").translate(_VIEW_ASCII).decode("utf-8", "surrogatepass")


def _entry_view(folded: str) -> str:
    """An entry read the way the matcher reads text: leetspeak as letters, so "sh!t" and "$hit" are "shit"."""
    return _INNER_SIGNS.sub(lambda m: m.group().replace("@", "a").replace("!", "i"), folded.translate(_VIEW))


def _tokens(entry: str) -> tuple[Token, ...]:
    """A word or phrase as runs of characters with gaps between its words; empty for an entry matched as a substring."""
    folded = fold(entry)
    if _UNSPACED.search(folded) or not _LETTER.search(folded):
        return ()
    raw = folded.translate(_VIEW)
    out: list[Token] = []
    for m in _ENTRY_WORD.finditer(_entry_view(folded)):
        if _NO_START.match(raw, max(m.start() - 2, 0), m.start()):
            return ()  # a word the matcher could not see start ("@@a"): the entry is matched as written
        if out:
            out.append(("", 0))
        for ch in m.group():
            if out and out[-1][0] == ch:
                out[-1] = (ch, out[-1][1] + 1)
            else:
                out.append((ch, 1))
    return tuple(out)


def _token_pattern(token: Token, first: bool) -> str:
    ch, count = token
    if not ch:
        return r"[^\w\x00]+"  # a phrase's gap never spans the NUL between a post's text and its author's name
    one = f"[{re.escape(_INNER[ch])}]" if ch in _INNER else re.escape(ch)
    head = re.escape(ch) if first else one
    # A letter stretched to three or more counts as one ("fuuuck"); twice does not ("annus" is not "anus").
    # Possessive tails: a run never gives back what it took, so no input makes the pattern backtrack far.
    return f"{head}(?:{one}{one}+)?+" if count == 1 else head + one * (count - 2) + one + "++"


def _plain(entry: str) -> bool:
    folded = fold(entry)
    return folded == _entry_view(folded)


class _Matcher:
    """One compiled pattern for a list of (kind, entry); ``find`` names an entry found in a post's text."""

    def __init__(self, entries: Iterable[tuple[HitKind, str]], name_hits: bool = True) -> None:
        trie: dict[Any, Any] = {}  # token -> child trie; None -> index of the entry ending there
        self._entries: list[tuple[HitKind, str]] = []
        self._anywhere: list[tuple[str, int]] = []  # (folded entry, index): substrings of the folded text
        for kind, entry in entries:
            index = len(self._entries)
            self._entries.append((kind, entry))
            tokens = _tokens(entry)
            if not tokens:
                self._anywhere.append((fold(entry), index))
                continue
            node = trie
            for token in tokens:
                node = node.setdefault(token, {})
            held = node.get(None)
            if held is None or (not _plain(self._entries[held][1]) and _plain(entry)):
                node[None] = index  # the first plainly written entry names the hit: "ass", not "a$$"
        self._name_hits = name_hits
        self._groups: list[int] = []  # capture group number - 1 -> entry index
        # Whole words: no letter or digit just before or after (in the view, where '$' and digits are letters),
        # nor an '@' or '!' that may be read as a letter ("b@d", "@@a"): so a word never starts inside another
        # word's run of letters, and a hostile text costs time linear in its length.
        self._pattern = re.compile(rf"(?<!\w)(?<![\w@!][@!]){self._node(trie, True)}(?!\w)") if trie else None

    def _node(self, node: dict[Any, Any], first: bool) -> str:
        alts = [_token_pattern(tok, first) + self._node(child, not tok[0]) for tok, child in node.items() if tok]
        if None in node and self._name_hits:
            self._groups.append(node[None])
            alts.append("()")  # empty group: m.lastindex tells which entry ended the match
        elif None in node:
            alts.append("")
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    def find(self, folded: str, view: str, chat: str | None = None) -> Hit | None:
        """The first entry found, or None; with ``name_hits`` off, an unnamed hit as soon as anything may match."""
        for needle, index in self._anywhere:
            if needle in folded:
                return Hit(*self._entries[index], chat)
        if self._pattern is None:
            return None
        for m in self._pattern.finditer(view):
            if not self._name_hits:
                return Hit("word", "", chat)
            if _LETTER.search(folded, m.start(), m.end()):  # "455" reads as "ass" in the view, but is a number
                return Hit(*self._entries[self._groups[(m.lastindex or 1) - 1]], chat)
        return None


class Hit(msgspec.Struct, frozen=True, gc=False):
    """One rule that matched: its kind, the entry as written in the rules, and the chat whose list holds it."""

    kind: HitKind
    entry: str
    chat: str | None = None  # None: a global rule

    def __str__(self) -> str:
        what = {"account": "blocked account", "word": "blocked word", "profanity": "profanity"}[self.kind]
        return f"{what} {self.entry!r}" + (f" in chat #{self.chat}" if self.chat else "")


class Verdict(msgspec.Struct, frozen=True, gc=False):
    """``show`` or ``hold`` carry the post, narrowed to the chats still allowed; ``block`` carries none.

    A Struct like the Post it carries (every post judged makes one: 0.1 us, a frozen dataclass 0.56 us)."""

    action: Action
    post: Post | None
    hits: tuple[Hit, ...] = ()  # why it was blocked, or which chats dropped it

    @property
    def reason(self) -> str:
        return "; ".join(str(h) for h in self.hits)


@cache
def _bundled_allow() -> frozenset[tuple[Token, ...] | str]:
    text = files("mixer").joinpath("data", "profanity_allow.txt").read_text(encoding="utf-8")
    lines = (line.strip() for line in text.splitlines())
    return frozenset(_tokens(line) or fold(line) for line in lines if line and not line.startswith("#"))


@cache
def _package_profanity() -> tuple[str, ...]:
    # glin-profanity's own loader is its public way to its word lists; imported only when the filter is on.
    from glin_profanity.data.dictionary import dictionary

    words = tuple(
        w
        for w in dictionary.get_words("english")
        if isinstance(w, str) and w.strip() and not w.startswith("@")  # "@ss": '@' first starts a mention, left "ss"
    )
    if not words:
        raise RuntimeError("glin-profanity returned no English words: is the package installed whole?")
    return words


def profanity_words(allow: Iterable[str] = ()) -> tuple[str, ...]:
    """The default profanity list in effect: glin-profanity's English list less the bundled and given exceptions."""
    skip = _bundled_allow() | {_tokens(w) or fold(w) for w in allow}
    return tuple(w for w in _package_profanity() if (_tokens(w) or fold(w)) not in skip)


@dataclass(frozen=True, slots=True)
class _Compiled:
    accounts: frozenset[str]
    text: _Matcher | None  # global words and profanity
    chat_accounts: Mapping[str, frozenset[str]]
    chat_text: Mapping[str, _Matcher]
    screen: _Matcher | None  # every list at once, when there are several: most posts need one pass, not several
    has_words: bool


def _blocked_account(keys: frozenset[str], source: str, handle: str, did: str) -> str | None:
    for name in (handle, did) if did and did != handle else (handle,):
        if name in keys:
            return name
        qualified = f"{source}:{name}"
        if qualified in keys:
            return qualified
    return None


def _bluesky_did(post: Post) -> str:
    """A Bluesky post's author did, from its key (``bluesky:at://<did>/...``): the account's for good, while its
    handle is the did only until the profile is resolved (so a did entry blocks the account either way)."""
    if not post.key.startswith("bluesky:at://did:"):
        return ""
    return fold(post.key[len("bluesky:at://") :].partition("/")[0])


def _compile(rules: Rules) -> _Compiled:
    glob: list[tuple[HitKind, str]] = [("word", w) for w in rules.words]
    if rules.profanity:
        glob += [("profanity", w) for w in profanity_words(rules.profanity_allow)]
    chat_text = {c: _Matcher(("word", w) for w in r.words) for c, r in rules.chats.items() if r.words}
    every = glob + [("word", w) for r in rules.chats.values() for w in r.words]
    return _Compiled(
        accounts=frozenset(rules.accounts),
        text=_Matcher(glob) if glob else None,
        chat_accounts={c: frozenset(r.accounts) for c, r in rules.chats.items() if r.accounts},
        chat_text=chat_text,
        screen=_Matcher(every, name_hits=False) if len(chat_text) + bool(glob) > 1 else None,
        has_words=bool(every),
    )


class Moderator:
    """``Rules`` compiled once (at construction), to judge any number of posts."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self._compiled = _compile(rules)
        self._passed: Action = "hold" if rules.approval else "show"
        # No chat has rules of its own: every chat keeps every post, so judge skips the per-chat loop
        self._global_only = not self._compiled.chat_accounts and not self._compiled.chat_text

    def judge(self, post: Post) -> Verdict:
        """Show, hold or block ``post``; one only some of its chats block is narrowed to the others. Never raises."""
        c = self._compiled
        source = fold(post.source)
        handle = fold(post.author.handle).lstrip("@")
        did = _bluesky_did(post)
        account = _blocked_account(c.accounts, source, handle, did)
        if account is not None:
            return Verdict("block", None, (Hit("account", account),))
        folded = view = ""
        words = c.has_words
        if words:
            text, name = post.text, post.author.name
            if "\x00" in text or "\x00" in name:  # their own NULs read as spaces: only the one between is no gap
                text, name = text.replace("\x00", " "), name.replace("\x00", " ")
            # the name is shown on the wall too; a text with a direction override is also read as it is drawn
            folded = fold(f"{text}\x00{name}{_as_drawn(text, name)}")
            view = _view(folded)
            words = c.screen is None or c.screen.find(folded, view) is not None
        if words and c.text is not None and (found := c.text.find(folded, view)) is not None:
            return Verdict("block", None, (found,))
        if self._global_only:
            return Verdict(self._passed, post)
        hits: list[Hit] = []
        keep: list[str] = []
        for chat in post.chats:
            found = None
            accounts = c.chat_accounts.get(chat)
            if accounts and (account := _blocked_account(accounts, source, handle, did)) is not None:
                found = Hit("account", account, chat)
            matcher = c.chat_text.get(chat) if words else None
            if found is None and matcher is not None:
                found = matcher.find(folded, view, chat)
            if found is None:
                keep.append(chat)
            else:
                hits.append(found)
        if hits:
            if not keep:
                return Verdict("block", None, tuple(hits))
            post = post.with_chats(tuple(keep))
        return Verdict(self._passed, post, tuple(hits))
