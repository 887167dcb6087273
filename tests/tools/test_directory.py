from __future__ import annotations

import io
import re
import subprocess
import sys
import tomllib
from datetime import time
from pathlib import Path

import pytest

from mixer.schedule import Schedule
from mixer.tools.directory import DirectoryEntry, ImportResult, entries_to_toml, import_csv, import_rows
from tests.helpers import FIXTURES as FIXTURES_DIR

CSV = FIXTURES_DIR / "directory" / "twitter_chat_schedule_from_public_pages.csv"
HEADER = "hashtag,network,topic,frequency,day_of_week,start_local,end_local,timezone,hosts,as_of,source_url\n"


@pytest.fixture(scope="module")
def real() -> ImportResult:
    return import_csv(CSV)


def entry(result: ImportResult, tag: str) -> DirectoryEntry:
    return next(e for e in result.entries if e.tag == tag)


def rows(*lines: str) -> ImportResult:
    return import_rows(io.StringIO(HEADER + "".join(line + "\n" for line in lines)))


def test_every_hashtag_of_the_real_directory_is_one_entry(real: ImportResult) -> None:
    assert len(real.entries) == 32
    assert len({e.tag for e in real.entries}) == 32
    assert sum(e.schedule is not None for e in real.entries) == 25
    assert real.entries[0].tag == "journchat"  # order of first appearance
    assert entry(real, "ukfechat").title == "UKFEchat"  # tag normalised, title as written


def test_journchat_conflict_names_every_disagreeing_row_and_keeps_the_newest(real: ImportResult) -> None:
    (conflict,) = [c for c in real.conflicts if c.tag == "journchat"]
    assert conflict.lines == (2, 3, 4)
    assert conflict.kept.lines == (2,)  # as_of 2009-06, newer than 2009-01-19 and 2008-11-25
    assert [str(v.schedule) for v in (conflict.kept, *conflict.others)] == [
        "Mon 20:00-22:00 America/New_York",
        "Mon 20:00-23:00 America/New_York",
        "Mon 19:00-23:00 America/Chicago",
    ]
    # 19:00 Chicago is 20:00 New York: the start agrees, the ends and the zone do not
    assert conflict.differs == ("time zone", "end time")
    assert "line 2 'Mon 20:00-22:00 America/New_York' (kept: newest)" in str(conflict)
    assert "line 4 'Mon 19:00-23:00 America/Chicago'" in str(conflict)
    journchat = entry(real, "journchat")
    assert str(journchat.schedule) == "Mon 20:00-22:00 America/New_York"
    assert journchat.sources == ("https://www.mediabullseye.com/2009/06/journchat-is-monday-nights-mus/",)
    assert journchat.hosts[0] == "Sarah Evans (@PRsarahevans)"


def test_row_without_time_zone_is_a_problem_with_its_line(real: ImportResult) -> None:
    assert [str(p) for p in real.problems if p.line == 5] == [
        "line 5: #journchat: no timezone (the page says 'not stated')"
    ]


def test_edchat_is_parsed_and_its_two_sessions_and_translated_zone_are_reported(real: ImportResult) -> None:
    edchat = entry(real, "edchat")
    assert edchat.schedule == Schedule(days=(1,), start=time(18), tz="Europe/Berlin")  # newest row, as_of 2010-03-09
    assert edchat.topic == "education"
    assert edchat.hosts == ("Tom Whitby", "Shelly Terrell", "Steven W. Anderson")
    (conflict,) = [c for c in real.conflicts if c.tag == "edchat"]
    assert conflict.kept.lines == (14,)
    # line 15 (12:00, no end) agrees with line 11 (12:00-13:00) and gets its end
    assert [(v.lines, str(v.schedule)) for v in conflict.others] == [
        ((11, 15), "Tue 12:00-13:00 America/New_York"),
        ((12, 13), "Tue 19:00-20:00 America/New_York"),
    ]


def test_rows_naming_the_same_instants_in_other_zones_are_merged_with_all_sources(real: ImportResult) -> None:
    blogchat = entry(real, "blogchat")  # three rows at 20:00 Chicago, one at 21:00 New York
    assert str(blogchat.schedule) == "Sun 20:00 America/Chicago"
    assert blogchat.lines == (7, 8, 9, 10)
    assert len(blogchat.sources) == 4
    assert not [c for c in real.conflicts if c.tag == "blogchat"]
    assert str(entry(real, "ukedchat").schedule) == "Thu 20:00-21:00 Europe/London"
    assert entry(real, "ukedchat").lines == (16, 17)


