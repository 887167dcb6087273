"""The chat directory's CSV import: rows about hashtag chats in, one ``DirectoryEntry`` per hashtag out.

``import_csv`` reads the columns of ``tests/fixtures/directory`` (hashtag, topic, frequency,
day_of_week, start_local, end_local, timezone, hosts, as_of, source_url, ...). Rows about one
hashtag that name the same times (compared as UTC instants over a year, so 21:00 New York and
20:00 Chicago agree; a missing end agrees with any end) are merged and their sources listed.
Rows that name different times are never merged silently: the entry keeps the newest row by
``as_of`` and a ``Conflict`` names every row (by line) and what differs. A row whose schedule
cannot be read is a ``RowIssue`` in ``problems`` with its line and reason; its hashtag is still
listed. ``entries_to_toml`` writes ``[[chats]]`` tables for ``mixer.toml``. What one row's
cells say (its schedule, hosts, as_of) is ``directory_row``; the schedule itself (string form,
DST, slots) is ``schedule``; the ``mixer chats`` command is ``chats``; the config loader is elsewhere.
"""

from __future__ import annotations

import _csv
import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from itertools import takewhile
from pathlib import Path

from mixer.codec import not_utf8
from mixer.ingest.hashtags import normalize_hashtag
from mixer.schedule import Schedule, slots
from mixer.tools.directory_row import parse_as_of, parse_hosts, row_schedule, stated

REQUIRED_COLUMNS = ("hashtag", "frequency", "day_of_week", "start_local", "end_local", "timezone")
# Rows agree when their slots coincide over this year: long enough to cover both DST changes
# in every zone and every month of a monthly schedule.
_COMPARE_FROM = datetime(2026, 1, 1, tzinfo=UTC)
_COMPARE_SPAN = timedelta(days=366)


@dataclass(frozen=True, slots=True)
class RowIssue:
    """One CSV row and what about it could not be used (problems) or was left out (notes)."""

    line: int  # line of the file the row starts on (the header is line 1)
    tag: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: #{self.tag}: {self.reason}" if self.tag else f"line {self.line}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Variant:
    """One of the schedules rows give for a hashtag, and the rows (lines) giving it."""

    lines: tuple[int, ...]
    schedule: Schedule


@dataclass(frozen=True, slots=True)
class Conflict:
    """Rows for one hashtag naming different times; the entry uses ``kept`` (the newest row by as_of)."""

    tag: str
    kept: Variant
    others: tuple[Variant, ...]
    differs: tuple[str, ...]  # of: "day", "frequency", "time zone", "start time", "end time"

    @property
    def lines(self) -> tuple[int, ...]:
        return tuple(sorted(line for v in (self.kept, *self.others) for line in v.lines))

    def __str__(self) -> str:
        def say(variant: Variant, kept: bool) -> str:
            lines = ", ".join(map(str, variant.lines))
            word = "lines" if len(variant.lines) > 1 else "line"
            return f"{word} {lines} '{variant.schedule}'" + (" (kept: newest)" if kept else "")

        told = "; ".join([say(self.kept, True), *(say(v, False) for v in self.others)])
        return f"#{self.tag}: rows disagree on {', '.join(self.differs)}: {told}"


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    """One hashtag chat of the directory."""

    tag: str  # normalised: lower case, no '#'
    title: str  # the hashtag as the newest row writes it, without '#'
    topic: str
    schedule: Schedule | None  # None when no row gives a usable schedule (see ImportResult.problems)
    hosts: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()  # source_url of every row merged into the entry (all rows if no schedule)
    lines: tuple[int, ...] = ()  # the rows those sources come from
    networks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ImportResult:
    entries: tuple[DirectoryEntry, ...]  # one per hashtag, in order of first appearance
    conflicts: tuple[Conflict, ...] = ()
    problems: tuple[RowIssue, ...] = ()  # rows whose schedule could not be read
    notes: tuple[RowIssue, ...] = ()  # rows used with part of their frequency left out
    source: str = "<csv>"  # the file read, for messages

    def messages(self) -> list[str]:
        """Every problem, conflict and note as a 'FILE:LINE: ...' line for a person, sorted by line."""

        def about(issue: RowIssue, kind: str) -> str:
            return f"{self.source}:{issue.line}: {kind}" + (f"#{issue.tag}: " if issue.tag else "") + issue.reason

        told = [(p.line, about(p, "")) for p in self.problems]
        told += [(c.lines[0], f"{self.source}:{c.lines[0]}: conflict: {c}") for c in self.conflicts]
        told += [(n.line, about(n, "note: ")) for n in self.notes]
        return [text for _, text in sorted(told, key=lambda item: item[0])]


