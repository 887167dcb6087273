"""Process lifecycles: what `mixer run`, `ingest`, `serve` and `merge` start, and how they stop.

A shared Redis that does not answer (or an embedded one that cannot start) is one line and exit 1
before anything starts, a state dir that cannot hold the night (``mixer.statedir``) one line and exit 2;
`mixer run` then publishes where its Redis is (``mixer.runtime``) for the other commands, and watches
that its Redis can still write the night; each role prints one line saying what it does and where. Each part is a task;
the process waits for SIGINT/SIGTERM or for a part to fail, then stops in reverse order of start:
the web server first (websockets closed with GOING_AWAY so clients reconnect elsewhere), then the
merge stage and ingest, then the Redis clients, and last the embedded Redis if this process started one.
What lives elsewhere: the sibling processes of `serve --workers` (``mixer.workers``) and the live followers
(``mixer.ingest.follow``), each run here as one more part.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from mixer import connect, health
from mixer.backoff import Backoff
from mixer.embedded import EmbeddedRedis
from mixer.ingest.dropwatch import watch_drops
from mixer.ingest.follow import follow_sources
from mixer.ingest.publish import Publisher
from mixer.ingest.replay import Replayer, ReplayOptions, new_run_tag
from mixer.keymoves import adopt_old_keys_at
from mixer.keys import Keys
from mixer.merge.collector import throughput_collector
from mixer.merge.shaping import ShapingStage, shape_forever
from mixer.merge.stage import MergeStage
from mixer.redact import redact
from mixer.rules import config_rules
from mixer.runtime import RunInfo, ingest_line, live_lines, merge_line, published, redis_problem
from mixer.settings import Settings
from mixer.statedir import StateDirProblem, night_lines, open_night, resumed_line, watch_writes
from mixer.streams import dedicated_client
from mixer.tasks import stop_task
from mixer.workers import spawn_workers, watch_workers

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)


@dataclass
class Parts:
    """What one process runs."""

    ingest_files: list[Path] = field(default_factory=list)  # replayed (looping) into the chat streams
    ingest_speed: float = 1.0
    follow: bool = False  # run the live followers the config names (Mastodon, Bluesky, X)
    merge: bool = False
    web: bool = False
    host: str = "127.0.0.1"
    port: int = 8080
    reuse_port: bool = False  # share the port with sibling fan-out processes (serve --workers)
    command: str = "run"  # the subcommand, for what the process prints
    runtime_dir: Path | None = None  # publish this process's Redis here for the other commands (`mixer run`)
    public: bool = False  # listening on every address: print each address to open
    state_dir: Path | None = None  # keep the embedded Redis's data here (`mixer run`); None: nothing on disk
    fresh: bool = False  # move the night kept in state_dir aside first
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)  # sibling fan-out processes (--workers)
    worker_argv: list[str] = field(default_factory=list)  # what they were started with: a dead one's replacement too
    sibling: bool = False  # one of those siblings: the parent says where the server is live, once


class RedisUnavailable(Exception):
    """The shared Redis does not answer, or the embedded one cannot start: one line for the user."""


@contextlib.asynccontextmanager
async def redis_url_for(settings: Settings, parts: Parts | None = None) -> AsyncIterator[str]:
    """The configured Redis once it answers, or an embedded one started now (keeping its data in
    ``parts.state_dir`` when given) and stopped on exit; RedisUnavailable, or StateDirProblem, before anything is
    yielded when neither can be had."""
    if settings.redis_url:
        problem = await redis_problem(settings.redis_url, settings.redis_wait_seconds)
        if problem is not None:
            raise RedisUnavailable(problem)
        await adopt_old_keys_at(settings.redis_url, Keys(settings.key_prefix))
        yield settings.redis_url
        return
    night = open_night(parts.state_dir, parts.fresh) if parts and parts.state_dir else None
    server = EmbeddedRedis(data_dir=night.directory if night else None, keep_fds=[night.fd] if night else [])
    watching = keeper = None
    try:
        if night:
            _say(*night_lines(night))
        try:
            # started on this (the main) thread: the parent-death signal is tied to the starting thread
            server.start()
        except (OSError, RuntimeError) as exc:
            raise RedisUnavailable(f"cannot start the embedded Redis: {exc}") from None
        log.info("embedded redis-server (pid %d) at %s", server.pid, redact(server.url))
        if night:
            night.started(server.pid)
            await adopt_old_keys_at(server.url, Keys(settings.key_prefix))
            if resumed := await resumed_line(server.url, Keys(settings.key_prefix).feed):
                _say(resumed)
            watching = asyncio.create_task(watch_writes(server.url, night.directory), name="watch-writes")
        keeper = asyncio.create_task(keep_running(server, night.started if night else None), name="keep-redis")
        yield server.url
    finally:
        if keeper:
            await stop_task(keeper)  # before the server stops: stopping it is not a death to recover from
        if watching:
            await stop_task(watching)
        server.stop()
        if night:
            night.close()


async def keep_running(
    server: EmbeddedRedis, started: Callable[[int], None] | None = None, every: float = 0.5, ready_within: float = 120
) -> None:
    """Start the embedded Redis again whenever it exits under us (killed, OOM): in the same directory, so every
    client's retry finds it on the same socket, and with a kept night it loads its append-only file. Until
    cancelled; a server that will not come back is tried again with capped backoff, each failure logged."""
    policy = Backoff(1.0, 30.0)
    while True:
        await asyncio.sleep(every)
        if server.running:
            continue
        log.warning("embedded redis-server exited (code %s); starting it again on the same socket", server.returncode)
        if await server.respawn(ready_within):
            log.warning("embedded redis-server is back (pid %d); the stages reconnect on their own", server.pid)
            policy.reset()
            if started is not None:
                started(server.pid)
            continue
        log.error("embedded redis-server did not come back; the end of its log follows")
        for line in server.log_tail().splitlines():  # a line each: a log record is one line (mixer.redact)
            log.error("embedded redis-server log: %s", line)
        await asyncio.sleep(policy.next())


def _misconf(exc: BaseException | None) -> bool:
    """Whether Redis refused a write, or a transaction, because it cannot write its disk (MISCONF)."""
    while exc is not None:
        if "MISCONF" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


async def ingest_replay(settings: Settings, redis_url: str, files: list[Path], speed: float) -> None:
    """Replay recordings into the chat streams, looping, until cancelled; every pass of this run has keys of its own
    (a run tag: a restart never repeats an earlier run's keys), and a warning says when the merge stage drops all it
    publishes as duplicates. While Redis refuses writes because it cannot write its disk (MISCONF) the replay waits and
    then starts over with the same tag: the merge drops what the feed has."""
    keys = Keys(settings.key_prefix)
    redis = connect.client(redis_url, keys.feed, socket_timeout=10)
    backoff = Backoff(base=1.0, cap=10.0)
    options = ReplayOptions(speed=speed, loop=True, max_gap=settings.demo_max_gap, run_tag=new_run_tag(time.time()))
    published = 0  # by the replays before the current one (a MISCONF start-over)
    replayer: Replayer | None = None
    watching = asyncio.create_task(
        watch_drops(
            redis,
            keys,
            lambda: published + (replayer.progress.published if replayer else 0),
            log.warning,
            # Texts stay as recorded (a wall shows them): a restart soon after an earlier run repeats its texts.
            hint=" (the same texts as an earlier run within 10 minutes: the merge stage folds them into its cards)",
        )
    )
    try:
        while True:
            publisher = Publisher(redis, keys, settings.chat_tags, settings.chat_maxlen)
            if replayer is not None:
                published += replayer.progress.published
            replayer = Replayer(publisher, files, options)
            try:
                await replayer.run()
                return
            except ResponseError as exc:
                if not _misconf(exc):
                    raise
                delay = backoff.next()
                log.warning(
                    "ingest: Redis refuses writes (it cannot write its disk); replay starts over in %.0f s", delay
                )
                await asyncio.sleep(delay)
    finally:
        await stop_task(watching)
        await redis.aclose()


async def merge_forever(settings: Settings, redis_url: str) -> None:
    """The merge and shaping stages, each on its own connection, only while this process holds the merge
    lease (one leader among any number of processes), until cancelled. Their writes are fenced by the
    lease, so a leader paused past its lease cannot write after another took over."""
    from mixer.merge.lease import Lease, LeaseLost, new_holder_id

    keys = Keys(settings.key_prefix)
    redis = dedicated_client(redis_url, 1000, keys.feed)
    shaping_conn = dedicated_client(redis_url, 1000, keys.feed)
    lease_conn = dedicated_client(redis_url, 0, keys.feed)  # renewals never queue behind the stages' XREAD BLOCK
    holder = new_holder_id()
    stage = MergeStage(
        redis,
        keys,
        settings.chat_tags,
        window=settings.window_ms / 1000,
        feed_maxlen=settings.feed_maxlen,
        seen_max=settings.seen_max,
        rules=config_rules(settings),
    )
    shaping = ShapingStage(shaping_conn, keys, settings.profiles, maxlen=settings.feed_maxlen)
    stage.fence = shaping.fence = (keys.merge_lease, holder)

    async def lead() -> None:
        """Both stages resume from their cursors in Redis, so a new leader picks up exactly where the last
        stopped; if either fails, the other is cancelled before the lease is let go. A Redis that refuses writes
        (MISCONF: it cannot write its disk) makes this leader stand by too: its cursors never moved past the feed."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(stage.run())
                group.create_task(shape_forever(shaping))
        except* LeaseLost as lost:
            log.warning("merge: %s; standing by", lost.exceptions[0])
        except* ResponseError as refused:
            if not all(_misconf(exc) for exc in refused.exceptions):
                raise
            log.warning("merge: Redis refuses writes (it cannot write its disk); standing by")
            await asyncio.sleep(1.0)  # the lease is let go and retaken once Redis takes writes again

    try:
        lease = Lease(lease_conn, keys.merge_lease, holder)
        with throughput_collector():  # the stages allocate per post: young collections in larger batches
            while True:  # a lost lease (fenced write refused) goes back to waiting for it
                await lease.hold(lead)
    finally:
        await lease_conn.aclose()
        await shaping_conn.aclose()
        await redis.aclose()


# connections the kernel queues for accept (capped by net.core.somaxconn): a reconnect storm of thousands of
# clients after a restart must wait in the queue; past it (aiohttp's default is 128) each SYN is dropped and that
# client retries 1-3 s later (seen as ramps stalling for seconds in scripts/bench_fanout.py)
LISTEN_BACKLOG = 4096


def build_app(settings: Settings, redis_url: str) -> web.Application:
    """The fan-out app with the webhook's ingest side mounted on ``POST /api/posts``."""
    from mixer.fanout.app import create_app
    from mixer.ingest.hashtags import ChatMatcher
    from mixer.ingest.webhook import PublishingWebhook

    def webhook(redis: aioredis.Redis) -> PublishingWebhook:
        publisher = Publisher(redis, Keys(settings.key_prefix), settings.chat_tags, settings.chat_maxlen)
        return PublishingWebhook(publisher, ChatMatcher(settings.chat_tags))

    return create_app(settings, redis_url, webhook)


async def serve_web(
    settings: Settings,
    redis_url: str,
    host: str,
    port: int,
    started: Callable[[str], None],
    reuse_port: bool = False,
) -> None:
    """The fan-out server until cancelled; websockets are closed with GOING_AWAY on the way out.
    With ``reuse_port`` several processes listen on the same port and the kernel spreads connections."""
    from aiohttp import web  # here, not at the top: the merge and ingest processes never load the web server

    runner = web.AppRunner(build_app(settings, redis_url), handle_signals=False, shutdown_timeout=5)
    await runner.setup()
    try:
        site = web.TCPSite(
            runner, host, port, reuse_address=True, reuse_port=reuse_port or None, backlog=LISTEN_BACKLOG
        )
        await site.start()
        started(f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port}/")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def _say(*lines: str) -> None:
    print("\n".join(lines), flush=True)


def _announcer(settings: Settings, parts: Parts, redis_url: str) -> Callable[[str], None]:
    """What the fan-out server prints once it listens: where it is live (a split `serve`: on which Redis), and
    with --public every address to open it at and the QR code's link."""
    if parts.sibling:
        return lambda web_url: None
    detail = ""
    if parts.command != "run":
        processes = f" in {len(parts.workers) + 1} processes" if parts.workers else ""
        detail = f"fan-out{' and merge' if parts.merge else ''}{processes} on {redact(redis_url)}"
    port = parts.port if parts.public else None
    return lambda web_url: _say(*live_lines(web_url, detail, port, settings.event_link))


async def run_parts(settings: Settings, parts: Parts) -> int:
    """Run the chosen parts until a signal (exit 0) or a part fails (exit 1); exit 1 with one line on stderr,
    before anything starts, when there is no Redis to run on."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with redis_url_for(settings, parts) as url:
            info = RunInfo(url, os.getpid(), settings.event_name, settings.key_prefix)
            with published(parts.runtime_dir, info) if parts.runtime_dir else contextlib.nullcontext():
                return await _run_parts(settings, parts, url, stop)
    except RedisUnavailable as exc:
        print(f"mixer {parts.command}: {exc}", file=sys.stderr)
        return 1
    except StateDirProblem as exc:
        print(f"mixer {parts.command}: {exc}", file=sys.stderr)
        return 2
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _run_parts(settings: Settings, parts: Parts, url: str, stop: asyncio.Event) -> int:
    if parts.command == "ingest":
        _say(ingest_line(settings, url, parts.ingest_files, parts.ingest_speed, parts.follow))
    elif parts.command == "merge":
        _say(merge_line(settings, url))
    jobs: list[tuple[str, Awaitable[None]]] = []
    if parts.ingest_files:
        jobs.append(("ingest", ingest_replay(settings, url, parts.ingest_files, parts.ingest_speed)))
    if parts.follow:
        jobs.append(("follow", follow_sources(settings, url)))
    if parts.merge:
        jobs.append(("merge", merge_forever(settings, url)))
    if parts.command in ("ingest", "merge"):  # no HTTP to probe: a health key for `mixer <role> --check`
        jobs.append(("health", health.beat(url, Keys(settings.key_prefix), parts.command)))
    if parts.web:
        announce = _announcer(settings, parts, url)
        jobs.append(("web", serve_web(settings, url, parts.host, parts.port, announce, parts.reuse_port)))
    if parts.workers:
        argv = parts.worker_argv
        jobs.append(("workers", watch_workers(parts.workers, lambda: spawn_workers(argv, 1)[0])))
    tasks = [asyncio.ensure_future(job) for _, job in jobs]
    for (name, _), task in zip(jobs, tasks, strict=True):
        task.set_name(name)
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    failed = [t for t in tasks if t in done]
    for task in failed:
        exc = task.exception()
        known = isinstance(exc, OSError | RedisError)  # the machine or Redis said no: its message says it all
        log.error("%s stopped: %s", task.get_name(), exc if known else repr(exc), exc_info=None if known else exc)
    for task in reversed(tasks):  # stop in reverse order of start
        await stop_task(task)
    stopper.cancel()
    return 1 if failed else 0


def run_async(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop where available; ``main`` is closed however this ends."""
    try:
        try:
            import uvloop

            factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
        except ImportError:
            factory = None
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(main)
    finally:
        main.close()  # a no-op once it ran; a Ctrl-C before it started would leave it "never awaited" (a warning)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the `mixer` command")
