"""One row of the directory CSV, cell by cell: its schedule, its hosts, its as_of date.

``row_schedule`` reads frequency, day_of_week, start_local, end_local and timezone into a
``Schedule`` ('weekly', 'daily', 'monthly (first Friday)', 'monthly (later 2nd and 4th
Wednesdays)'), with a note on any part of the frequency it leaves out, or raises ValueError
saying why the row has no usable schedule (every other week, one-off, uncertain, a missing
cell). ``parse_hosts`` and ``parse_as_of`` read those cells; ``stated`` blanks a '(not stated)'.
Not here: grouping rows by hashtag, conflicts and the TOML output (``directory``), the schedule
string and its slots (``schedule``).
"""

from __future__ import annotations

import re
from datetime import time

from mixer.schedule import DAY_NAMES, NTH_NAMES, Every, Schedule, parse_time, parse_weekday, parse_zone

_ORDINALS = {"first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4, "last": -1}
_NTH_QUALIFIER = re.compile(r"^(?:later\s+)?(?P<nths>[a-z0-9]+(?:(?:\s*,\s*|\s+and\s+)[a-z0-9]+)*)\s+(?P<day>[a-z]+)$")
_FREQUENCY = re.compile(r"^(?P<word>[^(]*?)\s*(?:\((?P<qualifier>[^)]*)\))?\s*$")
_AS_OF = re.compile(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?$")
_NOT_STATED = re.compile(r"^\(?\s*(not stated|n/?a|unknown)?\s*\)?$", re.IGNORECASE)


def row_schedule(cells: dict[str, str]) -> tuple[Schedule, str]:
    """The schedule one row names and a note on what of its frequency was left out; ValueError says why not."""
    frequency = cells["frequency"]
    match = _FREQUENCY.match(frequency.casefold())
    word = match["word"].strip() if match else frequency.casefold()
    qualifier = (match["qualifier"] or "").strip() if match else ""
    note = ""
    if "?" in word:
        raise ValueError(f"frequency {frequency!r} is marked uncertain")
    every: Every
    days: tuple[int, ...] = ()
    nth: tuple[int, ...] = ()
    if word in ("weekly", "every week"):
        every = "weekly"
    elif word == "daily":
        every, days = "weekly", tuple(range(7))
    elif word in ("every other week", "fortnightly", "biweekly", "every two weeks"):
        named = cells["day_of_week"][:3] or "<day>"
        raise ValueError(
            f"frequency {frequency!r}: the CSV cannot say which weeks; put it in mixer.toml as"
            f" 'every other {named} {cells['start_local'] or 'HH:MM'} {cells['timezone'] or '<zone>'}"
            " from YYYY-MM-DD' with a date it met"
        )
    elif word == "monthly":
        every = "monthly"
    elif word in ("one-off", "once", "one off"):
        raise ValueError(f"frequency {frequency!r}: a one-off chat has no recurring schedule")
    else:
        raise ValueError(f"frequency {frequency!r} is none of weekly, daily, monthly (nth weekday), every other week")

    if not days:
        if not cells["day_of_week"]:
            raise ValueError("no day_of_week")
        try:
            days = (parse_weekday(cells["day_of_week"]),)
        except ValueError as exc:
            raise ValueError(f"day_of_week: {exc}") from None
    if qualifier:
        ordinal = _nth_qualifier(qualifier)
        if ordinal is None:
            note = f"frequency {frequency!r}: '({qualifier})' is not modelled; imported as {word}"
        else:
            nth, day = ordinal
            if day not in days:
                raise ValueError(f"frequency {frequency!r} names a different weekday than day_of_week")
            if every != "monthly":
                later = " and ".join(NTH_NAMES[n] for n in nth)
                note = f"frequency {frequency!r}: imported as the later schedule, {later} {DAY_NAMES[day]} of the month"
            every, days = "monthly", (day,)
    if every == "monthly" and not nth:
        raise ValueError(
            f"frequency {frequency!r}: which weekday of the month is not stated (e.g. 'monthly (first Friday)')"
        )

    if not cells["start_local"]:
        raise ValueError("no start_local time")
    start = _cell_time(cells, "start_local")
    end = _cell_time(cells, "end_local") if cells["end_local"] else None
    zone = cells["timezone"]
    if not zone:
        stated = cells.get("timezone_as_stated", "")
        raise ValueError("no timezone" + (f" (the page says {stated!r})" if stated else ""))
    try:
        parse_zone(zone)
    except ValueError as exc:
        raise ValueError(f"timezone: {exc}") from None
    if end == start:
        raise ValueError("end_local equals start_local")
    return Schedule(days=days, start=start, end=end, tz=zone, every=every, nth=nth), note


def _nth_qualifier(qualifier: str) -> tuple[tuple[int, ...], int] | None:
    """'first Thursday', 'later 2nd and 4th Wednesdays' as (nths, weekday); None for anything else."""
    match = _NTH_QUALIFIER.match(qualifier.casefold())
    if match is None:
        return None
    words = re.split(r"\s*,\s*|\s+and\s+", match["nths"])
    if any(w not in _ORDINALS for w in words):
        return None
    try:
        day = parse_weekday(match["day"])
    except ValueError:
        return None
    nth = sorted({_ORDINALS[w] for w in words}, key=lambda n: 5 if n == -1 else n)
    return tuple(nth), day


def _cell_time(cells: dict[str, str], column: str) -> time:
    try:
        return parse_time(cells[column])
    except ValueError as exc:
        raise ValueError(f"{column}: {exc}") from None


def parse_as_of(text: str) -> tuple[int, int, int]:
    """A sortable (year, month, day) of '2009', '2009-06', '2009-06-01'; undated ('n.d.') sorts oldest."""
    match = _AS_OF.match(text.strip())
    if match is None:
        return (0, 0, 0)
    return (int(match[1]), int(match[2] or 0), int(match[3] or 0))


def parse_hosts(text: str) -> tuple[str, ...]:
    """Hosts split at ',' and ';' outside parentheses: 'A (@a), B' -> ('A (@a)', 'B')."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += (char == "(") - (char == ")")
        if char in ",;" and depth <= 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return tuple(p for part in parts if (p := part.strip()) and stated(p))


def stated(text: str) -> str:
    """Text unless it only says nothing is stated."""
    return "" if _NOT_STATED.match(text.strip()) else text.strip()
