"""When a chat meets: the ``Schedule`` value, its one-line string form, and the pure slot arithmetic.

A schedule is a local wall-clock time on some weekdays in an IANA time zone, every week, every
other week (``anchor`` names a date in an "on" week) or on the nth weekday(s) of each month.
``Schedule.parse`` reads the string form used in ``mixer.toml`` and ``str(schedule)`` writes it
back (canonical, round trip). ``next_slot`` and ``is_live`` take the current time as an argument
and return aware UTC datetimes. Daylight-saving time: a local start that does not exist (the
spring-forward gap) is shifted forward by the gap; one that happens twice (fall back) is the
first occurrence (both are ``fold=0``, PEP 495). ``chat_entry`` is a chat as the directory shows
it (``/api/chats``, ``mixer chats``). Reading the CSV directory is ``mixer.tools.directory``; the
config keys and scheduled following use this from elsewhere.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mixer.settings import ChatSettings

Every = Literal["weekly", "fortnightly", "monthly"]

DEFAULT_DURATION = timedelta(hours=1)  # a schedule with no end time runs this long
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_DAY_WORDS = {name.casefold(): i for i, name in enumerate(DAY_NAMES)} | {
    name.casefold(): i for i, name in enumerate(calendar.day_name)
}
_DAY_WORDS |= {"tues": 1, "wednes": 2, "thur": 3, "thurs": 3}
NTH_NAMES = {1: "first", 2: "second", 3: "third", 4: "fourth", -1: "last"}
_NTH_WORDS = {word: n for n, word in NTH_NAMES.items()} | {"1st": 1, "2nd": 2, "3rd": 3, "4th": 4}
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")
_EXAMPLE = "e.g. 'Mon 20:00-21:00 America/New_York'"
# Zone names that read like US/EU abbreviations but are fixed offsets or legacy rules: writing
# "EST" for New York would silently lose daylight-saving time, so only Area/City names, UTC and GMT pass.
_PLAIN_ZONES = frozenset({"UTC", "GMT"})


@dataclass(frozen=True, slots=True)
class Schedule:
    """A chat's recurring slot. Build with ``Schedule.parse`` or directly; invalid values raise ValueError."""

    days: tuple[int, ...]  # weekdays, Mon=0 .. Sun=6, sorted, no repeats
    start: time  # local wall-clock start, whole minutes, no tzinfo
    end: time | None = None  # local end; None: DEFAULT_DURATION; at or before start: past midnight
    tz: str = "UTC"  # IANA zone name, e.g. "America/New_York"
    every: Every = "weekly"
    anchor: date | None = None  # fortnightly only: a date (on one of `days`) in a week the chat meets
    nth: tuple[int, ...] = ()  # monthly only: which occurrences in the month, 1..4 or -1 (last), sorted

    def __post_init__(self) -> None:
        if not self.days:
            raise ValueError("a schedule needs at least one weekday")
        if any(not 0 <= d <= 6 for d in self.days) or tuple(sorted(set(self.days))) != self.days:
            raise ValueError(f"days must be distinct weekday numbers 0..6 in order, got {self.days}")
        for name, value in (("start", self.start), ("end", self.end)):
            if value is not None and (value.second or value.microsecond or value.tzinfo is not None):
                raise ValueError(f"{name} must be a naive local time in whole minutes, got {value}")
        if self.end == self.start:
            raise ValueError(f"end {self.end:%H:%M} equals start: give an end time or none")
        parse_zone(self.tz)
        if self.every not in get_args(Every):
            raise ValueError(f"every must be one of {', '.join(get_args(Every))}, got {self.every!r}")
        if (self.every == "fortnightly") != (self.anchor is not None):
            raise ValueError("an anchor date is needed for, and only for, a fortnightly schedule")
        if self.anchor is not None and self.anchor.weekday() not in self.days:
            raise ValueError(
                f"anchor {self.anchor} is a {DAY_NAMES[self.anchor.weekday()]}, not one of the chat's days"
                f" ({','.join(DAY_NAMES[d] for d in self.days)})"
            )
        if (self.every == "monthly") != bool(self.nth):
            raise ValueError("nth (which weekday of the month) is needed for, and only for, a monthly schedule")
        if any(n not in NTH_NAMES for n in self.nth) or tuple(sorted(set(self.nth), key=_nth_order)) != self.nth:
            raise ValueError(f"nth must be distinct values of 1..4 or -1 (last), in order, got {self.nth}")

    @property
    def zone(self) -> ZoneInfo:
        return parse_zone(self.tz)

    @classmethod
    def parse(cls, text: str) -> Schedule:
        """The schedule a string names (the form ``str`` writes); ValueError says what is wrong and where."""
        try:
            return _parse(text)
        except ValueError as exc:
            raise ValueError(f"bad schedule {text!r}: {exc}") from None

    def __str__(self) -> str:
        if self.every == "fortnightly":
            prefix = "every other "
        elif self.every == "monthly":
            prefix = " and ".join(NTH_NAMES[n] for n in self.nth) + " "
        else:
            prefix = ""
        days = ",".join(DAY_NAMES[d] for d in self.days)
        hours = f"{self.start:%H:%M}" + (f"-{self.end:%H:%M}" if self.end is not None else "")
        suffix = f" from {self.anchor.isoformat()}" if self.anchor is not None else ""
        return f"{prefix}{days} {hours} {self.tz}{suffix}"

    def meets_on(self, day: date) -> bool:
        """Whether a slot starts on this local date."""
        if day.weekday() not in self.days:
            return False
        if self.every == "fortnightly":
            assert self.anchor is not None
            weeks = (_monday(day) - _monday(self.anchor)).days // 7
            return weeks % 2 == 0
        if self.every == "monthly":
            occurrence = (day.day - 1) // 7 + 1
            is_last = day.day + 7 > calendar.monthrange(day.year, day.month)[1]
            return occurrence in self.nth or (is_last and -1 in self.nth)
        return True

    def slot_on(self, day: date) -> tuple[datetime, datetime]:
        """The UTC (start, end) of a slot starting on this local date (whether or not the chat meets then)."""
        zone = self.zone
        start = datetime.combine(day, self.start, zone).astimezone(UTC)
        if self.end is None:
            return start, start + DEFAULT_DURATION
        end_day = day if self.end > self.start else day + timedelta(days=1)
        end = datetime.combine(end_day, self.end, zone).astimezone(UTC)
        if end <= start:  # the start was pushed past the end by a spring-forward gap: keep the nominal length
            nominal = datetime.combine(end_day, self.end) - datetime.combine(day, self.start)
            end = start + nominal
        return start, end