def _read_on(reader: _csv.Reader, name: str) -> Iterator[list[str]]:
    """The reader's rows; a row the csv module cannot read (a field over its 128 KiB limit) is a ValueError
    naming the file and the line it got to, since the reader cannot go on past it."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ValueError(f"{name}:{reader.line_num}: not readable as CSV: {exc}") from None


@dataclass(slots=True)
class _Row:
    line: int
    cells: dict[str, str]
    schedule: Schedule | None = None
    slots: tuple[tuple[datetime, datetime], ...] = ()
    as_of: tuple[int, int, int] = (0, 0, 0)
    hosts: tuple[str, ...] = ()


def import_csv(path: str | Path) -> ImportResult:
    """Every hashtag of a directory CSV file; ValueError naming the file and line if required columns are
    missing, the file is not UTF-8 or is not CSV that can be read on."""
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:  # (its positions count from after a byte-order mark)
        at = len(data) - len(exc.object) + exc.start
        line = data.count(b"\n", 0, at) + 1
        raise ValueError(f"{path}:{line}: {not_utf8(data[at], at + 1)}") from None
    return import_rows(io.StringIO(text, newline=""), name=str(path))


def import_rows(lines: Iterable[str], name: str = "<csv>") -> ImportResult:
    """The same as ``import_csv`` for CSV text already open (lines as ``csv.reader`` takes them)."""
    reader = csv.reader(lines)
    header = [h.strip().casefold() for h in next(reader, [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{name}: line 1: missing column(s) {', '.join(missing)}; the header is {header}")
    problems: list[RowIssue] = []
    notes: list[RowIssue] = []
    by_tag: dict[str, list[_Row]] = {}
    previous = reader.line_num
    for values in _read_on(reader, name):
        line, previous = previous + 1, reader.line_num
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            problems.append(RowIssue(line, "", f"{len(values)} fields where the header has {len(header)}"))
            continue
        row = _Row(line, {k: v.strip() for k, v in zip(header, values, strict=True)})
        tag = normalize_hashtag(row.cells["hashtag"])
        if not tag or any(c.isspace() or c == "#" for c in tag):
            problems.append(RowIssue(line, "", f"hashtag {row.cells['hashtag']!r} is not one hashtag"))
            continue
        row.as_of = parse_as_of(row.cells.get("as_of", ""))
        row.hosts = parse_hosts(row.cells.get("hosts", ""))
        try:
            row.schedule, note = row_schedule(row.cells)
        except ValueError as exc:
            problems.append(RowIssue(line, tag, str(exc)))
        else:
            row.slots = _slots(row.schedule)
            if note:
                notes.append(RowIssue(line, tag, note))
        by_tag.setdefault(tag, []).append(row)
    entries: list[DirectoryEntry] = []
    conflicts: list[Conflict] = []
    for tag, rows in by_tag.items():
        entry, conflict = _entry(tag, rows)
        entries.append(entry)
        if conflict is not None:
            conflicts.append(conflict)
    return ImportResult(tuple(entries), tuple(conflicts), tuple(problems), tuple(notes), name)


def entries_to_toml(entries: Iterable[DirectoryEntry]) -> str:
    """``[[chats]]`` tables (tag, title, topic, schedule, hosts; sources as comments) that ``tomllib`` reads back."""
    out: list[str] = []
    for entry in entries:
        out.append("[[chats]]")
        out.append(f"tag = {_toml_str(entry.tag)}")
        out.append(f"title = {_toml_str(entry.title)}")
        if entry.topic:
            out.append(f"topic = {_toml_str(entry.topic)}")
        if entry.schedule is not None:
            out.append(f"schedule = {_toml_str(str(entry.schedule))}")
        else:
            out.append("# schedule unknown: no row gave a usable one")
        out.append(f"hosts = [{', '.join(_toml_str(h) for h in entry.hosts)}]")
        out.extend(f"# source: {' '.join(url.split())}" for url in entry.sources)
        out.append("")
    return "\n".join(out)


def _slots(schedule: Schedule) -> tuple[tuple[datetime, datetime], ...]:
    return tuple(takewhile(lambda slot: slot[0] < _COMPARE_FROM + _COMPARE_SPAN, slots(schedule, _COMPARE_FROM)))


def _agree(a: _Row, b: _Row) -> bool:
    assert a.schedule is not None and b.schedule is not None
    if [s for s, _ in a.slots] != [s for s, _ in b.slots]:
        return False
    return a.schedule.end is None or b.schedule.end is None or a.slots == b.slots


def _entry(tag: str, rows: list[_Row]) -> tuple[DirectoryEntry, Conflict | None]:
    """The entry for one hashtag's rows and the conflict among them, if any."""
    newest_first = sorted(rows, key=lambda r: (tuple(-n for n in r.as_of), r.line))
    groups: list[list[_Row]] = []
    for row in newest_first:
        if row.schedule is None:
            continue
        for group in groups:
            if all(_agree(row, other) for other in group):
                group.append(row)
                break
        else:
            groups.append([row])
    base = groups[0] if groups else newest_first
    first = base[0]
    schedule = _with_end(first.schedule, base) if groups else None
    hosts = next((r.hosts for r in (*base, *newest_first) if r.hosts), ())
    topic = next((c for r in (*base, *newest_first) if (c := stated(r.cells.get("topic", "")))), "")
    in_order = sorted(base, key=lambda r: r.line)
    entry = DirectoryEntry(
        tag=tag,
        title=first.cells["hashtag"].lstrip("#\uff03") or tag,
        topic=topic,
        schedule=schedule,
        hosts=hosts,
        sources=tuple(dict.fromkeys(u for r in in_order if (u := r.cells.get("source_url", "")))),
        lines=tuple(r.line for r in in_order),
        networks=tuple(dict.fromkeys(n for r in in_order if (n := r.cells.get("network", "").casefold()))),
    )
    if len(groups) < 2:
        return entry, None
    variants = [Variant(tuple(sorted(r.line for r in g)), _with_end(g[0].schedule, g)) for g in groups]
    differs = _differences([v.schedule for v in variants])
    return entry, Conflict(tag, variants[0], tuple(variants[1:]), differs)


