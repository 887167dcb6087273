from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mixer.schedule import DEFAULT_DURATION, Schedule, is_live, next_slot, slots


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


CANONICAL = [
    "Mon 20:00-22:00 America/New_York",
    "Mon,Wed,Fri 12:00-13:00 Europe/London",
    "every other Tue 19:00-20:00 America/Chicago from 2026-01-06",
    "first Fri 13:00-14:00 America/New_York",
    "last Thu 18:00 Europe/Berlin",
    "second and fourth Wed 13:00-14:00 America/New_York",
    "first and last Sun 09:30 UTC",
    "Fri 23:00-01:00 Europe/London",
]


@pytest.mark.parametrize("text", CANONICAL)
def test_canonical_strings_round_trip(text: str) -> None:
    schedule = Schedule.parse(text)
    assert str(schedule) == text
    assert Schedule.parse(str(schedule)) == schedule


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("monday 20:00 - 22:00 America/New_York", "Mon 20:00-22:00 America/New_York"),
        ("Wed, Mon 8:00-9:00 UTC", "Mon,Wed 08:00-09:00 UTC"),
        ("Mon-Fri 12:00-13:00 Europe/London", "Mon,Tue,Wed,Thu,Fri 12:00-13:00 Europe/London"),
        ("Sat-Mon 10:00 UTC", "Mon,Sat,Sun 10:00 UTC"),
        ("Tuesdays 19:00 America/Chicago", "Tue 19:00 America/Chicago"),
        ("every Tue 19:00 America/Chicago", "Tue 19:00 America/Chicago"),
        (
            "fortnightly Tue 19:00 America/Chicago from 2026-01-06",
            "every other Tue 19:00 America/Chicago from 2026-01-06",
        ),
        ("2nd and 4th Wed 13:00 America/New_York", "second and fourth Wed 13:00 America/New_York"),
        ("4th, 2nd Wed 13:00 America/New_York", "second and fourth Wed 13:00 America/New_York"),
        ("1st Fri 13:00-14:00 America/New_York", "first Fri 13:00-14:00 America/New_York"),
    ],
)
def test_looser_spellings_parse_to_the_canonical_form(text: str, canonical: str) -> None:
    assert str(Schedule.parse(text)) == canonical


def test_parse_fills_every_field() -> None:
    assert Schedule.parse("every other Tue 19:00-20:00 America/Chicago from 2026-01-06") == Schedule(
        days=(1,),
        start=time(19),
        end=time(20),
        tz="America/Chicago",
        every="fortnightly",
        anchor=date(2026, 1, 6),
    )
    assert Schedule.parse("last Thu 18:00 Europe/Berlin") == Schedule(
        days=(3,), start=time(18), tz="Europe/Berlin", every="monthly", nth=(-1,)
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("20:00 UTC", "no weekday"),
        ("Mun 20:00 UTC", "'Mun' is not a weekday"),
        ("Mon UTC", "no start time"),
        ("Mon 25:00 UTC", "'25:00' is not a 24-hour time"),
        ("Mon 8pm UTC", "not a 24-hour time"),
        ("Mon 20:00", "no time zone"),
        ("Mon 20:00 EST", "not an IANA Area/City name"),
        ("Mon 20:00 Mars/Olympus_Mons", "unknown time zone 'Mars/Olympus_Mons'"),
        ("Mon 20:00-20:00 UTC", "equals start"),
        ("every other Tue 19:00 America/Chicago", "needs 'from YYYY-MM-DD'"),
        ("every other Tue 19:00 America/Chicago from 2026-01-07", "2026-01-07 is a Wed"),
        ("every other Tue 19:00 America/Chicago from next week", "YYYY-MM-DD"),
        ("Tue 19:00 America/Chicago from 2026-01-06", "only for 'every other'"),
        ("fifth Fri 13:00 UTC", "only first..fourth"),
        ("5th Fri 13:00 UTC", "only first..fourth"),
        ("Mon 20:00 UTC weekly", "unexpected 'weekly'"),
    ],
)
def test_bad_strings_are_rejected_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match="bad schedule") as caught:
        Schedule.parse(text)
    assert reason in str(caught.value)


def test_invalid_fields_are_rejected_when_built_directly() -> None:
    with pytest.raises(ValueError, match="at least one weekday"):
        Schedule(days=(), start=time(12))
    with pytest.raises(ValueError, match="distinct weekday numbers"):
        Schedule(days=(7,), start=time(12))
    with pytest.raises(ValueError, match="whole minutes"):
        Schedule(days=(0,), start=time(12, 0, 30))
    with pytest.raises(ValueError, match="anchor date is needed"):
        Schedule(days=(0,), start=time(12), every="fortnightly")
    with pytest.raises(ValueError, match="nth"):
        Schedule(days=(0,), start=time(12), every="monthly", nth=(5,))


# US daylight-saving time 2026: starts Sun 8 March, ends Sun 1 November.
# EU summer time 2026: starts Sun 29 March, ends Sun 25 October.
NY_MONDAY = Schedule.parse("Mon 20:00-22:00 America/New_York")


