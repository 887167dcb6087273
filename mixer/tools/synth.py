"""Synthetic #chatmixer nights (`mixer synth`): a recorded-stream file generated from a seed.

``synthesize`` is pure: from a ``SynthSpec`` (chat tags, minutes, per-chat rates, seed, start
time) it returns the night's Posts in time order, the same Posts for the same spec. Each
chat runs its hour as hosted chats do: a host posts ``Q1``..``Qn`` every few minutes, each
question sets off a burst of ``An: ...`` answers from participants, chatter and boosts
fill the rest; a few posts are cross-posted (the same key in two chats) and a few are
posted by one person on two networks (same name and text, different keys), which mixer's
dedupe must collapse. Bodies come from a small built-in word list. ``write_night`` writes
the JSON Lines file (``#`` header lines, then one Post a line); the CLI glue is at the end.
Not here: reading recordings (``recorded``), publishing them (``replay``).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from mixer.models import Author, Post, normalize_tag
from mixer.options import add_common
from mixer.settings import Settings
from mixer.tools.stdout import reader_gone
from mixer.tools.transcript import parse_time, showable

NETWORKS = ("x", "mastodon", "bluesky")
DEFAULT_START = 1_767_297_600_000  # 2026-01-01T20:00:00Z: a fixed default keeps the output a function of the seed
CROSS_POST_SHARE = 0.02  # of a chat's posts: copies of another chat's post under the same key
TWIN_SHARE = 0.02  # of a chat's posts: the same person's text again on another network
BOOST_SHARE = 0.08
CHATTER_SHARE = 0.2
BURST_MEAN_S = 60.0  # answers follow their question within about this many seconds (exponential)
# A night is generated whole in memory (sorted, then duplicated across chats) before it is written, at ~0.8 KB a
# post: the caps keep a mistyped --rate or --minutes from eating the machine (1,000,000 posts: 0.8 GB, 16 s here).
MAX_POSTS = 1_000_000
MAX_MINUTES = 7 * 24 * 60.0  # a week
PROGRESS_EVERY = 50_000  # posts written between progress lines

_WORDS = (
    "audience brand budget camp classroom content coffee community customer data dog email event feedback "
    "garden growth habit hashtag idea lesson local market mentor network newsletter plan podcast practice "
    "question reader research review schedule school season share small social story student summer team "
    "teacher tool trust video voice website week workshop writing always better build clear daily early "
    "easy focus great honest learn listen measure often simple start try useful weekly"
).split()
_FIRST = (
    "Ada Ben Cleo Dev Eli Fay Gus Hana Ivo Jo Kai Lena Milo Nia Omar Pia Quinn Rosa Sam Tess Uma Vic Wren Xia Yuri Zoe"
).split()
_LAST = "Adams Baker Chen Diaz Evans Fox Garcia Hill Ito Jones Khan Lopez Moore Ng Okafor Patel Reyes Stone".split()
_MASTODON_HOSTS = ("mastodon.social", "hachyderm.io", "fosstodon.org")


@dataclass(frozen=True, slots=True)
class SynthSpec:
    """What to generate: chats with their rate (posts a minute), how long, from which seed and start (ms)."""

    rates: tuple[tuple[str, float], ...]  # (chat tag, posts per minute), in chat order
    minutes: float = 60.0
    seed: int = 1
    start: int = DEFAULT_START


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    slug: str  # the handle's local part on every network
    host: str  # their Mastodon instance

    def author(self, network: str) -> Author:
        handle = {"x": self.slug, "mastodon": f"{self.slug}@{self.host}", "bluesky": f"{self.slug}.bsky.social"}
        return Author(handle[network], self.name)


def parse_rate(text: str) -> tuple[float, float]:
    """``"R"`` or ``"LO-HI"`` posts a minute per chat as (lo, hi); ValueError unless 0 < lo <= hi, both finite."""
    lo_s, sep, hi_s = text.partition("-")
    try:
        lo = float(lo_s)
        hi = float(hi_s) if sep else lo
    except ValueError:
        raise ValueError(f"--rate must be R or LO-HI posts a minute, got {text!r}") from None
    if not (math.isfinite(hi) and 0 < lo <= hi):
        raise ValueError(f"--rate needs finite numbers 0 < LO <= HI, got {text!r}")
    return lo, hi


def spec_for(
    tags: Sequence[str], rate: tuple[float, float], minutes: float, seed: int, start: int = DEFAULT_START
) -> SynthSpec:
    """A spec giving each chat a rate drawn (from the seed) uniformly in ``rate``; ValueError for bad inputs, a
    night longer than ``MAX_MINUTES``, of more than ``MAX_POSTS`` posts, or ending after 9999."""
    if not tags:
        raise ValueError("no chats: give --chats N or configure [[chats]]")
    if not 0 < minutes <= MAX_MINUTES:  # NaN fails too
        raise ValueError(f"--minutes must be more than 0 and at most {MAX_MINUTES:g} (a week), got {minutes:g}")
    rng = random.Random(f"rates:{seed}")
    rates = tuple((tag, round(rate[0] + (rate[1] - rate[0]) * rng.random(), 3)) for tag in tags)
    posts = sum(max(1.0, r * minutes) for _, r in rates)  # what _chat_night makes, before rounding
    if posts > MAX_POSTS:
        spread = f"{rate[0]:g}" if rate[0] == rate[1] else f"{rate[0]:g}-{rate[1]:g}"
        raise ValueError(
            f"{len(tags)} chat(s) x --rate {spread} x --minutes {minutes:g} is about {posts:,.0f} posts; at most "
            f"{MAX_POSTS:,} in one night: fewer chats, a lower rate or a shorter night"
        )
    if not (showable(start, UTC) and showable(start + int(minutes * 60_000), UTC)):  # the header's, the posts' times
        raise ValueError("--start: the night must start and end within the years 1 to 9999 (UTC)")
    return SynthSpec(rates, minutes, seed, start)


def post_count(spec: SynthSpec) -> int:
    """How many posts ``synthesize(spec)`` makes: ``round(rate x minutes)`` a chat, at least one."""
    return sum(max(1, round(rate * spec.minutes)) for _, rate in spec.rates)


def _people(rng: random.Random, count: int) -> list[Person]:
    people = []
    for i in range(count):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        people.append(Person(f"{first} {last}", f"{first}{last}{i}".lower(), rng.choice(_MASTODON_HOSTS)))
    return people


def _words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(low, high)))


class _Ids:
    """Unique, network-shaped post keys and URLs."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._n = 0

    def make(self, network: str, person: Person) -> tuple[str, str]:
        self._n += 1
        if network == "x":
            tid = 1_800_000_000_000_000_000 + self._n * 1000 + self._rng.randrange(1000)
            return f"x:{tid}", f"https://x.com/{person.slug}/status/{tid}"
        if network == "mastodon":
            sid = 110_000_000_000_000_000 + self._n * 1000 + self._rng.randrange(1000)
            url = f"https://{person.host}/@{person.slug}/{sid}"
            return f"mastodon:https://{person.host}/users/{person.slug}/statuses/{sid}", url
        rkey = f"3l{self._n:010d}{self._rng.randrange(36**3):03x}"
        did = f"did:plc:{person.slug[:24]:x<24}"
        return (
            f"bluesky:at://{did}/app.bsky.feed.post/{rkey}",
            f"https://bsky.app/profile/{person.slug}.bsky.social/post/{rkey}",
        )


