"""The ``[[chats]]`` and ``[[profiles]]`` tables of ``mixer.toml``: each table checked and its defaults filled in.

``chat_from_table`` turns one ``[[chats]]`` table into a ``ChatSettings``: an unknown key, a missing or bad tag, a
bad colour, schedule, ``follow`` or ``sources`` list is a ``BadValue`` at its dotted key (``chats[1].colour``); a
title defaults to ``#tag``, a colour to ``PALETTE`` by position (``#rgb`` is written out as ``#rrggbb``), and a
chat's ``sources`` are kept in ``LIVE_SOURCES`` order so that equal settings compare equal. ``profiles_from_tables``
turns the ``[[profiles]]`` array into ``Profile``s, each number at most ``PROFILE_MAX`` and every other check
``Profile``'s own, reported at the key that failed it; two profiles of one name are refused. Pure. What lives
elsewhere: the ``[section]`` keys and the checks of single values (``config_schema``), whether a profile's weights
name this file's chats and two chats share a tag (``config``, which sees the whole file).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from mixer.config_schema import TAG_WANT, BadValue, shown, unknown_name, valid_tag
from mixer.settings import LIVE_SOURCES, ChatSettings, Profile

# Badge colours for chats that name none: distinct from each other, readable on a dark background.
PALETTE = ("#4fc3f7", "#ffb74d", "#81c784", "#f06292", "#ba68c8", "#fff176", "#4db6ac", "#e57373")

_COLOUR = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
_CHAT_KEYS = ("tag", "title", "colour", "schedule", "topic", "hosts", "follow", "sources")


def chat_from_table(key: str, index: int, table: Mapping[str, object]) -> ChatSettings:
    """One chat with its defaults filled in: title ``#tag``, colour from PALETTE by index, ``#rgb`` expanded."""
    for name in table:
        if name not in _CHAT_KEYS:
            raise BadValue(f"{key}.{name}", unknown_name("key", name, list(_CHAT_KEYS)))
    if "tag" not in table:
        raise BadValue(f"{key}.tag", "is required (the chat's hashtag)")
    raw = table["tag"]
    tag = valid_tag(raw) if isinstance(raw, str) else None
    if tag is None:
        raise BadValue(f"{key}.tag", f"must be {TAG_WANT}, got {raw!r}")
    title = table.get("title", f"#{tag}")
    if not isinstance(title, str) or not title.strip():
        raise BadValue(f"{key}.title", f"must be a non-empty string, got {title!r}")
    colour = table.get("colour", PALETTE[index % len(PALETTE)])
    if not isinstance(colour, str) or not _COLOUR.match(colour):
        raise BadValue(f"{key}.colour", f"must be a colour '#rgb' or '#rrggbb', got {colour!r}")
    if len(colour) == 4:
        colour = "#" + "".join(c * 2 for c in colour[1:])
    schedule = table.get("schedule", "")
    if not isinstance(schedule, str):
        raise BadValue(f"{key}.schedule", f"must be a string like 'Mon 20:00-22:00 America/New_York', got {schedule!r}")
    if schedule.strip():
        from mixer.schedule import Schedule

        try:
            schedule = str(Schedule.parse(schedule))
        except ValueError as exc:
            raise BadValue(f"{key}.schedule", str(exc)) from None
    topic = table.get("topic", "")
    if not isinstance(topic, str):
        raise BadValue(f"{key}.topic", f"must be a string, got {topic!r}")
    hosts = table.get("hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise BadValue(f"{key}.hosts", f"must be a list of names, got {hosts!r}")
    follow = table.get("follow", "")
    if follow not in ("", "always", "scheduled", "never"):
        raise BadValue(f"{key}.follow", f"must be 'always', 'scheduled' or 'never', got {follow!r}")
    if follow == "scheduled" and not schedule.strip():
        raise BadValue(f"{key}.follow", "is 'scheduled' but the chat has no schedule")
    sources = table.get("sources")
    if sources is not None:
        want = f"must be a list of distinct live sources among {', '.join(repr(s) for s in LIVE_SOURCES)}"
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise BadValue(f"{key}.sources", f"{want}, got {sources!r}")
        named = [s.strip().lower() for s in sources]
        unknown = [s for s in named if s not in LIVE_SOURCES]
        if unknown:
            raise BadValue(f"{key}.sources", f"{want}, got {unknown[0]!r} (the webhook and replays take any chat)")
        if len(set(named)) < len(named):
            raise BadValue(f"{key}.sources", f"{want}, got {sources!r}, which names one twice")
        sources = tuple(s for s in LIVE_SOURCES if s in named)  # in one order, so the settings compare equal
    return ChatSettings(
        tag=tag,
        title=title,
        colour=colour.lower(),
        schedule=schedule.strip(),
        topic=topic,
        hosts=tuple(hosts),
        follow=str(follow),
        sources=sources,
    )


_PROFILE_KEYS = ("name", "rate", "burst", "max_wait", "max_queue", "weights")
# Upper bounds of a profile's numbers (its lower bounds are Profile's own checks); inf stays allowed where it means
# "unshaped" (rate) or "no limit" (max_wait).
PROFILE_MAX = {"rate": 1000, "burst": 10_000, "max_wait": 86_400, "max_queue": 1_000_000, "weights": 1000}


def _over(key: str, value: object) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False  # Profile says what is wrong with it
    return value > PROFILE_MAX[key] and not (value == math.inf and key in ("rate", "max_wait"))


def profiles_from_tables(body: object) -> tuple[Profile, ...]:
    """``[[profiles]]`` tables as Profiles; the checks are Profile's own, reported at the table's key."""
    if not isinstance(body, list) or not all(isinstance(t, dict) for t in body):
        raise BadValue("profiles", "must be an array of tables ([[profiles]])")
    out: list[Profile] = []
    for i, table in enumerate(body):
        for name in table:
            if name not in _PROFILE_KEYS:
                raise BadValue(f"profiles[{i}].{name}", unknown_name("key", name, list(_PROFILE_KEYS)))
        if not isinstance(table.get("name"), str) or not valid_tag(table["name"]) or table["name"] == "full":
            raise BadValue(f"profiles[{i}].name", "must be a short name other than 'full' (which is always there)")
        for name in ("rate", "burst", "max_wait", "max_queue"):
            if _over(name, table.get(name)):
                raise BadValue(
                    f"profiles[{i}].{name}", f"must be at most {PROFILE_MAX[name]}, got {shown(None, table[name])}"
                )
        weights = table.get("weights", {})
        if isinstance(weights, dict) and any(_over("weights", w) for w in weights.values()):
            raise BadValue(f"profiles[{i}].weights", f"a weight must be at most {PROFILE_MAX['weights']}")
        for key in table.keys() - {"name"}:  # each key alone first: an error is reported at its own line
            try:
                Profile(name=table["name"], **{key: table[key]})
            except (TypeError, ValueError) as exc:
                raise BadValue(f"profiles[{i}].{key}", str(exc)) from None
        try:
            out.append(Profile(**table))
        except (TypeError, ValueError) as exc:
            raise BadValue(f"profiles[{i}]", str(exc)) from None
        if (j := next((j for j, p in enumerate(out[:-1]) if p.name == out[-1].name), None)) is not None:
            raise BadValue(f"profiles[{i}].name", f"duplicate name {out[-1].name!r}, first used by profiles[{j}]")
    return tuple(out)