def test_only_journchat_and_edchat_conflict(real: ImportResult) -> None:
    assert [c.tag for c in real.conflicts] == ["journchat", "edchat"]


def test_monthly_rows_take_the_weekday_of_the_month_from_the_frequency(real: ImportResult) -> None:
    assert str(entry(real, "pstweetchat").schedule) == "first Fri 13:00-14:00 America/New_York"
    assert str(entry(real, "prprochat").schedule) == "first Thu 14:00-15:00 America/New_York"
    prstudchat = [p for p in real.problems if p.tag == "prstudchat"]
    assert [p.line for p in prstudchat] == [27]
    assert entry(real, "prstudchat").schedule is None


def test_second_and_fourth_wednesday_row_is_imported_as_its_later_schedule_with_a_note(real: ImportResult) -> None:
    assert str(entry(real, "solopr").schedule) == "second and fourth Wed 13:00-14:00 America/New_York"
    (note,) = [n for n in real.notes if n.tag == "solopr"]
    assert note.line == 29 and "later schedule" in note.reason


def test_every_other_week_row_is_reported_since_the_csv_cannot_say_which_weeks(real: ImportResult) -> None:
    (problem,) = [p for p in real.problems if p.tag == "solarchat"]
    assert problem.line == 44
    assert "'every other Wed 14:00 America/New_York from YYYY-MM-DD'" in problem.reason
    solarchat = entry(real, "solarchat")
    assert solarchat.schedule is None and solarchat.topic == "solar energy"


def test_unreadable_rows_are_reported_with_line_and_reason(real: ImportResult) -> None:
    reasons = {(p.line, p.tag): p.reason for p in real.problems}
    assert "one-off" in reasons[(6, "mediachat")]
    assert reasons[(23, "smallbizchat")] == "no start_local time"
    assert "'first session (later recurring)'" in reasons[(25, "pr20chat")]
    assert "uncertain" in reasons[(47, "cuppachat")]
    assert len(real.problems) == 10
    # the unreadable Thursday row does not disturb the agreeing Wednesday rows
    assert str(entry(real, "smallbizchat").schedule) == "Wed 20:00-21:00 America/New_York"


def test_term_time_qualifier_is_imported_as_weekly_with_a_note(real: ImportResult) -> None:
    assert str(entry(real, "ukfechat").schedule) == "Thu 21:00 Europe/London"
    assert [(n.line, n.reason) for n in real.notes if n.tag == "ukfechat"] == [
        (18, "frequency 'weekly (term time)': '(term time)' is not modelled; imported as weekly")
    ]


def test_hosts_are_split_outside_parentheses_and_not_stated_is_empty(real: ImportResult) -> None:
    assert entry(real, "bufferchat").hosts == ("Buffer (Nicole Miller, first community champion)",)
    assert entry(real, "kidneychat").hosts == ()
    assert entry(real, "kbtribechat").topic == ""  # "(not stated)"
    assert entry(real, "eduskychat").networks == ("bluesky",)


def test_toml_holds_every_entry_and_reads_back(real: ImportResult) -> None:
    text = entries_to_toml(real.entries)
    chats = tomllib.loads(text)["chats"]
    assert len(chats) == 32
    assert chats[0] == {
        "tag": "journchat",
        "title": "journchat",
        "topic": "journalists, PR pros and bloggers",
        "schedule": "Mon 20:00-22:00 America/New_York",
        "hosts": ["Sarah Evans (@PRsarahevans)", "questions via @JournChat"],
    }
    for chat, imported in zip(chats, real.entries, strict=True):
        assert chat["tag"] == imported.tag
        if imported.schedule is None:
            assert "schedule" not in chat
        else:
            assert Schedule.parse(chat["schedule"]) == imported.schedule
    assert "# source: https://www.mediabullseye.com/2009/06/journchat-is-monday-nights-mus/" in text


def test_toml_escapes_quotes_backslashes_and_newlines() -> None:
    tricky = DirectoryEntry(tag="x", title='say "hi" \\ bye', topic="two\nlines", schedule=None, hosts=("a\tb",))
    assert tomllib.loads(entries_to_toml([tricky]))["chats"] == [
        {"tag": "x", "title": 'say "hi" \\ bye', "topic": "two\nlines", "hosts": ["a\tb"]}
    ]


def test_missing_columns_name_the_file() -> None:
    with pytest.raises(ValueError, match=r"<csv>: line 1: missing column\(s\) timezone"):
        import_rows(io.StringIO("hashtag,frequency,day_of_week,start_local,end_local\n"))


