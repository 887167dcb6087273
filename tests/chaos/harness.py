"""The fault suite: a split deployment under steady load, one fault at a time, each followed by the same checks.

Used by ``scripts/chaos`` (every fault in turn on one deployment, a table at the end) and by
``tests/chaos/test_faults.py`` (one fresh deployment per fault, marker ``chaos``). After each fault it checks,
from the chat streams (the input) and the feed: no input key lost, no post key twice in the feed, each screen
gap-free (or told ``reset``), no role that exited by itself, and each fan-out replica's RSS within
``RSS_GROWTH_MB`` of what it was when the fault began. docs/reliability.md has the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from mixer.streams import id_key, last_id
from tests.chaos.deploy import CHATS, Deployment, Role, rss_mb
from tests.chaos.ledger import EventsScreen, Ledger, Screen, SlowClients

SLOW_CLIENTS = 12  # per replica during the slow-client fault, half /ws?since=0-0, half /events?since=0-0
# A replica may grow this much over a fault: 2 MiB per never-reading client (its backlog_bytes, the kernel's
# buffers, the catch-up page being read) and 16 MiB for everything else. Unbounded, each would hold the whole feed.
RSS_GROWTH_MB = 16.0 + 2.0 * SLOW_CLIENTS
# The history published before the slow clients: ~2,700 posts (10 minutes at 67 a minute in each of 4 chats), each
# text padded by HISTORY_PAD characters, so ~9 MB on the wire: three times what the kernel's send buffer and
# backlog_bytes hold for a client (so every one is cut off), and 12 clients pinning what is left would be far over
# RSS_GROWTH_MB. Bytes, not posts, are what this fault needs: 2,700 bigger posts publish, merge and settle in a
# fraction of the time the same bytes took as 16,000 short ones. Bigger still, the catch-up pages (100 posts a
# client) would weigh on RSS themselves.
HISTORY_MINUTES, HISTORY_RATE, HISTORY_PAD = 10, 67, 3_000
WARM_UP_POSTS = 100  # posts in the feed before the first fault
SETTLE_S = 30.0  # how long every input key read so far may take to be accounted for


@dataclass
class Options:
    outage_s: float = 30.0  # how long Redis stays down in the outage fault
    release_s: float = 30.0  # how long the replicas may take to let go of never-reading clients (cutoff 4 s here)


@dataclass
class Outcome:
    fault: str
    took: str = ""  # takeover / resume / recovery seconds, as the fault measures them
    inputs: int = 0
    lost: int = 0
    twice: int = 0
    screens: str = ""
    rss: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def row(self) -> str:
        verdict = "held" if self.ok else "FAILED: " + "; ".join(self.problems)
        cells = (self.fault, self.took, f"{self.inputs:,}", str(self.lost), str(self.twice), self.screens, self.rss)
        return "| " + " | ".join((*cells, verdict)) + " |"


HEADER = "| fault | took | input keys | lost | twice | screens | serve RSS MB (start -> peak) | outcome |"


def table(outcomes: list[Outcome]) -> str:
    return "\n".join([HEADER, "|" + "---|" * 8, *(o.row() for o in outcomes)])


class Chaos:
    """A running deployment with its ledger, screens and RSS sampler; ``run(fault)`` applies one fault."""

    def __init__(self, dep: Deployment, opts: Options) -> None:
        self.dep, self.opts = dep, opts
        self.redis = aioredis.Redis.from_url(dep.redis.url, socket_timeout=10, socket_connect_timeout=2)
        self.ledger = Ledger(self.redis, dep.keys, CHATS, recording=dep.recording_keys())
        self.screens: list[Screen] = []
        self.deaths_seen = 0

    async def __aenter__(self) -> Chaos:
        if await self.ledger.wait_feed_after("0-0", 60) is None:
            raise AssertionError("no post reached the feed within 60 s of the start: " + self.logs())
        deadline = time.monotonic() + 60
        while len(self.ledger.card_ids) < WARM_UP_POSTS:  # under load before the first fault, not at its first post
            if time.monotonic() > deadline:
                raise AssertionError(f"the feed has {len(self.ledger.card_ids)} posts after 60 s: {self.logs()}")
            await self.ledger.wait_feed_after(self.ledger.card_ids[-1] if self.ledger.card_ids else "0-0", 5)
            await self.ledger.read()
        since = await self.ledger.newest_feed_id()
        urls = [self.dep.url(role) for role in self.dep.serves]
        self.screens = [
            Screen("ws-1", urls, since),
            Screen("ws-2", urls[::-1], since),
            EventsScreen("sse", urls, since),
        ]
        for screen in self.screens:
            screen.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for screen in self.screens:
            await screen.stop()
        await self.redis.aclose()

    def logs(self) -> str:
        return "; ".join(f"{r.name}: {r.last_line()}" for r in self.dep.roles.values())

    async def run(self, name: str) -> Outcome:
        outcome = Outcome(name)
        log_sizes = {r.name: r.log_path.stat().st_size for r in self.dep.roles.values()}
        start_rss = {r.name: rss_mb(r.pid) for r in self.dep.serves}
        peak = dict(start_rss)
        sampling = asyncio.create_task(self._sample(peak))
        try:
            await FAULTS[name](self, outcome)
            await self.check(outcome)
        except Exception as exc:  # a fault that could not be carried out is an outcome too
            outcome.problems.append(f"{type(exc).__name__}: {exc}")
        finally:
            sampling.cancel()
            await asyncio.gather(sampling, return_exceptions=True)
        for role in self.dep.roles.values():
            with role.log_path.open("rb") as log:
                log.seek(log_sizes[role.name])
                errors = [line for line in log.read().decode(errors="replace").splitlines() if _is_error(line)]
            if errors:
                outcome.problems.append(f"{role.name} logged {len(errors)} ERROR/traceback lines: {errors[0][:200]}")
        outcome.rss = ", ".join(f"{n[-1].upper()} {start_rss[n]:.0f} -> {peak[n]:.0f}" for n in start_rss)
        for role_name, was in start_rss.items():
            if peak[role_name] > was + RSS_GROWTH_MB:
                grew = peak[role_name] - was
                outcome.problems.append(f"{role_name} RSS grew {grew:.0f} MB (bound {RSS_GROWTH_MB:.0f})")
        return outcome

    async def _sample(self, peak: dict[str, float]) -> None:
        while True:
            for role in self.dep.serves:
                if role.proc is not None and role.proc.returncode is None:
                    peak[role.name] = max(peak[role.name], rss_mb(role.pid))
            await asyncio.sleep(0.25)

    async def check(self, outcome: Outcome) -> None:
        lost = await self.ledger.settle(SETTLE_S)
        twice = self.ledger.twice()
        outcome.inputs, outcome.lost, outcome.twice = len(self.ledger.inputs), len(lost), len(twice)
        if lost:
            outcome.problems.append(f"lost {len(lost)} (e.g. {lost[:3]})")
        if twice:
            outcome.problems.append(f"twice {len(twice)} (e.g. {twice[:3]})")
        await self._screens_caught_up()
        notes = []
        for screen in self.screens:
            gaps = screen.gaps(self.ledger.card_ids)
            notes.append(
                f"{screen.received:,} seen, {gaps} missed"
                + "".join(f", {n} {what}" for n, what in ((screen.resets, "reset"), (screen.lags, "lag")) if n)
            )
            if gaps or screen.repeats:
                outcome.problems.append(f"{screen.name}: {gaps} posts missing, {screen.repeats} repeated")
        outcome.screens = "; ".join(notes)
        deaths = self.dep.deaths()[self.deaths_seen :]
        self.deaths_seen += len(deaths)
        outcome.problems += [f"died by itself: {d}" for d in deaths]

    async def _screens_caught_up(self, timeout: float = 20) -> None:
        """Wait until each screen holds the feed's newest card as read (polling: screens are counters)."""
        newest = self.ledger.card_ids[-1] if self.ledger.card_ids else "0-0"
        deadline = time.monotonic() + timeout
        while any(id_key(s.last) < id_key(newest) for s in self.screens):
            if time.monotonic() > deadline:
                return  # the gap count then says what they lack
            await asyncio.sleep(0.1)

    def resume_after(self, since: float) -> float | None:
        times = [took for screen in self.screens for dropped, took in screen.resumes if dropped >= since]
        return max(times) if times else None


