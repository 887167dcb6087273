"""Recorded streams: reading JSON Lines files of posts, one record a line, lazily.

A recording is UTF-8 text, one JSON record a line; blank lines and lines starting with
``#`` (origin and licence notes) are skipped. ``parse_record`` is the one place a parsed
record becomes a Post; today a record is a normalised Post, and raw platform payloads
will be recognised there too. A malformed line never stops a read: it becomes a
``RecordError`` naming file, line and reason, logged once here and yielded in place so
the caller can count it, and every good line around it is still read. Pacing and
publishing recordings live in ``replay``, not here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .models import Post

log = logging.getLogger(__name__)

# Larger integers do not fit msgpack (the Redis form of a post) and are no real time stamp.
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class RecordError:
    """A line of a recording that is not a record: where it is and what is wrong with it."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


def parse_record(data: Any) -> Post:
    """One parsed JSON record as a Post; raises ValueError saying why it is not one."""
    return Post.from_dict(data)


def parse_line(raw: bytes) -> Post | None:
    """A Post from one line of a recording, None for a blank or comment line; ValueError if malformed."""
    text = raw.strip()
    if not text or text.startswith(b"#"):
        return None
    try:
        data = json.loads(text)
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 (byte {exc.start + 1})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise ValueError("not JSON: nested too deeply") from None
    return parse_record(data)


def read_records(path: str | Path, *, log_errors: bool = True) -> Generator[Post | RecordError, None, None]:
    """Every record in line order, a malformed line as RecordError (logged at warning); never raises for content.

    The file is read one line at a time and closed when the iterator ends or is closed.
    Opening a missing or unreadable file raises OSError on the first ``next()``.
    """
    name = str(path)
    with open(path, "rb") as lines:
        for number, raw in enumerate(lines, 1):
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            try:
                post = parse_line(raw)
            except ValueError as exc:
                error = RecordError(name, number, str(exc))
                if log_errors:
                    log.warning("skipped malformed record %s", error)
                yield error
                continue
            if post is not None:
                yield post
