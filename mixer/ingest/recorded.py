"""Recorded streams: recognising any recorded record, and reading recordings as events.

``parse_record`` is the one place a parsed JSON record is recognised: a normalised Post
(or an edit/retract line as ``mixer normalize`` prints them), an X v1.1 status or stream
notice, an X v2 response/stream message or compliance record, a Mastodon status or
streaming event, a Bluesky Jetstream event. It hands platform payloads to their parser
in ``sources`` (imported lazily) and never parses a platform itself. ``read_events``
reads a file or stdin in any of its shapes (split into records by ``recorded_shapes``:
JSON Lines, a JSON array or documents, a recorded SSE body). A malformed record never
stops a read: it becomes a ``RecordError`` naming file, line and reason, yielded in place
(and logged) so the caller can count it, and every good record around it is still read.
``normalize`` prints recordings back as normalised JSON lines. Pacing and publishing
recordings live in ``replay``, not here.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter, OrderedDict
from collections.abc import Generator, Iterable, MutableMapping
from pathlib import Path
from typing import IO, Any

from mixer.codec import loads
from mixer.ingest.hashtags import ChatMatcher
from mixer.ingest.publish import forget_oldest
from mixer.ingest.recorded_shapes import RecordError as RecordError  # re-exported: it is part of reading
from mixer.ingest.recorded_shapes import json_records
from mixer.ingest.skips import counted
from mixer.models import Edit, Event, Ignored, Post, Retraction, normalize_tag
from mixer.redact import escaped

log = logging.getLogger(__name__)

Group = tuple[Event, ...]  # the events of one record; they share its time
MASTODON_IDS_MAX = 100_000  # Mastodon statuses a reader remembers (id -> uri) to key deletes later in the same file
NO_RECORDS = "no records (empty, or only blank and # comment lines)"
LOGGED_ERRORS = 20  # malformed records of one file logged one by one; the rest are counted (each is yielded)
# X v1.1 stream notices, each an object with this one key (https://developer.x.com/en/docs/x-api/v1/tweets/
# filter-realtime/guides/streaming-message-types): a delete retracts, the others are ignored by x_v1.
_X_V1_NOTICES = frozenset({"delete", "limit", "warning", "scrub_geo", "status_withheld", "user_withheld", "disconnect"})


def record_kind(data: Any) -> str:
    """Which recorded shape a parsed JSON value is; ValueError naming its keys when it is none of them."""
    if not isinstance(data, dict):
        raise ValueError(f"a record is a JSON object, got {_json_type(data)}")
    if data.get("type") in ("edit", "retract"):
        return str(data["type"])
    if "key" in data and "source" in data:
        return "post"
    if "id_str" in data and "user" in data:
        return "x-v1"
    if len(data) == 1 and next(iter(data)) in _X_V1_NOTICES:
        return "x-v1"  # v1.1 stream notices
    if "event" in data and "payload" in data:
        return "mastodon-event"
    if "data" in data or ("id" in data and "action" in data) or isinstance(data.get("errors"), list):
        return "x-v2"  # response / stream message, compliance record, or stream error message
    if all(k in data for k in ("id", "uri", "account", "content")):
        return "mastodon-status"
    if all(k in data for k in ("did", "time_us", "kind")):
        return "bluesky"
    keys = sorted(escaped(str(key)) for key in data)  # a key is the sender's text: "\n" must not start a log line
    shown = ", ".join(keys[:12]) + (", ..." if len(keys) > 12 else "")
    raise ValueError(f"unrecognised record: keys {shown}" if keys else "unrecognised record: an empty object")


def parse_record(
    data: Any, matcher: ChatMatcher, now_ms: int, *, mastodon_uris: MutableMapping[str, str] | None = None
) -> list[Event]:
    """The events of one parsed JSON record; ValueError says why it is none, Ignored that it is no post.

    A normalised Post keeps its chats (and ``at``) exactly as recorded, so normalising a
    normalised file changes nothing; platform payloads get their chats from ``matcher``.
    ``mastodon_uris`` is the reader's memory of Mastodon statuses read before (local id ->
    uri; this adds to it, the caller bounds it): a Mastodon ``delete`` event, which names
    only the local id, retracts ``mastodon:<uri>`` of a status found there.
    """
    kind = record_kind(data)
    try:
        if kind == "post":
            return [Post.from_dict(data)]
        if kind == "edit":
            return [Edit(Post.from_dict(data.get("post")))]
        if kind == "retract":
            return [_retraction(data)]
        if kind == "x-v1":
            from mixer.ingest.sources import x_v1

            return x_v1.parse_v1(data, matcher, now_ms)
        if kind == "x-v2":
            from mixer.ingest.sources import x_v2

            return x_v2.parse_v2(data, matcher, now_ms)
        if kind == "mastodon-event":
            from mixer.ingest.sources import mastodon

            payload = data["payload"]
            if isinstance(payload, int) and not isinstance(payload, bool):
                payload = str(payload)  # a delete event's payload is the bare status id
            if not isinstance(data["event"], str) or not isinstance(payload, str | dict):
                raise ValueError("a streaming event needs a string 'event' and a string or object 'payload'")
            known = {} if mastodon_uris is None else mastodon_uris
            return mastodon.parse_event(data["event"], payload, matcher, now_ms, known_uris=known, seen_uris=known)
        if kind == "mastodon-status":
            from mixer.ingest.sources import mastodon

            known = {} if mastodon_uris is None else mastodon_uris
            return mastodon.parse_status(data, matcher, now_ms, known_uris=known, seen_uris=known)
        from mixer.ingest.sources import bluesky

        return bluesky.parse_jetstream(data, matcher, now_ms)
    except (ValueError, Ignored):
        raise
    except ImportError as exc:
        raise ValueError(f"{kind} record: its parser is not available ({exc})") from None
    except Exception as exc:  # a parser bug must not stop a read; it is logged with its traceback
        log.warning("the %s parser failed on a record", kind, exc_info=True)
        raise ValueError(f"{kind} record could not be parsed: {type(exc).__name__}: {exc}") from None


def _retraction(data: dict[str, Any]) -> Retraction:
    key, source, chats = data.get("key"), data.get("source"), data.get("chats", [])
    if not isinstance(key, str) or not key or not isinstance(source, str) or not source:
        raise ValueError("a retract record needs non-empty string 'key' and 'source'")
    if not isinstance(chats, list) or not all(isinstance(c, str) for c in chats):
        raise ValueError("'chats' must be a list of strings")
    return Retraction(key, source, tuple(dict.fromkeys(normalize_tag(c) for c in chats)))


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def parse_line(raw: bytes, matcher: ChatMatcher | None = None, now_ms: int = 0) -> list[Event] | None:
    """The events of one JSON Lines line, None for a blank or ``#`` line; ValueError/Ignored as parse_record."""
    text = raw.strip()
    if not text or text.startswith(b"#"):
        return None
    return parse_record(loads(text), matcher or ChatMatcher(None), now_ms)