def _is_error(line: str) -> bool:
    """An ERROR record or a traceback: a fault the deployment rides out is logged at WARNING at most."""
    return " ERROR " in line or line.startswith("Traceback")


async def kill_role(chaos: Chaos, outcome: Outcome, role: Role) -> None:
    after = await chaos.ledger.newest_feed_id()
    killed = time.monotonic()
    await chaos.dep.restart(role)
    if role.port is not None:
        await chaos.dep.ready(role)
        await _screens_resumed(chaos, killed)
    took = await chaos.ledger.wait_feed_after(after, 30)
    outcome.took = "feed moving" if took is not None else "feed stuck"
    if took is None:
        outcome.problems.append("no new feed entry within 30 s")
    resumed = chaos.resume_after(killed)
    if resumed is not None:
        outcome.took = f"screens resumed in {resumed:.2f} s"


async def _screens_resumed(chaos: Chaos, since: float, timeout: float = 15) -> None:
    """Wait (polling: screens are counters) until every screen that lost its socket after ``since`` is back."""
    deadline = time.monotonic() + timeout
    while any(s.dropped is not None and s.dropped >= since for s in chaos.screens):
        if time.monotonic() > deadline:
            raise AssertionError(f"a screen did not get back within {timeout:g} s")
        await asyncio.sleep(0.05)