@pytest.mark.parametrize(
    ("now", "start"),
    [
        (utc(2026, 3, 2, 12), utc(2026, 3, 3, 1)),  # Mon 2 March, EST: 20:00 is 01:00 UTC
        (utc(2026, 3, 9, 12), utc(2026, 3, 10, 0)),  # Mon 9 March, EDT: 20:00 is 00:00 UTC
        (utc(2026, 10, 26, 12), utc(2026, 10, 27, 0)),  # Mon 26 October, still EDT
        (utc(2026, 11, 2, 12), utc(2026, 11, 3, 1)),  # Mon 2 November, EST again
    ],
)
def test_us_evening_chat_moves_in_utc_across_both_dst_changes(now: datetime, start: datetime) -> None:
    assert next_slot(NY_MONDAY, now) == (start, start + timedelta(hours=2))


def test_slot_after_the_us_spring_change_is_a_week_minus_an_hour_later() -> None:
    first = next_slot(NY_MONDAY, utc(2026, 3, 2, 12))
    second = next_slot(NY_MONDAY, first[1])
    assert second[0] - first[0] == timedelta(days=7, hours=-1)


LONDON_THURSDAY = Schedule.parse("Thu 20:00-21:00 Europe/London")
BERLIN_TUESDAY = Schedule.parse("Tue 18:00 Europe/Berlin")


@pytest.mark.parametrize(
    ("schedule", "now", "start"),
    [
        (LONDON_THURSDAY, utc(2026, 3, 26), utc(2026, 3, 26, 20)),  # GMT
        (LONDON_THURSDAY, utc(2026, 4, 2), utc(2026, 4, 2, 19)),  # BST
        (LONDON_THURSDAY, utc(2026, 10, 22), utc(2026, 10, 22, 19)),  # BST
        (LONDON_THURSDAY, utc(2026, 10, 29), utc(2026, 10, 29, 20)),  # GMT again
        (BERLIN_TUESDAY, utc(2026, 3, 24), utc(2026, 3, 24, 17)),  # CET
        (BERLIN_TUESDAY, utc(2026, 3, 31), utc(2026, 3, 31, 16)),  # CEST
        (BERLIN_TUESDAY, utc(2026, 10, 20), utc(2026, 10, 20, 16)),  # CEST
        (BERLIN_TUESDAY, utc(2026, 10, 27), utc(2026, 10, 27, 17)),  # CET again
    ],
)
def test_european_chats_move_in_utc_across_both_dst_changes(schedule: Schedule, now: datetime, start: datetime) -> None:
    assert next_slot(schedule, now)[0] == start


def test_new_york_and_berlin_disagree_only_in_the_weeks_between_us_and_eu_changes() -> None:
    new_york = Schedule.parse("Tue 12:00 America/New_York")
    for now, same in [(utc(2026, 3, 3), True), (utc(2026, 3, 10), False), (utc(2026, 3, 31), True)]:
        assert (next_slot(new_york, now) == next_slot(BERLIN_TUESDAY, now)) is same


def test_start_in_the_spring_forward_gap_is_shifted_forward_by_the_gap() -> None:
    schedule = Schedule.parse("Sun 02:30-03:30 America/New_York")
    start, end = next_slot(schedule, utc(2026, 3, 7))
    assert start == utc(2026, 3, 8, 7, 30)  # 02:30 does not exist; 03:30 EDT
    assert start.astimezone(ZoneInfo("America/New_York")).time() == time(3, 30)
    assert end == utc(2026, 3, 8, 8, 30)  # 03:30 EDT is not after the shifted start: the nominal hour is kept


def test_start_in_the_fall_back_hour_is_its_first_occurrence() -> None:
    schedule = Schedule.parse("Sun 01:30-02:00 America/New_York")
    start, end = next_slot(schedule, utc(2026, 10, 31))
    assert start == utc(2026, 11, 1, 5, 30)  # 01:30 EDT, the first of the two
    assert end == utc(2026, 11, 1, 7)  # 02:00 EST: the slot really lasts 90 minutes that night


def test_slot_crossing_midnight_is_live_after_midnight_and_ends_next_day() -> None:
    schedule = Schedule.parse("Fri 23:00-01:00 Europe/London")
    friday_night = (utc(2026, 1, 9, 23), utc(2026, 1, 10, 1))
    assert next_slot(schedule, utc(2026, 1, 9, 12)) == friday_night
    assert next_slot(schedule, utc(2026, 1, 10, 0, 30)) == friday_night  # Saturday 00:30: still Friday's slot
    assert is_live(schedule, utc(2026, 1, 10, 0, 30))
    assert not is_live(schedule, utc(2026, 1, 10, 1))
    assert next_slot(schedule, utc(2026, 1, 10, 1))[0] == utc(2026, 1, 16, 23)


def test_slot_without_end_lasts_the_default_duration() -> None:
    start, end = next_slot(BERLIN_TUESDAY, utc(2026, 1, 1))
    assert end - start == DEFAULT_DURATION == timedelta(hours=1)