def read_grouped(
    path: str | Path,
    matcher: ChatMatcher,
    now_ms: int,
    log_errors: bool = True,
    *,
    ignored: Counter[str] | None = None,
) -> Generator[Group | RecordError, None, None]:
    """Each record's events as one tuple (or its RecordError), in file order; never raises for content.

    With ``log_errors`` the first ``LOGGED_ERRORS`` malformed records of the file are logged at WARNING, the next one
    saying that the rest are only counted.

    Ignored records (likes, notices) yield nothing and are counted in ``ignored`` by reason.
    ``-`` is stdin. JSON Lines and SSE are read lazily; the file is closed when the
    iterator ends or is closed; a missing file raises OSError on the first ``next()``.
    """
    name = str(path)
    mastodon_uris: OrderedDict[str, str] = OrderedDict()  # this file's statuses, to key their deletes
    logged = 0  # malformed records met (and logged, up to LOGGED_ERRORS)
    for item in json_records(name):
        if isinstance(item, RecordError):
            error = item
        else:
            line, data = item
            try:
                events = parse_record(data, matcher, now_ms, mastodon_uris=mastodon_uris)
            except Ignored as skip:
                if ignored is not None:
                    ignored[counted(skip.reason, name)] += 1
                continue
            except ValueError as exc:  # its reason may quote the record (an id, an event name): one printable line
                error = RecordError(name, line, escaped(str(exc)))
            else:
                forget_oldest(mastodon_uris, MASTODON_IDS_MAX)
                if events:
                    yield tuple(events)
                continue
        if log_errors:
            logged += 1
            if logged <= LOGGED_ERRORS:
                log.warning("skipped malformed record %s", error)
            elif logged == LOGGED_ERRORS + 1:  # a file that is no recording at all must not flood the log
                log.warning("skipped malformed record %s; further malformed records of %s are counted, not logged",
                            error, name)  # fmt: skip
        yield error


