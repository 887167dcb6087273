"""Process lifecycles: what `mixer run`, `ingest`, `serve` and `merge` start, and how they stop.

A shared Redis that does not answer (or an embedded one that cannot start) is one line and exit 1
before anything starts; `mixer run` then publishes where its Redis is (``mixer.runtime``) for the
other commands, and each role prints one line saying what it does and where. Each part is a task;
the process waits for SIGINT/SIGTERM or for a part to fail, then stops in reverse order of start:
the web server first (websockets closed with GOING_AWAY so clients reconnect elsewhere), then the
merge stage and ingest, then the Redis clients, and last the embedded Redis if this process started one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from mixer.embedded import EmbeddedRedis
from mixer.ingest.publish import CursorStore, Publisher, follow_gate
from mixer.ingest.replay import Replayer, ReplayOptions
from mixer.ingest.sources import Source
from mixer.keys import Keys
from mixer.merge.shaping import ShapingStage, shape_forever
from mixer.merge.stage import MergeStage
from mixer.rules import config_rules
from mixer.runtime import RunInfo, ingest_line, live_lines, merge_line, published, redact, redis_problem
from mixer.settings import Settings
from mixer.streams import dedicated_client

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


class RedisUnavailable(Exception):
    """The shared Redis does not answer, or the embedded one cannot start: one line for the user."""


@contextlib.asynccontextmanager
async def redis_url_for(settings: Settings) -> AsyncIterator[str]:
    """The configured Redis once it answers, or an embedded one started now and stopped on exit;
    RedisUnavailable (before anything is yielded) when neither can be had."""
    if settings.redis_url:
        problem = await redis_problem(settings.redis_url)
        if problem is not None:
            raise RedisUnavailable(problem)
        yield settings.redis_url
        return
    server = EmbeddedRedis()
    try:
        # started on this (the main) thread: the parent-death signal is tied to the starting thread
        server.start()
    except (OSError, RuntimeError) as exc:
        raise RedisUnavailable(f"cannot start the embedded Redis: {exc}") from None
    log.info("embedded redis-server (pid %d) at %s", server.pid, server.url)
    try:
        yield server.url
    finally:
        server.stop()


async def ingest_replay(settings: Settings, redis_url: str, files: list[Path], speed: float) -> None:
    """Replay recordings into the chat streams, looping, until cancelled."""
    redis = aioredis.Redis.from_url(redis_url, socket_timeout=10)
    try:
        publisher = Publisher(redis, Keys(settings.key_prefix), settings.chat_tags, settings.chat_maxlen)
        options = ReplayOptions(speed=speed, loop=True, max_gap=settings.demo_max_gap)
        await Replayer(publisher, files, options).run()
    finally:
        await redis.aclose()


def build_sources(settings: Settings, publisher: Publisher, cursors: CursorStore) -> list[Source]:
    """The live followers the settings ask for, one per Mastodon instance, Bluesky, X."""
    from mixer.ingest.hashtags import ChatMatcher

    matcher = ChatMatcher(settings.chat_tags)
    tags = settings.chat_tags
    sources: list[Source] = []
    if settings.mastodon_instances:
        from mixer.ingest.sources.mastodon_follow import MastodonSource

        for instance in settings.mastodon_instances:
            sources.append(
                MastodonSource(
                    publisher,
                    cursors,
                    matcher,
                    instance=instance,
                    tags=tags,
                    token=settings.mastodon_token or None,
                    poll_seconds=settings.mastodon_poll_seconds,
                )
            )
    if settings.bluesky_enabled:
        from mixer.ingest.sources.bluesky_follow import BlueskySource

        sources.append(
            BlueskySource(
                publisher,
                cursors,
                matcher,
                endpoint=settings.bluesky_endpoint,
                appview=settings.bluesky_appview if settings.bluesky_profiles else None,
                profile_ttl=settings.bluesky_profile_ttl_seconds,
            )
        )
    if settings.x_bearer_token:
        from mixer.ingest.sources.x_stream import XSource

        sources.append(
            XSource(publisher, cursors, matcher, bearer_token=settings.x_bearer_token, tags=tags, api=settings.x_api)
        )
    return sources


async def follow_sources(settings: Settings, redis_url: str, stats_every: float = 5.0, log_every: int = 12) -> None:
    """Run every configured follower until cancelled; their counters go to Redis every ``stats_every`` seconds
    (shown by /api/stats) and to the log every ``log_every`` of those."""
    redis = aioredis.Redis.from_url(redis_url, socket_timeout=10)
    keys = Keys(settings.key_prefix)
    publisher = Publisher(redis, keys, settings.chat_tags, settings.chat_maxlen, active=follow_gate(settings))
    sources = build_sources(settings, publisher, CursorStore(redis, keys))
    if not sources:
        log.info("ingest: no live sources configured ([mastodon], [bluesky], [x] in the config)")
    tasks = [asyncio.create_task(source.run(), name=source.name) for source in sources]
    try:
        for rounds in itertools.count(1):
            if tasks:
                done, _ = await asyncio.wait(tasks, timeout=stats_every)
            else:
                done = set()
                await asyncio.sleep(stats_every)
            for task in done:
                raise RuntimeError(f"follower {task.get_name()} stopped") from task.exception()
            if sources:
                stats = {source.name: json.dumps(dict(source.counters)) for source in sources}
                await redis.hset(keys.ingest_stats, mapping=stats)  # type: ignore[arg-type]
            if rounds % log_every == 0:
                for source in sources:
                    log.info("ingest %s: %s", source.name, dict(source.counters))
    finally:
        for task in tasks:
            await stop_task(task)
        await redis.aclose()


async def merge_forever(settings: Settings, redis_url: str) -> None:
    """The merge and shaping stages, each on its own connection, only while this process holds the merge
    lease (one leader among any number of processes), until cancelled. Their writes are fenced by the
    lease, so a leader paused past its lease cannot write after another took over."""
    from mixer.merge.lease import Lease, LeaseLost, new_holder_id

    redis = dedicated_client(redis_url, 1000)
    shaping_conn = dedicated_client(redis_url, 1000)
    lease_conn = dedicated_client(redis_url, 0)  # renewals never queue behind the stages' XREAD BLOCK
    keys = Keys(settings.key_prefix)
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
        stopped; if either fails, the other is cancelled before the lease is let go."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(stage.run())
                group.create_task(shape_forever(shaping))
        except* LeaseLost as lost:
            log.warning("merge: %s; standing by", lost.exceptions[0])

    try:
        lease = Lease(lease_conn, keys.merge_lease, holder)
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


async def stop_task(task: asyncio.Task[None], grace: float = 10.0) -> None:
    """Cancel ``task`` and wait for it, at most ``grace`` seconds: a stuck part never blocks shutdown."""
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=grace)
    if not done:
        log.warning("%s did not stop within %.0f s; exiting without it", task.get_name(), grace)


def _say(*lines: str) -> None:
    print("\n".join(lines), flush=True)


def _announcer(settings: Settings, parts: Parts, redis_url: str) -> Callable[[str], None]:
    """What the fan-out server prints once it listens: where it is live (a split `serve`: on which Redis), and
    with --public every address to open it at and the QR code's link."""
    detail = ""
    if parts.command != "run":
        detail = f"fan-out{' and merge' if parts.merge else ''} on {redact(redis_url)}"
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
        async with redis_url_for(settings) as url:
            info = RunInfo(url, os.getpid(), settings.event_name, settings.key_prefix)
            with published(parts.runtime_dir, info) if parts.runtime_dir else contextlib.nullcontext():
                return await _run_parts(settings, parts, url, stop)
    except RedisUnavailable as exc:
        print(f"mixer {parts.command}: {exc}", file=sys.stderr)
        return 1
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
    if parts.web:
        announce = _announcer(settings, parts, url)
        jobs.append(("web", serve_web(settings, url, parts.host, parts.port, announce, parts.reuse_port)))
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


def spawn_workers(argv: list[str], count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` sibling fan-out processes running ``mixer serve`` with ``argv`` (fan-out only, shared port);
    each dies with this process (PR_SET_PDEATHSIG on Linux)."""
    from mixer.embedded import _die_with_parent

    children = []
    for _ in range(count):
        args = [sys.executable, "-m", "mixer.cli", "serve", *argv, "--no-merge", "--workers", "1", "--reuse-port"]
        children.append(subprocess.Popen(args, preexec_fn=_die_with_parent()))
    return children


def stop_workers(children: list[subprocess.Popen[bytes]], grace: float = 10.0) -> None:
    for child in children:
        child.terminate()
    for child in children:
        try:
            child.wait(grace)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def run_async(main: Awaitable[int]) -> int:
    """Run ``main`` on uvloop where available."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)  # type: ignore[arg-type]


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the `mixer` command")
