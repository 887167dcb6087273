"""One-off: convert the recorded #PSTweetChat export into chatmixer Posts (the demo recording).

Reads ``pstweetchat_all_by_time.derived.jsonl`` from the shared fixtures folder (not part of
a clone: this tool only runs where that folder exists) and writes ``mixer/data/pstweetchat.jsonl``,
one normalised Post a line, preceded by ``#`` lines naming the origin and licence. The output
is committed; rerunning this script reproduces it byte for byte.

    python scripts/convert_pstweetchat.py [SOURCE] [OUTPUT]
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOURCE = Path("/work/shared/fixtures/recorded/pstweetchat_all_by_time.derived.jsonl")
OUTPUT = ROOT / "mixer" / "data" / "pstweetchat.jsonl"
CHAT = "pstweetchat"

ORIGIN = (
    "# origin: jdhitsolutions/PSTweetChat, scripts/pstweetchat.csv at 74e60ab2b817ec156d223c77dd233bf3ef75e95f"
    " (2020-02..2023-03) and 3dfababdef175473aef5e655200f235fc602df99 (2019-02..2020-01)",
    "# licence: MIT",
    "# derived: merged, deduplicated by id, sorted by time; converted to chatmixer Posts by"
    " scripts/convert_pstweetchat.py",
)

# A hashtag: '#' not glued to a preceding word or '&' (HTML entities), then word characters
# (Unicode letters, digits, '_') with at least one non-digit, as Twitter does not link '#2019'.
_HASHTAG = re.compile(r"(?<![\w&])[#\uff03](\w*[^\W\d]\w*)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def hashtags(text: str) -> list[str]:
    """Lower-cased hashtags of ``text`` in order of first appearance, without '#'."""
    return list(dict.fromkeys(tag.casefold() for tag in _HASHTAG.findall(text)))


def unescape(text: str) -> str:
    """Undo the three entities Twitter puts in tweet text, and only those."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def epoch_ms(stamp: str) -> int:
    """Milliseconds since the epoch of an ISO 8601 UTC time stamp, without float rounding."""
    when = datetime.fromisoformat(stamp)
    if when.tzinfo is None:
        raise ValueError(f"time stamp without zone: {stamp!r}")
    return (when - _EPOCH) // timedelta(milliseconds=1)


def convert(row: dict[str, Any]) -> dict[str, Any]:
    """One exported tweet as a Post dict (no feed id: the merge stage assigns it)."""
    tweet_id = str(row["tweet_id"])
    text = unescape(row["text"])
    created = epoch_ms(row["created_at_utc"])
    chats = hashtags(text)
    if CHAT not in chats:
        chats.insert(0, CHAT)
    post: dict[str, Any] = {
        "key": f"x:{tweet_id}",
        "source": "x",
        "chats": chats,
        "author": {"handle": row["screen_name"], "name": row["full_name"] or "", "avatar": None},
        "text": text,
        "url": f"https://twitter.com/{row['screen_name']}/status/{tweet_id}",
        "created": created,
        "at": created,
    }
    media = [m if "://" in m else f"https://{m}" for m in (row.get("media") or "").split()]
    if media:
        post["media"] = media
    return post


def main(argv: list[str]) -> int:
    source = Path(argv[1]) if len(argv) > 1 else SOURCE
    output = Path(argv[2]) if len(argv) > 2 else OUTPUT
    if not source.is_file():
        print(f"{source}: not found (this one-off tool needs the shared fixtures folder)", file=sys.stderr)
        return 2
    lines = list(ORIGIN)
    with source.open(encoding="utf-8") as rows:
        for row in rows:
            if row.strip():
                lines.append(json.dumps(convert(json.loads(row)), ensure_ascii=False, separators=(",", ":")))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines) - len(ORIGIN)} posts to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
