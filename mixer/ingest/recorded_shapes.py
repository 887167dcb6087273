"""Recording shapes: a recorded file (or stdin) split into its records, whatever its shape; nothing recognised here.

``json_records`` detects the shape from the first non-blank, non-``#`` characters: JSON
Lines (streamed), a whole-file JSON array or JSON document(s) (loaded), or a recorded SSE
body (streamed, each named event a streaming-event record). It yields each record's
parsed JSON value with the line it starts on, and a ``RecordError`` in place of a record
that is not JSON (or not UTF-8: the line and the byte of the file, ``codec.not_utf8``), then
goes on with the next one; a file that is no text at all (compressed, UTF-16, told by its first
bytes) is one ``RecordError`` and nothing else. An X v1.1 search response
is unwrapped into its statuses. What a record is, and the events it holds, is decided in
``recorded``, not here.
"""

from __future__ import annotations

import json
import re
import sys
from bisect import bisect_right
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from mixer.codec import binary_reason, loads, not_utf8

_BOM = b"\xef\xbb\xbf"
# Files that are not UTF-8 text at all, told by their first bytes: read line by line, each would be a record of
# binary garbage, so a compressed night of 200 MB would be reported as some hundred thousand malformed records.
_NOT_TEXT = (
    (b"\x1f\x8b", "gzip-compressed", "decompress it first: gunzip -k FILE"),
    (b"BZh", "bzip2-compressed", "decompress it first: bunzip2 -k FILE"),
    (b"\xfd7zXZ\x00", "xz-compressed", "decompress it first: unxz -k FILE"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "decompress it first: unzstd FILE"),
    (b"PK\x03\x04", "a zip archive", "extract the recording from it first"),
    (b"\x00\x00\xfe\xff", "UTF-32 text", "convert it to UTF-8 first: iconv -f UTF-32 -t UTF-8"),
    (b"\xff\xfe\x00\x00", "UTF-32 text", "convert it to UTF-8 first: iconv -f UTF-32 -t UTF-8"),
    (b"\xff\xfe", "UTF-16 text", "convert it to UTF-8 first: iconv -f UTF-16 -t UTF-8 (PowerShell: -Encoding utf8)"),
    (b"\xfe\xff", "UTF-16 text", "convert it to UTF-8 first: iconv -f UTF-16 -t UTF-8 (PowerShell: -Encoding utf8)"),
)
_SSE_START = re.compile(rb"(?:event|data|id|retry)[ \t]*:|:")
_JSON_SPACE = " \t\r\n"
_SEARCH_KEYS = {"statuses", "search_metadata"}  # an X v1.1 search response
_UNDECODABLE = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of bytes that are not UTF-8


@dataclass(frozen=True, slots=True)
class RecordError:
    """A record of a recording that could not be read: where it starts and what is wrong with it."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


Found = tuple[int, Any] | RecordError  # (line, parsed JSON value) of one record, or why it could not be read


def json_records(name: str) -> Generator[Found, None, None]:
    """Each record of file ``name`` (``-``: stdin) in order; the file is closed when the iterator ends or is closed."""
    stream: IO[bytes] = sys.stdin.buffer if name == "-" else open(name, "rb")
    try:
        head: list[bytes] = []
        first = b""
        base = 0  # bytes of the file before the text read (a byte-order mark), so errors name the file's offsets
        for raw in stream:
            if not head:
                problem = not_text(raw)
                if problem is not None:
                    yield RecordError(name, 1, problem)
                    return
                if raw.startswith(_BOM):
                    raw, base = raw[len(_BOM) :], len(_BOM)
            head.append(raw)
            first = raw.strip()
            if first and not first.startswith(b"#"):
                break
        if not first or first.startswith(b"#"):
            return  # only comments and blank lines
        if _SSE_START.match(first):
            yield from _sse(name, _chain(head, stream), base)
        elif first.startswith(b"[") or (first.startswith(b"{") and not _jsonl_like(first, stream, head)):
            yield from _whole(name, b"".join(head) + stream.read(), base)
        else:
            yield from _json_lines(name, _chain(head, stream), base)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def not_text(start: bytes) -> str | None:
    """Why a file starting with these bytes is no UTF-8 recording at all (compressed, UTF-16...), else None."""
    for magic, kind, advice in _NOT_TEXT:
        if start.startswith(magic):
            return f"{kind}, not a recording (UTF-8 JSON text): {advice}"
    return None


def _chain(head: list[bytes], rest: Iterable[bytes]) -> Iterator[bytes]:
    yield from head
    yield from rest


def _jsonl_like(first: bytes, stream: IO[bytes], head: list[bytes]) -> bool:
    """Whether a file starting with '{' is JSON Lines: its first or second content line is JSON on its own.

    The first lines of a pretty-printed object never are. Lines peeked here are appended to head.
    """
    if _is_json(first):
        return True
    for raw in stream:
        head.append(raw)
        text = raw.strip()
        if text and not text.startswith(b"#"):
            return _is_json(text)
    return False


def _is_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except (ValueError, RecursionError):
        return False
    return True


def _json_lines(name: str, lines: Iterable[bytes], base: int = 0) -> Generator[Found, None, None]:
    """Each line a record; ``base``: the file's bytes before the first line."""
    at = base  # the file's bytes before this line
    for number, raw in enumerate(lines, 1):
        start, at = at, at + len(raw)
        text = raw.strip()
        if not text or text.startswith(b"#"):
            continue
        try:
            decoded = text.decode()
        except UnicodeDecodeError as exc:
            offset = start + len(raw) - len(raw.lstrip()) + exc.start
            yield RecordError(name, number, not_utf8(text[exc.start], offset + 1))
            continue
        try:
            data = loads(decoded)
        except ValueError as exc:
            yield RecordError(name, number, str(exc))
            continue
        for value in _unwrap(data):
            yield number, value