async def kill_ingest(chaos: Chaos, outcome: Outcome) -> None:
    role = chaos.dep.roles["ingest"]
    killed = time.monotonic()
    await role.kill()
    streams = {chaos.dep.keys.chat(chat): await last_id(chaos.redis, chaos.dep.keys.chat(chat)) for chat in CHATS}
    await role.start()
    while time.monotonic() - killed < 30:  # the restarted replay's first publish, awaited with XREAD BLOCK
        if await chaos.redis.xread(streams, count=1, block=1000):  # type: ignore[arg-type]
            outcome.took = f"publishing again {time.monotonic() - killed:.1f} s after the kill"
            return
    outcome.problems.append("ingest published nothing within 30 s of its restart")


async def kill_leader(chaos: Chaos, outcome: Outcome, *, standby: bool = False) -> None:
    raw: Any = await chaos.redis.get(chaos.dep.keys.merge_lease)
    holder = raw.decode() if isinstance(raw, bytes) else str(raw or "")
    pid = holder.rsplit(":", 2)[1] if holder.count(":") >= 2 else ""  # the value is host:pid:random
    leader = next((r for r in chaos.dep.merges if str(r.pid) == pid), None)
    if leader is None:
        outcome.problems.append(f"no merge process holds the lease ({holder!r})")
        return
    role = next(r for r in chaos.dep.merges if r is not leader) if standby else leader
    after = await chaos.ledger.newest_feed_id()
    await role.kill()
    took = await chaos.ledger.wait_feed_after(after, 30)
    await role.start()
    outcome.took = f"takeover {took:.1f} s" if took is not None and not standby else "feed moving"
    if took is None:
        outcome.problems.append("no feed entry within 30 s of the kill")


async def kill_standby(chaos: Chaos, outcome: Outcome) -> None:
    await kill_leader(chaos, outcome, standby=True)


async def kill_serve_a(chaos: Chaos, outcome: Outcome) -> None:
    await kill_role(chaos, outcome, chaos.dep.serves[0])


async def kill_serve_b(chaos: Chaos, outcome: Outcome) -> None:
    await kill_role(chaos, outcome, chaos.dep.serves[1])


async def redis_down(chaos: Chaos, outcome: Outcome, seconds: float) -> None:
    after = await chaos.ledger.newest_feed_id()
    await chaos.dep.redis.stop()
    await asyncio.sleep(seconds)  # the outage itself: its length is the point
    await chaos.dep.redis.start()
    back = time.monotonic()
    took = await chaos.ledger.wait_feed_after(after, 45)
    outcome.took = f"feed moving {took:.1f} s after Redis is back" if took is not None else "feed stuck"
    if took is None:
        outcome.problems.append("no new feed entry within 45 s of Redis coming back")
    await asyncio.gather(*(chaos.dep.ready(r, 30) for r in chaos.dep.serves))
    resumed = chaos.resume_after(back - seconds - 1)
    if resumed is not None:
        outcome.took += f", screens resumed in {resumed:.2f} s"