def _with_end(schedule: Schedule | None, group: Sequence[_Row]) -> Schedule:
    """The group's newest schedule, given the end another row of the group states if it has none."""
    assert schedule is not None
    if schedule.end is not None:
        return schedule
    for row in group:
        if row.schedule is not None and row.schedule.end is not None:
            day = date(2000, 1, 3)
            length = datetime.combine(day, row.schedule.end) - datetime.combine(day, row.schedule.start)
            length %= timedelta(days=1)
            return replace(schedule, end=(datetime.combine(day, schedule.start) + length).time())
    return schedule


def _differences(schedules: Sequence[Schedule]) -> tuple[str, ...]:
    """What schedules differ in, as words for a person; times are compared in UTC in January and July."""
    differs: list[str] = []
    if len({s.days for s in schedules}) > 1:
        differs.append("day")
    if len({(s.every, s.nth, s.anchor) for s in schedules}) > 1:
        differs.append("frequency")
    if len({s.tz for s in schedules}) > 1:
        differs.append("time zone")
    if len({_utc_clock(s, s.start) for s in schedules}) > 1:
        differs.append("start time")
    if len({_utc_clock(s, s.end) for s in schedules if s.end is not None}) > 1:
        differs.append("end time")
    return tuple(differs)


def _utc_clock(schedule: Schedule, clock: time | None) -> tuple[time, ...]:
    days = (date(2026, 1, 5), date(2026, 7, 6))
    return tuple(datetime.combine(d, clock or schedule.start, schedule.zone).astimezone(UTC).time() for d in days)


def _toml_str(text: str) -> str:
    # A JSON string (non-ASCII kept, controls as \uXXXX) is a valid TOML basic string.
    return json.dumps(text, ensure_ascii=False)
