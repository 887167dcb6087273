"""Profile: where the merge stage's time goes, as `scripts/bench_merge.py` runs it (docs/benchmarks.md "Merge stage").

Fills the chat streams as the benchmark does (the demo recording, N passes), then runs the benchmark's merge stage
(reorder, dedupe, moderation, the 'wall' shaping stage) once, under py-spy when started by it. ``--summary`` reads a
py-spy raw profile and prints each part's share of the CPU samples taken inside the merge run:

    .venv/bin/py-spy record -r 500 -f raw -o /tmp/merge.txt -- .venv/bin/python scripts/profile_merge.py
    .venv/bin/python scripts/profile_merge.py --summary /tmp/merge.txt

py-spy (pip install py-spy) samples the running interpreter from outside, so the figures are the code's and not a
tracing profiler's (cProfile roughly doubles the time of small functions and misplaces the shares).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_merge

from mixer.keys import Keys

# (part, a frame that marks it), first match wins: what each share in docs/benchmarks.md "Merge stage" counts
PARTS = (
    ("decode a chat-stream entry into a Post", "decode_event ("),
    ("moderation (words, accounts, profanity list)", "Moderator.judge ("),
    ("text fingerprints", "fingerprint ("),
    ("read the index and fingerprints for a batch (HMGET)", "MergeStage._load_book ("),
    ("write a batch (one MULTI)", "fenced ("),
    ("dedupe decisions, feed entries built", "Deduper.apply ("),
    ("reorder buffer (hold, release)", "ReorderBuffer."),
    ("read the chat streams (XREAD)", "read_new ("),
    ("shaping stage ('wall')", "ShapingStage.step ("),
)


async def run(url: str, passes: int) -> None:
    keys = Keys(f"bench-{uuid.uuid4().hex[:8]}")
    try:
        posts = await bench_merge.fill(url, keys, passes)
        elapsed, _ = await bench_merge.full(url, keys, posts)
        print(f"merge: {posts:,} posts in {elapsed:.2f} s, {posts / elapsed:,.0f} posts/s")
    finally:
        await bench_merge.scratch_cleanup(url, keys)


def summary(path: Path) -> None:
    """Shares of the samples inside ``bench_merge.full`` (set-up of the stages left out), by part."""
    shares: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not any(f.startswith("full (") and "bench_merge" in f for f in frames):
            continue
        if any(f.startswith(("Moderator.__init__", "MergeStage.__init__", "ShapingStage.__init__")) for f in frames):
            continue
        total += int(count)
        part = next((name for name, mark in PARTS if any(mark in f for f in frames)), "other (event loop, counters)")
        shares[part] += int(count)
    print(f"{total:,} samples in the merge run")
    for part, count in shares.most_common():
        print(f"{count / max(total, 1) * 100:5.1f}%  {part}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=10, help="times over the demo recording (3,350 posts each)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15", help="Redis URL (default %(default)s)")
    parser.add_argument("--summary", type=Path, metavar="RAW", help="summarise a py-spy raw profile instead")
    args = parser.parse_args()
    if args.summary:
        summary(args.summary)
    else:
        asyncio.run(run(args.redis, args.passes))


if __name__ == "__main__":
    main()