def slots(schedule: Schedule, now: datetime) -> Iterator[tuple[datetime, datetime]]:
    """Every slot (UTC start, end) that has not ended by now, in start order: the live one first, if any."""
    _check_aware(now)
    # Slots are shorter than a day (plus at most a DST hour), so one starting two local days
    # before now's local date has surely ended; start the search there.
    day = now.astimezone(schedule.zone).date() - timedelta(days=2)
    while True:
        if schedule.meets_on(day):
            start, end = schedule.slot_on(day)
            if end > now:
                yield start, end
        day += timedelta(days=1)


def next_slot(schedule: Schedule, now: datetime) -> tuple[datetime, datetime]:
    """The live slot at now if there is one, else the next one: aware UTC (start, end), end > now."""
    return next(slots(schedule, now))


def is_live(schedule: Schedule, now: datetime, margin: timedelta = timedelta(0)) -> bool:
    """True when now is within a slot widened by margin on both sides: start - margin <= now < end + margin."""
    if margin < timedelta(0):
        raise ValueError(f"margin must not be negative, got {margin}")
    start, _ = next_slot(schedule, now - margin)
    return start - margin <= now


def _parse(text: str) -> Schedule:
    words = text.replace(",", " , ").split()
    if not words:
        raise ValueError(f"it is empty; {_EXAMPLE}")
    every: Every = "weekly"
    nth: list[int] = []
    first = words[0].casefold()
    if first in ("every", "fortnightly", "biweekly"):
        words.pop(0)
        if first != "every":
            every = "fortnightly"
        elif words and words[0].casefold() == "other":
            every = "fortnightly"
            words.pop(0)
    elif first in _NTH_WORDS:
        every = "monthly"
        while words and (words[0].casefold() in _NTH_WORDS or words[0].casefold() in ("and", ",")):
            word = words.pop(0).casefold()
            if word in _NTH_WORDS:
                nth.append(_NTH_WORDS[word])
    elif re.fullmatch(r"\d+(st|nd|rd|th)", first) or first == "fifth":
        raise ValueError(f"{words[0]!r}: only first..fourth (1st..4th) and last weekday of the month exist")

    at = next((i for i, word in enumerate(words) if word[0].isdigit()), None)
    if at is None:
        raise ValueError(f"no start time (24-hour HH:MM) after the day(s); {_EXAMPLE}")
    days = [day for word in words[:at] if word != "," for day in _days(word)]
    if not days:
        raise ValueError(f"no weekday before the time; {_EXAMPLE}")
    words = words[at:]
    hours = words.pop(0)
    while words and (words[0].startswith("-") or hours.endswith("-")):
        hours += words.pop(0)
    start_text, _, end_text = hours.partition("-")
    start = parse_time(start_text)
    end = parse_time(end_text) if end_text else None
    if not words:
        raise ValueError("no time zone after the time: give an IANA name such as America/New_York")
    tz = words.pop(0)
    parse_zone(tz)

    anchor: date | None = None
    if words and words[0].casefold() == "from":
        words.pop(0)
        if not words:
            raise ValueError("'from' needs a date (YYYY-MM-DD) in a week the chat meets")
        try:
            anchor = date.fromisoformat(words.pop(0))
        except ValueError:
            raise ValueError("the date after 'from' must be YYYY-MM-DD") from None
        if every != "fortnightly":
            raise ValueError("'from DATE' is only for 'every other' schedules")
    elif every == "fortnightly":
        raise ValueError("'every other' needs 'from YYYY-MM-DD' (a date the chat meets) to say which weeks")
    if words:
        raise ValueError(f"unexpected {' '.join(words)!r} at the end")
    return Schedule(
        days=tuple(sorted(set(days))),
        start=start,
        end=end,
        tz=tz,
        every=every,
        anchor=anchor,
        nth=tuple(sorted(set(nth), key=_nth_order)),
    )