def test_next_slot_is_the_live_slot_while_it_runs_then_the_next() -> None:
    first = next_slot(NY_MONDAY, utc(2026, 1, 1))
    assert next_slot(NY_MONDAY, first[0]) == first
    assert next_slot(NY_MONDAY, first[1] - timedelta(microseconds=1)) == first
    assert next_slot(NY_MONDAY, first[1])[0] == first[0] + timedelta(days=7)


def test_live_detection_honours_the_margin_on_both_sides() -> None:
    start, end = next_slot(NY_MONDAY, utc(2026, 1, 1))
    margin = timedelta(minutes=15)
    assert not is_live(NY_MONDAY, start - timedelta(minutes=1))
    assert is_live(NY_MONDAY, start - timedelta(minutes=1), margin)
    assert is_live(NY_MONDAY, start - margin, margin)
    assert not is_live(NY_MONDAY, start - margin - timedelta(seconds=1), margin)
    assert is_live(NY_MONDAY, start)
    assert not is_live(NY_MONDAY, end)
    assert is_live(NY_MONDAY, end + timedelta(minutes=14), margin)
    assert not is_live(NY_MONDAY, end + margin, margin)
    with pytest.raises(ValueError, match="negative"):
        is_live(NY_MONDAY, start, -margin)


def test_naive_now_is_rejected() -> None:
    with pytest.raises(ValueError, match="aware"):
        next_slot(NY_MONDAY, datetime(2026, 1, 1))


def _starts(schedule: Schedule, now: datetime, count: int) -> list[date]:
    zone = ZoneInfo(schedule.tz)
    found = []
    for start, _ in slots(schedule, now):
        found.append(start.astimezone(zone).date())
        if len(found) == count:
            return found
    raise AssertionError("unreachable")


def test_monthly_first_weekday() -> None:
    schedule = Schedule.parse("first Fri 13:00-14:00 America/New_York")
    assert _starts(schedule, utc(2026, 1, 1), 4) == [
        date(2026, 1, 2),
        date(2026, 2, 6),
        date(2026, 3, 6),
        date(2026, 4, 3),
    ]
    assert next_slot(schedule, utc(2026, 3, 6, 18, 30)) == (utc(2026, 3, 6, 18), utc(2026, 3, 6, 19))


def test_monthly_last_weekday_in_four_and_five_week_months() -> None:
    schedule = Schedule.parse("last Thu 18:00 Europe/Berlin")
    assert _starts(schedule, utc(2026, 1, 1), 4) == [
        date(2026, 1, 29),  # January has five Thursdays
        date(2026, 2, 26),  # February four
        date(2026, 3, 26),
        date(2026, 4, 30),
    ]


def test_monthly_second_and_fourth() -> None:
    schedule = Schedule.parse("second and fourth Wed 13:00-14:00 America/New_York")
    assert _starts(schedule, utc(2026, 4, 1), 4) == [
        date(2026, 4, 8),
        date(2026, 4, 22),
        date(2026, 5, 13),
        date(2026, 5, 27),
    ]


def test_fortnightly_meets_in_the_anchor_week_and_every_second_week_before_and_after() -> None:
    schedule = Schedule.parse("every other Tue 19:00-20:00 America/Chicago from 2026-01-06")
    assert _starts(schedule, utc(2025, 12, 20), 4) == [
        date(2025, 12, 23),
        date(2026, 1, 6),
        date(2026, 1, 20),
        date(2026, 2, 3),
    ]
    assert not is_live(schedule, utc(2026, 1, 14, 1, 30))  # Tue 13 January 19:30 CST: the off week
    assert is_live(schedule, utc(2026, 1, 21, 1, 30))


def test_several_days_a_week() -> None:
    schedule = Schedule.parse("Mon,Wed,Fri 12:00-13:00 Europe/London")
    assert _starts(schedule, utc(2026, 1, 5), 4) == [
        date(2026, 1, 5),
        date(2026, 1, 7),
        date(2026, 1, 9),
        date(2026, 1, 12),
    ]


_SCHEDULES = [Schedule.parse(text) for text in CANONICAL] + [
    Schedule.parse("Sun 02:30-03:30 America/New_York"),
    Schedule.parse("Sun 01:30-02:00 America/New_York"),
    Schedule.parse("Sat 23:30-02:30 Europe/Berlin"),
    Schedule.parse("Mon-Sun 00:00-23:59 Australia/Lord_Howe"),  # a half-hour DST zone
]


@given(
    schedule=st.sampled_from(_SCHEDULES),
    now=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)),
)
def test_next_slot_ends_after_now_starts_within_a_slot_length_and_is_live_at_its_start(
    schedule: Schedule, now: datetime
) -> None:
    start, end = next_slot(schedule, now)
    assert start.tzinfo is UTC and end.tzinfo is UTC
    assert start < end <= start + timedelta(days=1, hours=1)
    assert end > now
    assert start >= now - (end - start)
    assert is_live(schedule, start)
    assert is_live(schedule, now) == (start <= now)
    zone = ZoneInfo(schedule.tz)
    local = start.astimezone(zone)
    assert schedule.meets_on(local.date())
    wanted = datetime.combine(local.date(), schedule.start)
    in_gap = wanted.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None) != wanted
    assert local.time() == schedule.start or in_gap
