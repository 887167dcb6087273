"""The moderation rules: what is blocked and whether posts wait for approval, as data.

``Rules`` holds blocked words and accounts (global and per chat), the optional profanity
filter and approval mode; it validates itself and round-trips through JSON
(``to_dict``/``from_dict``, as stored in Redis). It is shared by the moderator console's
API (which edits the rules) and the merge stage (which applies them), so it lives in the
core; compiling rules into matchers and judging posts is ``mixer.merge.moderation``.
``config_rules`` gives the rules ``mixer.toml`` sets, in force until a moderator edits them.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from mixer.models import TAG, check_text, normalize_tag
from mixer.settings import Settings

MAX_ENTRIES = 10_000  # per list: bounds the compiled pattern a rule edit can ask for
MAX_WORD_CHARS = 100
_SOURCE = re.compile(r"^[a-z0-9_.-]{1,32}$")
# Combining diacritics (accents, after NFKD) and every character Unicode calls default-ignorable (a screen draws
# nothing for it: Default_Ignorable_Code_Point in DerivedCoreProperties.txt; U+3164 and U+FFA0 are U+1160 after
# NFKD): dropped before matching, so "sp<invisible>am" is "spam".
_STRIP = re.compile(
    "[\u0300-\u036f\u00ad\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f"
    "\ufe00-\ufe0f\ufeff\ufff0-\ufff8\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)


def fold(text: str) -> str:
    """Text as words are matched: NFKC compatibility forms, case-folded, accents and invisible characters removed."""
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKC", _STRIP.sub("", unicodedata.normalize("NFKD", text).casefold()))


def account_key(entry: str) -> str:
    """An account entry as matched: ``source:handle`` or bare ``handle``, folded, no ``@``; ValueError if malformed."""
    raw = fold(entry.strip())
    source, sep, handle = raw.partition(":")
    if sep and not source:  # ":x": stored as "x", it would be read back as another entry
        raise ValueError(f"bad account {entry!r}: a ':' needs a source name before it, such as 'x:handle'")
    if not sep or source == "did":  # a bare handle; a Bluesky did ("did:plc:...") is a handle too
        source, handle = "", raw
    handle = handle.lstrip("@")
    if not handle or any(ch.isspace() for ch in handle):
        raise ValueError(f"bad account {entry!r}: want 'handle', '@handle' or 'source:handle' without spaces")
    if sep and source and not _SOURCE.match(source):
        raise ValueError(f"bad account {entry!r}: {source!r} is not a source name (x, mastodon, bluesky, ...)")
    return f"{source}:{handle}" if source else handle


@dataclass(frozen=True, slots=True)
class ChatRules:
    words: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rules:
    """What to block and whether to hold, validated at construction (ValueError naming the entry)."""

    words: tuple[str, ...] = ()  # blocked everywhere: whole words or phrases, see docs/moderation.md
    accounts: tuple[str, ...] = ()  # blocked everywhere: "handle", "@handle" or "source:handle"
    chats: Mapping[str, ChatRules] = field(default_factory=dict)  # chat tag -> what that chat alone blocks
    profanity: bool = False  # also block glin-profanity's English list (less the bundled exceptions)
    profanity_allow: tuple[str, ...] = ()  # entries of that list this event shows anyway
    approval: bool = False  # hold every post that is not blocked until a moderator approves it

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "words", _word_list(self.words, "words"))
        set_(self, "accounts", _account_list(self.accounts, "accounts"))
        set_(self, "profanity_allow", _word_list(self.profanity_allow, "profanity_allow"))
        for name in ("profanity", "approval"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"'{name}' must be true or false")
        if not isinstance(self.chats, Mapping):
            raise ValueError("'chats' must map chat tags to their rules")
        chats: dict[str, ChatRules] = {}
        for tag, rules in self.chats.items():
            chat = normalize_tag(check_text(tag, "chats")) if isinstance(tag, str) else ""
            if not TAG.match(chat):
                raise ValueError(f"bad chat tag {tag!r} in 'chats'")
            if chat in chats:  # "smbiz" and "#SMBiz": which list was meant is not ours to guess
                raise ValueError(f"chat {chat!r} is in 'chats' twice (tags are read in any case, with or without '#')")
            if not isinstance(rules, ChatRules):
                raise ValueError(f"chats.{chat} must be ChatRules")
            where = f"chats.{chat}"
            chats[chat] = ChatRules(_word_list(rules.words, f"{where}.words"), _account_list(rules.accounts, where))
        set_(self, "chats", MappingProxyType(chats))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; ``from_dict`` reads it back to equal rules."""
        return {
            "words": list(self.words),
            "accounts": list(self.accounts),
            "chats": {c: {"words": list(r.words), "accounts": list(r.accounts)} for c, r in self.chats.items()},
            "profanity": self.profanity,
            "profanity_allow": list(self.profanity_allow),
            "approval": self.approval,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Rules:
        """Validate untrusted JSON into Rules; missing keys take defaults, a bad or unknown one raises ValueError."""
        if not isinstance(data, dict):
            raise ValueError(f"rules are a JSON object, got {type(data).__name__}")
        _known(data, ("words", "accounts", "chats", "profanity", "profanity_allow", "approval"), "rules")
        chats_raw = data.get("chats", {})
        if not isinstance(chats_raw, dict):
            raise ValueError("'chats' must be an object: chat tag -> {words, accounts}")
        chats: dict[str, ChatRules] = {}
        for tag, raw in chats_raw.items():
            if not isinstance(raw, dict):
                raise ValueError(f"chats.{tag} must be an object with 'words' and/or 'accounts'")
            _known(raw, ("words", "accounts"), f"chats.{tag}")
            chats[tag] = ChatRules(_str_list(raw, "words", f"chats.{tag}"), _str_list(raw, "accounts", f"chats.{tag}"))
        return cls(
            words=_str_list(data, "words"),
            accounts=_str_list(data, "accounts"),
            chats=chats,
            profanity=data.get("profanity", False),
            profanity_allow=_str_list(data, "profanity_allow"),
            approval=data.get("approval", False),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Rules:
        """``from_dict`` of a JSON document (as stored in Redis); bad JSON is a ValueError too."""
        return cls.from_dict(json.loads(text))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))