def _days(word: str) -> list[int]:
    """Weekday numbers of one word: 'Mon', 'monday', 'Mon-Fri' (a range may wrap: 'Sat-Mon')."""
    first, dash, last = word.partition("-")
    if dash:
        a, b = parse_weekday(first), parse_weekday(last)
        return [(a + i) % 7 for i in range((b - a) % 7 + 1)]
    return [parse_weekday(word)]


def parse_weekday(word: str) -> int:
    """The weekday number (Mon=0) of 'Mon', 'monday', 'Mondays'; ValueError otherwise."""
    key = word.casefold().rstrip(".")
    if key in _DAY_WORDS:
        return _DAY_WORDS[key]
    if key.endswith("s") and key[:-1] in _DAY_WORDS:  # "Mondays"
        return _DAY_WORDS[key[:-1]]
    raise ValueError(f"{word!r} is not a weekday (Mon, Tue, Wed, Thu, Fri, Sat, Sun)")


def parse_time(text: str) -> time:
    """The time of a 24-hour 'HH:MM'; ValueError otherwise."""
    match = _TIME.match(text)
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise ValueError(f"{text!r} is not a 24-hour time HH:MM")
    return time(int(match[1]), int(match[2]))


def parse_zone(name: str) -> ZoneInfo:
    """The zone of an IANA Area/City name (or UTC, GMT); ValueError for unknown names and abbreviations like EST."""
    if "/" not in name and name not in _PLAIN_ZONES:
        raise ValueError(
            f"time zone {name!r} is not an IANA Area/City name: write e.g. America/New_York or Europe/London,"
            " so daylight-saving time is applied"
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as America/New_York)") from None


def _nth_order(n: int) -> int:
    return 5 if n == -1 else n


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _check_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime (UTC)")


def chat_entry(chat: ChatSettings, now: datetime) -> dict[str, Any]:
    """A chat as the directory shows it: with ``live``, ``next_start`` and ``next_end`` (UTC ISO) when scheduled."""
    entry: dict[str, Any] = {"tag": chat.tag, "title": chat.title, "colour": chat.colour}
    entry |= {"topic": chat.topic, "hosts": list(chat.hosts), "schedule": chat.schedule or None}
    if chat.schedule:
        schedule = Schedule.parse(chat.schedule)
        start, end = next_slot(schedule, now)
        entry |= {"live": is_live(schedule, now), "next_start": _iso(start), "next_end": _iso(end)}
    else:
        entry |= {"live": None, "next_start": None, "next_end": None}
    return entry


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