async def restart_redis(chaos: Chaos, outcome: Outcome) -> None:
    await redis_down(chaos, outcome, 0)


async def stop_redis(chaos: Chaos, outcome: Outcome) -> None:
    outcome.fault = f"stop Redis for {chaos.opts.outage_s:g} s"
    await redis_down(chaos, outcome, chaos.opts.outage_s)


async def never_reading_clients(chaos: Chaos, outcome: Outcome) -> None:
    """A long history first (a `mixer synth` night padded to big posts, published at full speed), then clients
    that ask for all of it with since=0-0 and never read, held past cutoff_seconds, then gone."""
    args = ("--minutes", str(HISTORY_MINUTES), "--rate", str(HISTORY_RATE), "--seed", "61")
    history = padded(await chaos.dep.synth("history.jsonl", *args), HISTORY_PAD, set(chaos.ledger.recording))
    await chaos.dep.replay_once(history)
    await chaos.ledger.settle(60)  # the whole history merged: the feed is long before the clients come
    slow, bound = SlowClients(), chaos.opts.release_s
    try:
        for role in chaos.dep.serves:
            assert role.port is not None
            for i in range(SLOW_CLIENTS):
                path, websocket = ("/ws?since=0-0", True) if i % 2 else ("/events?since=0-0", False)
                await slow.attach(("127.0.0.1", role.port), path, websocket)
        attached = time.monotonic()
        while True:  # the servers' own cut-off is what is awaited: it offers no event to a client that never reads
            held, took = await slow.still_held(), time.monotonic() - attached
            if not held or took > bound:
                break
            await asyncio.sleep(0.2)
    finally:
        slow.close()
    await asyncio.sleep(2)  # memory held after they left counts too
    if held:
        outcome.problems.append(f"{held} of {2 * SLOW_CLIENTS} never-reading clients still held after {bound:g} s")
    feed = len(chaos.ledger.card_ids)
    outcome.took = f"{2 * SLOW_CLIENTS - held} of {2 * SLOW_CLIENTS} cut off in {took:.1f} s; feed {feed:,} posts"


def padded(path: Path, pad: int, avoid: set[str]) -> Path:
    """``path``'s posts with ``pad`` more characters of words at the end of each text (beside it), less those whose
    key or ``boost_of`` is in ``avoid``: two `mixer synth` seeds can make the same key, and a key of the ingest's
    night published early would look to ``Ledger.holes`` as if the ingest had skipped every key before it."""
    filler = (" lorem ipsum dolor sit amet" * (pad // 27 + 1))[:pad]
    lines = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            post = json.loads(line)
            if post["key"] in avoid or post.get("boost_of") in avoid:
                continue
            post["text"] += filler
            line = json.dumps(post)
        lines.append(line + "\n")
    out = path.with_name(f"{path.stem}-padded{path.suffix}")
    out.write_text("".join(lines))
    return out


FAULTS: dict[str, Callable[[Chaos, Outcome], Awaitable[None]]] = {
    "kill -9 ingest": kill_ingest,
    "kill -9 merge leader": kill_leader,
    "kill -9 merge standby": kill_standby,
    "kill -9 serve A": kill_serve_a,
    "kill -9 serve B": kill_serve_b,
    "restart Redis": restart_redis,
    "stop Redis": stop_redis,
    "never-reading clients": never_reading_clients,
}


async def run_faults(directory: Path, names: list[str], opts: Options, fresh: bool = False) -> list[Outcome]:
    """Each fault in ``names`` in turn on one deployment (or a fresh one each with ``fresh``)."""
    outcomes: list[Outcome] = []
    groups = [[n] for n in names] if fresh else [names]
    for i, group in enumerate(groups):
        where = directory / f"run{i}"
        where.mkdir(parents=True, exist_ok=True)
        async with Deployment(where) as dep, Chaos(dep, opts) as chaos:
            for name in group:
                outcomes.append(await chaos.run(name))
    return outcomes


def log_tails(directory: Path, lines: int = 5) -> str:
    out = []
    for log in sorted(directory.rglob("*.log")):
        with contextlib.suppress(OSError):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.relative_to(directory)}\n" + "\n".join(tail))
    return "\n".join(out)