def _known(data: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(k) for k in data if k not in keys)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(map(repr, unknown))} in {where}; expected {', '.join(keys)}")


def _str_list(data: dict[str, Any], name: str, where: str = "") -> tuple[str, ...]:
    value = data.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"'{where + '.' if where else ''}{name}' must be a list of strings")
    return tuple(value)


def _word_list(values: Iterable[str], where: str) -> tuple[str, ...]:
    out = _entry_list(values, where)
    for word in out:
        if len(word) > MAX_WORD_CHARS:
            raise ValueError(f"{where}: {word[:20]!r}... is longer than {MAX_WORD_CHARS} characters")
        if any(unicodedata.category(ch) == "Cc" for ch in word):
            raise ValueError(f"{where}: {word!r} holds a control character")
        if not fold(word).split():
            raise ValueError(f"{where}: {word!r} is empty once folded")
    return out


def _account_list(values: Iterable[str], where: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(account_key(a) for a in _entry_list(values, f"{where}.accounts")))


def _entry_list(values: Iterable[str], where: str) -> tuple[str, ...]:
    if isinstance(values, str) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"'{where}' must be a list of strings")
    for value in values:
        check_text(value, where)
    out = tuple(dict.fromkeys(v.strip() for v in values))
    if len(out) > MAX_ENTRIES:
        raise ValueError(f"'{where}' holds {len(out)} entries; at most {MAX_ENTRIES}")
    if "" in out:
        raise ValueError(f"'{where}' holds an empty entry")
    return out


def config_rules(settings: Settings) -> Rules:
    """The moderation rules the config sets (a moderator's edits, kept in Redis, take their place)."""
    return Rules(
        words=settings.moderation_words,
        accounts=settings.moderation_accounts,
        profanity=settings.moderation_profanity,
        approval=settings.moderation_approval,
    )