def read_events(
    path: str | Path,
    matcher: ChatMatcher,
    now_ms: int,
    log_errors: bool = True,
    *,
    ignored: Counter[str] | None = None,
) -> Generator[Event | RecordError, None, None]:
    """Every event of every record in file order, a malformed record as RecordError; see ``read_grouped``."""
    for item in read_grouped(path, matcher, now_ms, log_errors, ignored=ignored):
        if isinstance(item, RecordError):
            yield item
        else:
            yield from item


def read_records(path: str | Path, *, log_errors: bool = True) -> Generator[Event | RecordError, None, None]:
    """``read_events`` with every hashtag a chat, stamped now (for callers reading normalised recordings)."""
    yield from read_events(path, ChatMatcher(None), int(time.time() * 1000), log_errors)


def event_dict(event: Event) -> dict[str, Any]:
    """The JSON line of an event as ``mixer normalize`` prints it (and ``parse_record`` reads back)."""
    if isinstance(event, Post):
        return event.to_dict()
    if isinstance(event, Edit):
        return {"type": "edit", "post": event.post.to_dict()}
    out: dict[str, Any] = {"type": "retract", "key": event.key, "source": event.source}
    if event.chats:
        out["chats"] = list(event.chats)
    return out


def normalize(paths: Iterable[str], matcher: ChatMatcher, out: IO[bytes], err: IO[str]) -> int:
    """Print every event of every file as a JSON line on out, each bad record as ``file:line: reason`` on err, and
    ``file: no records (...)`` for a file that holds none.

    Returns the exit status: 1 when something failed and nothing at all could be read, else 0 (an empty file too:
    its output, nothing, is right).
    """
    good = failed = 0
    ignored: Counter[str] = Counter()
    try:
        for path in paths:
            reader = read_grouped(path, matcher, int(time.time() * 1000), log_errors=False, ignored=ignored)
            before = (good, failed, ignored.total())
            while True:
                try:
                    item = next(reader, None)
                except OSError as exc:
                    failed += 1
                    print(f"{path}: cannot read: {exc.strerror or exc}", file=err, flush=True)
                    break
                if item is None:
                    break
                if isinstance(item, RecordError):
                    failed += 1
                    print(item, file=err, flush=True)
                    continue
                good += 1
                out.write(b"".join(_json_line(event_dict(event)) for event in item))
                if path == "-":
                    out.flush()  # a live pipe sees each record as it comes
            if (good, failed, ignored.total()) == before:
                print(f"{path}: {NO_RECORDS}", file=err, flush=True)
        out.flush()
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return 0
    log.debug("normalize: %d records read, %d unreadable, ignored: %s", good, failed, dict(ignored))
    return 1 if failed and not (good or ignored) else 0


def _json_line(obj: dict[str, Any]) -> bytes:
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode() + b"\n"
    except UnicodeEncodeError:  # a lone surrogate from the payload: escaped, the line stays valid UTF-8 JSON
        return json.dumps(obj, separators=(",", ":")).encode() + b"\n"