def test_row_lines_count_quoted_newlines_and_bad_rows_are_reported() -> None:
    result = rows(
        '#a,twitter,"two\nlines",weekly,Monday,20:00,,America/New_York,,2020,u1',
        "#b,twitter,x,weekly,Funday,20:00,,America/New_York,,2020,u2",
        "#c,twitter,x,weekly,Monday,8pm,,America/New_York,,2020,u3",
        "#d,twitter,x,weekly,Monday,20:00,,EST,,2020,u4",
        "#e,twitter,x,monthly,Monday,20:00,,UTC,,2020,u5",
        "#f,twitter,x",
        "not a tag,twitter,x,weekly,Monday,20:00,,UTC,,2020,u6",
        "",
        "#g,twitter,x,daily,,09:00,09:30,UTC,,2020,u7",
    )
    assert [str(p) for p in result.problems] == [
        "line 4: #b: day_of_week: 'Funday' is not a weekday (Mon, Tue, Wed, Thu, Fri, Sat, Sun)",
        "line 5: #c: start_local: '8pm' is not a 24-hour time HH:MM",
        "line 6: #d: timezone: time zone 'EST' is not an IANA Area/City name: write e.g. America/New_York or"
        " Europe/London, so daylight-saving time is applied",
        "line 7: #e: frequency 'monthly': which weekday of the month is not stated (e.g. 'monthly (first Friday)')",
        "line 8: 3 fields where the header has 11",
        "line 9: hashtag 'not a tag' is not one hashtag",
    ]
    assert str(entry(result, "a").schedule) == "Mon 20:00 America/New_York"
    assert str(entry(result, "g").schedule) == "Mon,Tue,Wed,Thu,Fri,Sat,Sun 09:00-09:30 UTC"


def test_rows_on_different_days_conflict_and_undated_rows_lose_to_dated_ones() -> None:
    result = rows(
        "#a,twitter,x,weekly,Monday,20:00,21:00,UTC,,n.d.,u1",
        "#a,twitter,x,weekly,Tuesday,20:00,21:00,UTC,,2011,u2",
        "#a,twitter,x,weekly,Tuesday,20:00,,UTC,,2010-05-01,u3",
    )
    (conflict,) = result.conflicts
    assert conflict.kept.lines == (3, 4)
    assert [v.lines for v in conflict.others] == [(2,)]
    assert conflict.differs == ("day",)
    assert entry(result, "a").sources == ("u2", "u3")


def test_messages_name_file_and_line_for_every_problem_conflict_and_note(real: ImportResult) -> None:
    messages = real.messages()
    assert len(messages) == len(real.problems) + len(real.conflicts) + len(real.notes) == 15
    assert messages[0] == (
        f"{CSV}:2: conflict: #journchat: rows disagree on time zone, end time: line 2"
        " 'Mon 20:00-22:00 America/New_York' (kept: newest); line 3 'Mon 20:00-23:00 America/New_York';"
        " line 4 'Mon 19:00-23:00 America/Chicago'"
    )
    assert f"{CSV}:5: #journchat: no timezone (the page says 'not stated')" in messages
    assert (
        f"{CSV}:18: note: #ukfechat: frequency 'weekly (term time)': '(term time)' is not modelled; imported as weekly"
        in messages
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b"#a,twitter,x,weekly,Monday,20:00,,UTC,,2020,u1\n#caf\xe9,twitter,x,weekly,Monday,20:00,,UTC,,2020,u2\n",
            r"^FILE:3: not UTF-8 at byte 150 of the file \(0xe9\); save it as UTF-8$",  # the 150th byte is the é
        ),
        (
            b'#a,twitter,x,weekly,Monday,20:00,,UTC,,2020,u1\n#b,twitter,"' + b"x" * 200_000 + b'",weekly\n',
            r"^FILE:3: not readable as CSV: field larger than field limit \(131072\)$",
        ),
    ],
    ids=["latin-1", "huge-field"],
)
def test_an_unreadable_file_is_one_line_naming_file_and_line(tmp_path: Path, body: bytes, expected: str) -> None:
    path = tmp_path / "dir.csv"
    path.write_bytes(HEADER.encode() + body)
    with pytest.raises(ValueError, match=expected.replace("FILE", re.escape(str(path)))):
        import_csv(path)
    result = subprocess.run(
        [sys.executable, "-m", "mixer.cli", "chats", "import", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert re.fullmatch(
        "mixer chats import: " + expected.strip("^$").replace("FILE", re.escape(str(path))) + "\n", result.stderr
    ), result.stderr