def _unwrap(data: Any) -> list[Any]:
    """An X v1.1 search response holds its statuses; every other value is one record."""
    if (
        isinstance(data, dict)
        and isinstance(data.get("statuses"), list)
        and set(data) <= {"statuses", "search_metadata"}
    ):
        return list(data["statuses"])
    return [data]


def _sse(name: str, lines: Iterable[bytes], base: int = 0) -> Generator[Found, None, None]:
    """Server-sent events: each event is a record at the line of its first field; ``:`` lines are comments. An
    event with a byte that is not UTF-8 is an error at the line of its first such byte."""
    event = ""
    data: list[str] = []
    start = 0
    bad: RecordError | None = None
    at = base  # the file's bytes before this line
    for number, raw in enumerate(lines, 1):
        begins, at = at, at + len(raw)
        line = raw.rstrip(b"\r\n")
        if not line:
            if data or bad:
                yield _sse_record(name, start, event, data, bad)
            event, data, start, bad = "", [], 0, None
            continue
        if line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        start = start or number
        try:
            text = value.decode()
        except UnicodeDecodeError as exc:
            offset = begins + len(field) + 1 + exc.start
            bad = bad or RecordError(name, number, not_utf8(value[exc.start], offset + 1))
            continue
        text = text[1:] if text.startswith(" ") else text
        if field == b"event":
            event = text
        elif field == b"data":
            data.append(text)
    if data or bad:
        yield _sse_record(name, start, event, data, bad)  # a body cut off before its last blank line


def _sse_record(name: str, start: int, event: str, data: list[str], bad: RecordError | None) -> Found:
    """A named event becomes a streaming-event record; an unnamed one's data is itself a JSON record."""
    if bad is not None:
        return bad
    payload = "\n".join(data)
    if event:
        return start, {"event": event, "payload": payload}
    try:
        return start, json.loads(payload)
    except (ValueError, RecursionError) as exc:
        return RecordError(name, start, f"SSE data is not JSON: {exc}")


def _whole(name: str, raw: bytes, base: int = 0) -> Generator[Found, None, None]:
    """JSON document(s) in one text: arrays give their elements, with each element's start line."""
    text = raw.decode("utf-8", "surrogateescape")
    starts = [0, *(m.end() for m in re.finditer("\n", text))]
    counted = [0, base]  # a character of text and the file's bytes before it: moves forward only, never re-encodes

    def line_of(pos: int) -> int:
        return bisect_right(starts, pos)

    def undecodable(pos: int) -> RecordError:
        """The error for the byte that is not UTF-8 at character ``pos`` of text."""
        counted[1] += len(text[counted[0] : pos].encode("utf-8", "surrogateescape"))
        counted[0] = pos
        return RecordError(name, line_of(pos), not_utf8(ord(text[pos]) - 0xDC00, counted[1] + 1))

    decoder = json.JSONDecoder()
    pos, depth = 0, 0  # depth 1 while inside a top-level array
    while True:
        pos = _skip_space_and_comments(text, pos)
        if pos >= len(text):
            if depth:
                yield RecordError(name, line_of(len(text)), "not JSON: the array is not closed")
            return
        char = text[pos]
        if depth and char in ",]":
            depth = 0 if char == "]" else depth
            pos += 1
            continue
        if not depth and char == "[":
            depth, pos = 1, pos + 1
            continue
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            reason = binary_reason(text[pos:], exc.pos - pos)
            reason = reason or f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            yield RecordError(name, line_of(pos), reason)
            pos = _resync(text, exc.pos, pos - starts[line_of(pos) - 1])
            continue
        except RecursionError:
            yield RecordError(name, line_of(pos), "not JSON: nested too deeply")
            return
        if bad := _UNDECODABLE.search(text, pos, end):
            yield undecodable(bad.start())
        else:
            for item in _unwrap(value):
                yield line_of(pos), item
        pos = end


def _skip_space_and_comments(text: str, pos: int) -> int:
    """Past JSON white space and whole ``#`` lines (notes between documents)."""
    while pos < len(text):
        if text[pos] in _JSON_SPACE:
            pos += 1
        elif text[pos] == "#" and not text[text.rfind("\n", 0, pos) + 1 : pos].strip(" \t"):
            newline = text.find("\n", pos)
            pos = len(text) if newline < 0 else newline + 1
        else:
            break
    return pos


def _resync(text: str, pos: int, column: int) -> int:
    """After a broken record: the next line opening an object or array at the broken record's indentation."""
    match = re.compile(rf"\n[ \t]{{{column}}}[{{\[]").search(text, pos)
    return len(text) if match is None else match.start() + 1
