"""Strict parsing of what a request names: stream ids and counts, as the HTTP routes take them.

Every parser either returns a value Redis accepts or raises ``web.HTTPBadRequest`` with the reason, so no client
input reaches Redis malformed (a refused id was a 500). Digits are ASCII only: Python's ``\\d`` and ``int()`` also
take Arabic-Indic and other Unicode digits, which Redis does not. A stream id is ``<ms>-<seq>`` (or ``<ms>``), each
part at most 2**64-1. Parsing ``chats`` and ``profile`` stays in ``mixer.fanout.live``; nothing here touches Redis.
"""

from __future__ import annotations

import re

from aiohttp import web

ID_PART_MAX = 2**64 - 1  # what Redis stores in each half of a stream id
MAX_ID = f"{ID_PART_MAX}-{ID_PART_MAX}"  # nothing can come after it
_ID = re.compile(r"[0-9]{1,20}(?:-[0-9]{1,20})?", re.ASCII)
_COUNT = re.compile(r"[0-9]{1,12}", re.ASCII)


def stream_id(raw: str) -> str | None:
    """``raw`` as a full stream id (``ms-seq``; a bare ``ms`` is ``ms-0``), or None when Redis would refuse it."""
    if not _ID.fullmatch(raw):
        return None
    ms, _, seq = raw.partition("-")
    if int(ms) > ID_PART_MAX or int(seq or "0") > ID_PART_MAX:
        return None
    return f"{int(ms)}-{int(seq or '0')}"


def parse_id(raw: str, name: str) -> str:
    """``raw`` as a stream id (see ``stream_id``); 400 naming ``name`` when it is not one."""
    parsed = stream_id(raw)
    if parsed is None:
        raise web.HTTPBadRequest(
            text=f"{name} must be a feed id such as 1700000000000-0 (ASCII digits, each part at most {ID_PART_MAX})"
        )
    return parsed


def parse_count(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    """A count from the query: ``default`` when absent or empty (``limit=``, as ``since=``), else ASCII digits clamped
    to ``[low, high]``; 400 otherwise."""
    if not raw:
        return default
    if not _COUNT.fullmatch(raw):
        raise web.HTTPBadRequest(text=f"{name} must be ASCII digits: {low} to {high}, and beyond reads as the nearest")
    return max(low, min(high, int(raw)))