def _post(
    ids: _Ids, rng: random.Random, person: Person, chat: str, text: str, created: int, boost_of: str | None = None
) -> Post:
    network = rng.choice(NETWORKS)
    key, url = ids.make(network, person)
    return Post(key, network, (chat,), person.author(network), text, url, created, created, boost_of=boost_of)


def _chat_night(
    chat: str, rate: float, spec: SynthSpec, rng: random.Random, ids: _Ids, people: list[Person]
) -> list[Post]:
    """One chat's hour: numbered questions every few minutes, bursts of answers, chatter and boosts."""
    span_ms = int(spec.minutes * 60_000)
    total = max(1, round(rate * spec.minutes))
    host = rng.choice(people)
    crowd = rng.sample(people, min(len(people), 12 + int(rate)))
    n_q = max(1, min(99, total // 4, round(spec.minutes / 8)))
    gap = span_ms / n_q
    questions = [spec.start + int(gap * k + gap * 0.15 * rng.random()) for k in range(n_q)]
    posts = [
        _post(ids, rng, host, chat, f"Q{k + 1}: what {_words(rng, 4, 9)}? #{chat}", at)
        for k, at in enumerate(questions)
    ]
    originals = list(posts)
    end = spec.start + span_ms - 1
    for _ in range(total - n_q):
        roll = rng.random()
        if roll < BOOST_SHARE:
            original = rng.choice(originals)  # a boost of a boost would boost the original: not made
            booster = rng.choice(crowd)
            created = min(end, original.created + rng.randint(1000, 120_000))
            posts.append(_post(ids, rng, booster, chat, original.text, created, boost_of=original.key))
        elif roll < BOOST_SHARE + CHATTER_SHARE:
            created = spec.start + rng.randrange(span_ms)
            originals.append(_post(ids, rng, rng.choice(crowd), chat, f"{_words(rng, 7, 14)} #{chat}", created))
            posts.append(originals[-1])
        else:
            k = rng.randrange(n_q)
            created = min(end, questions[k] + 1000 + int(rng.expovariate(1 / (BURST_MEAN_S * 1000))))
            text = f"A{k + 1}: {_words(rng, 5, 14)} #{chat}"
            originals.append(_post(ids, rng, rng.choice(crowd), chat, text, created))
            posts.append(originals[-1])
    return posts


def _twins(nights: dict[str, list[Post]], rng: random.Random, ids: _Ids, people: dict[str, Person]) -> None:
    """Turn a few chatter posts into duplicates: a cross-post (same key, another chat), a person on two networks."""
    tags = list(nights)
    last = max(p.created for posts in nights.values() for p in posts)
    boosted = {p.boost_of for posts in nights.values() for p in posts if p.boost_of}
    plans: dict[str, tuple[list[int], int]] = {}  # tag -> (slots to replace, how many of them are cross-posts)
    kept: dict[str, list[Post]] = {}  # tag -> chatter that stays, the originals of every copy
    for tag, posts in nights.items():
        slots = [j for j, p in enumerate(posts) if _is_chatter(p, tag) and p.key not in boosted]
        rng.shuffle(slots)
        n_cross = round(len(posts) * CROSS_POST_SHARE) if len(tags) > 1 else 0
        replaced = slots[: n_cross + round(len(posts) * TWIN_SHARE)]
        plans[tag] = (replaced, n_cross)
        gone = set(replaced)
        kept[tag] = [p for j, p in enumerate(posts) if _is_chatter(p, tag) and j not in gone]
    for i, tag in enumerate(tags):
        posts = nights[tag]
        replaced, n_cross = plans[tag]
        copied: set[str] = set()  # keys already copied into this chat: a second copy would be one post twice
        for j in replaced[:n_cross]:
            other = kept[tags[(i + 1 + rng.randrange(len(tags) - 1)) % len(tags)]]
            if other:
                original = rng.choice(other)
                if original.key not in copied:  # drawn again: the slot keeps its own chatter post
                    copied.add(original.key)
                    posts[j] = original.with_chats((tag,))
        for j in replaced[n_cross:]:
            first = rng.choice(kept[tag]) if kept[tag] else None
            if first is None or first.author.name not in people:
                continue
            person = people[first.author.name]
            network = rng.choice([n for n in NETWORKS if n != first.source])
            key, url = ids.make(network, person)
            created = min(first.created + rng.randint(2000, 60_000), last)
            posts[j] = Post(key, network, (tag,), person.author(network), first.text, url, created, created)


def _is_chatter(post: Post, chat: str) -> bool:
    """A chat's own plain post: no question, answer or boost, not a copy (so duplicating it keeps the Q/A rhythm)."""
    return post.boost_of is None and post.chats == (chat,) and post.text[:1] not in ("Q", "A")


def synthesize(spec: SynthSpec) -> list[Post]:
    """The night's posts in time order (ties in generation order); the same spec always gives the same list."""
    rng = random.Random(f"night:{spec.seed}")
    crowd = _people(rng, max(40, 6 * len(spec.rates)))
    ids = _Ids(rng)
    nights = {tag: _chat_night(tag, rate, spec, rng, ids, crowd) for tag, rate in spec.rates}
    _twins(nights, rng, ids, {p.name: p for p in crowd})
    everything = [p for posts in nights.values() for p in posts]
    return sorted(everything, key=lambda p: p.created)


def header(spec: SynthSpec, count: int) -> list[str]:
    """The ``#`` lines saying what the file is and how to make it again (no wall-clock time: same seed, same bytes)."""
    rates = sorted(r for _, r in spec.rates)
    start = datetime.fromtimestamp(spec.start / 1000, UTC).isoformat().replace("+00:00", "Z")
    return [
        "# synthetic #chatmixer night generated by mixer synth (chatmixer); not real posts",
        f"# seed: {spec.seed}; start: {start}; minutes: {spec.minutes:g}; posts: {count}",
        f"# chats ({len(spec.rates)}): {', '.join(tag for tag, _ in spec.rates)}",
        f"# rate (posts/min per chat): {rates[0]:g}..{rates[-1]:g}",
    ]


def write_night(
    spec: SynthSpec, out: IO[bytes], progress: Callable[[int, int], None] | None = None, every: int = PROGRESS_EVERY
) -> int:
    """Write the night as a recorded-stream file (header, then one Post a line, time order); returns posts.
    ``progress(written, total)`` is called after every ``every`` posts written."""
    posts = synthesize(spec)
    out.write("".join(f"{line}\n" for line in header(spec, len(posts))).encode())
    for n, post in enumerate(posts, 1):
        out.write(json.dumps(post.to_dict(), ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
        if progress is not None and n % every == 0:
            progress(n, len(posts))
    return len(posts)


def count_by_chat(posts: Iterable[Post]) -> dict[str, int]:
    """Lines per chat (a cross-posted copy counts for the chat it was copied to)."""
    out: dict[str, int] = {}
    for post in posts:
        for chat in post.chats:
            out[chat] = out.get(chat, 0) + 1
    return out


def add_synth_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add `mixer synth` (with --config, --redis, -v like every subcommand) to ``subparsers``."""
    parser = subparsers.add_parser(
        "synth",
        help="generate a synthetic #chatmixer night as a recorded-stream file",
        description="Generate a night of hosted chats (numbered questions, bursts of answers, chatter, "
        "boosts, cross-posts) as normalised Post JSON Lines that mixer replay plays. The same --seed "
        "gives the same bytes. See docs/loadtools.md.",
    )
    add_common(parser, "not used by synth (accepted like every subcommand)")
    parser.add_argument("--chats", type=int, metavar="N", help="N synthetic chats chat01.. (default: the config's)")
    parser.add_argument(
        "--minutes", type=float, default=60.0, help=f"length of the night (default 60, at most {MAX_MINUTES:g})"
    )
    parser.add_argument(
        "--rate",
        default="10",
        help=f"posts a minute per chat, R or a spread LO-HI (default 10; at most {MAX_POSTS:,} posts in all)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--start", metavar="ISO", help="when the night starts (default 2026-01-01T20:00:00Z)")
    parser.add_argument("--out", type=Path, metavar="FILE", help="write here (default: stdout)")
    parser.set_defaults(func=synth_command)
    return parser


def synth_command(settings: Settings, args: argparse.Namespace) -> int:
    """`mixer synth`: write the night; 0 when written, 2 for a usage error, 1 when the file cannot be written."""
    try:
        if args.chats is not None:
            if not 1 <= args.chats <= 999:
                raise ValueError("--chats must be 1..999")
            tags: list[str] = [f"chat{i:02d}" for i in range(1, args.chats + 1)]
        else:
            tags = [normalize_tag(c.tag) for c in settings.chats]
        start = DEFAULT_START if not args.start else parse_time(args.start, UTC, "--start")
        spec = spec_for(tags, parse_rate(args.rate), args.minutes, args.seed, start)
    except ValueError as exc:
        print(f"mixer synth: {exc}", file=sys.stderr)
        return 2
    show = sys.stderr.isatty()  # progress only where a person watches, each line replacing the last

    def progress(written: int, total: int) -> None:
        print(f"\r\033[Kmixer synth: {written:,} of {total:,} posts written", end="", file=sys.stderr, flush=True)

    if show:
        print(f"mixer synth: generating {post_count(spec):,} posts", end="", file=sys.stderr, flush=True)
    try:
        if args.out is not None:
            with args.out.open("wb") as out:
                count = write_night(spec, out, progress if show else None)
        else:
            count = write_night(spec, sys.stdout.buffer, progress if show else None)
            sys.stdout.buffer.flush()
    except OSError as exc:
        if args.out is None and isinstance(exc, BrokenPipeError):
            return reader_gone()
        print(f"mixer synth: cannot write {args.out or 'stdout'}: {exc}", file=sys.stderr)
        return 1
    print(
        ("\r\033[K" if show else "")
        + f"mixer synth: {count} posts in {len(tags)} chats"
        + (f" to {args.out}" if args.out else ""),
        file=sys.stderr,
    )
    return 0
