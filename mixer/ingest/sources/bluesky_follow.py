"""The Bluesky follower: one Jetstream websocket for every chat, resuming after the stored ``time_us``.

``BlueskySource`` follows one Jetstream websocket filtered to posts for every chat at once,
matches hashtags locally, publishes in small batches and keeps its ``time_us`` cursor in
Redis (rewound a little on reconnect, the replayed events skipped); deletes and edits are
routed to the chats their post was published in, remembered across restarts. With an
AppView, authors' dids are resolved to profiles by a ``ProfileResolver`` running beside it
(``bluesky_profiles``): from the cache before a batch is published, else by a later Edit.
Parsing lives in ``bluesky``, not here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable

import aiohttp
from redis.exceptions import RedisError
from yarl import URL

from mixer.backoff import Backoff
from mixer.ingest.hashtags import ChatMatcher
from mixer.ingest.publish import CursorStore, Publisher, remember
from mixer.ingest.skips import counted
from mixer.ingest.sources.bluesky import POST_COLLECTION, SOURCE, parse_jetstream
from mixer.ingest.sources.bluesky_appview import retry_after_seconds
from mixer.ingest.sources.bluesky_profiles import ProfileResolver
from mixer.models import Edit, Event, Ignored, Post, Retraction
from mixer.streams import raise_if_cancelling

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "wss://jetstream2.us-east.bsky.network/subscribe"
# Like the other followers' sessions: a connect that hangs, or an HTTP answer (the websocket upgrade, an AppView
# call) that stops arriving, fails instead of waiting for ever. An open websocket is not bound by sock_read (aiohttp
# drops it after the upgrade): ``receive_timeout`` says when a silent socket is dead.
SESSION_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=30)


class SilentSocket(Exception):
    """No message arrived within the receive timeout: the socket is treated as dead."""


class BlueskySource:
    """Follows Jetstream for every chat on one socket; publishes matching posts; resumes after the stored time_us."""

    def __init__(
        self,
        publisher: Publisher,
        cursors: CursorStore,
        matcher: ChatMatcher,
        *,
        endpoint: str = DEFAULT_ENDPOINT,
        backoff: Backoff | None = None,
        receive_timeout: float = 60.0,  # seconds without any message before the socket counts as dead
        heartbeat: float | None = 20.0,  # websocket ping interval; a missing pong closes a half-open socket
        handshake_timeout: float = 30.0,  # seconds for TCP + TLS + HTTP upgrade
        http_timeout: aiohttp.ClientTimeout = SESSION_TIMEOUT,  # the session's: connect, and each read
        rewind_seconds: float = 1.0,  # resume this far before the cursor (Jetstream's advice for gapless replay)
        flush_seconds: float = 0.1,  # a batch is published at most this long after its first event
        flush_events: int = 200,  # ... or as soon as it holds this many events
        cursor_seconds: float = 10.0,  # with nothing to publish, the cursor is stored at most this often
        cursor_events: int = 20_000,  # ... or after this many handled events
        remember: int = 20_000,  # published post keys kept to route their deletes and edits
        appview: str | None = None,  # the AppView that resolves authors' dids to profiles; None: dids stay
        profile_ttl: float = 21_600.0,  # seconds a resolved profile is cached in Redis
        profile_linger: float = 0.25,  # seconds a did waits for others to share its getProfiles call
        profile_backoff: Backoff | None = None,  # delay before asking the AppView again after a failure
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = SOURCE
        self.counters: Counter[str] = Counter()
        self._publisher = publisher
        self._cursors = cursors
        self._matcher = matcher
        self._endpoint = endpoint
        self._backoff = backoff or Backoff(base=1.0, cap=60.0)
        self._receive_timeout = receive_timeout
        self._heartbeat = heartbeat
        self._handshake_timeout = handshake_timeout
        self._http_timeout = http_timeout
        self._rewind_us = int(rewind_seconds * 1_000_000)
        self._flush_seconds = flush_seconds
        self._flush_events = flush_events
        self._cursor_seconds = cursor_seconds
        self._cursor_events = cursor_events
        self._remember = remember
        self._clock = clock
        self._loaded = False
        self._committed: int | None = None  # time_us stored in Redis: everything up to it is handled for good
        self._processed: int | None = None  # highest time_us handled (published, pending or ignored)
        self._floor: int | None = None  # events at or below it were handled before this connection: skipped
        self._pending: list[Event] = []
        self._pending_since = 0.0
        self._last_commit = time.monotonic()
        self._uncommitted = 0
        self._published: OrderedDict[str, tuple[str, ...]] = OrderedDict()  # post key -> its chats, bounded
        self._recall = publisher.recall(SOURCE, remember)  # ... and in Redis, for after a restart
        self._to_recall: dict[str, str] = {}  # published keys of the pending batch -> their chats, comma-joined
        self.profiles = (
            None
            if appview is None
            else ProfileResolver(
                publisher,
                self.counters,
                appview=appview,
                ttl=profile_ttl,
                linger=profile_linger,
                backoff=profile_backoff,
            )
        )

    async def run(self) -> None:
        """Follow until cancelled; each failure is logged and retried after a capped backoff, losing nothing."""
        async with aiohttp.ClientSession(timeout=self._http_timeout) as session:
            resolving = None if self.profiles is None else asyncio.create_task(self.profiles.run(session))
            try:
                while True:
                    problem, retry_after = await self._attempt(session)
                    self.counters["reconnects"] += 1
                    delay = max(self._backoff.next(), retry_after)
                    log.warning("bluesky: %s (%s); reconnecting in %.2f s", problem, self._endpoint, delay)
                    await asyncio.sleep(delay)
            finally:
                if resolving is not None:
                    resolving.cancel()
                    await asyncio.wait((resolving,))

    async def _attempt(self, session: aiohttp.ClientSession) -> tuple[str, float]:
        """One connection's life; returns why it ended and how long the server asked us to wait."""
        retry_after = 0.0
        try:
            if not self._loaded:
                await self._load_cursor()
            problem = await self._follow(session)
        except SilentSocket as exc:
            problem = str(exc)
        except aiohttp.WSServerHandshakeError as exc:
            problem = f"handshake refused: HTTP {exc.status} {exc.message}"
            retry_after = retry_after_seconds(exc.headers)
        except (aiohttp.ClientError, OSError, TimeoutError, RedisError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a bug must not end the follower: log it loudly and go on
            log.exception("bluesky: unexpected failure following %s", self._endpoint)
            problem = f"unexpected {type(exc).__name__}"
        return problem + await self._settle(), retry_after

    async def _load_cursor(self) -> None:
        raw = await self._cursors.get(self.name)
        stored = await self._recall.load()  # deletes of posts published before a restart
        chats_of = ((key, tuple(c for c in chats.split(",") if c)) for key, chats in stored.items())
        remember(self._published, chats_of, self._remember)
        raise_if_cancelling()
        try:
            self._committed = None if raw is None else int(raw)
        except ValueError:
            log.warning("bluesky: stored cursor %r is not a time_us; following live", raw)
            self._committed = None
        self._processed = self._committed
        self._loaded = True

    def url(self) -> str:
        """The subscribe URL for the next connection: posts only, from the rewound cursor when there is one."""
        query = {"wantedCollections": POST_COLLECTION}  # never ``compress``: messages stay plain JSON text
        if self._processed is not None:
            query["cursor"] = str(max(0, self._processed - self._rewind_us))
        return str(URL(self._endpoint).update_query(query))

    async def _follow(self, session: aiohttp.ClientSession) -> str:
        url = self.url()
        self._floor = self._processed
        async with asyncio.timeout(self._handshake_timeout):
            ws = await session.ws_connect(url, heartbeat=self._heartbeat)
        async with ws:
            log.info("bluesky: connected to %s", url)
            receiving: asyncio.Future[aiohttp.WSMessage] | None = None
            last_message = time.monotonic()
            fresh = True
            try:
                while True:
                    if receiving is None:
                        receiving = asyncio.ensure_future(ws.receive())
                    # Wait on the receive without cancelling it, so a flush deadline never tears a read.
                    done, _ = await asyncio.wait((receiving,), timeout=self._wait(last_message))
                    now = time.monotonic()
                    if done:
                        msg, receiving = receiving.result(), None
                        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            return (
                                f"socket closed ({msg.type.name}, code {ws.close_code}, {ws.exception() or 'no error'})"
                            )
                        if fresh:  # this connection delivers: the next failure starts the backoff over
                            self._backoff.reset()
                            fresh = False
                        last_message = now
                        self._handle(msg)
                    elif now - last_message >= self._receive_timeout:
                        raise SilentSocket(f"no message for {self._receive_timeout:g} s: socket treated as dead")
                    await self._flush(now)
            finally:
                if receiving is not None and not receiving.done():
                    receiving.cancel()
                    await asyncio.wait((receiving,))

    def _wait(self, last_message: float) -> float:
        deadline = last_message + self._receive_timeout
        if self._pending:
            deadline = min(deadline, self._pending_since + self._flush_seconds)
        if self._processed != self._committed:
            deadline = min(deadline, self._last_commit + self._cursor_seconds)
        return max(0.0, deadline - time.monotonic())

    def _handle(self, msg: aiohttp.WSMessage) -> None:
        self.counters["received"] += 1
        if msg.type is not aiohttp.WSMsgType.TEXT:
            self._malformed(f"{msg.type.name} frame (compression is never asked for)", repr(msg.data))
            return
        try:
            data = json.loads(msg.data)
        except ValueError as exc:
            self._malformed(f"not JSON ({exc})", msg.data)
            return
        time_us = data.get("time_us") if isinstance(data, dict) else None
        if not isinstance(time_us, int) or isinstance(time_us, bool) or time_us < 0:
            self._malformed("no integer 'time_us'", msg.data)
            return
        if self._floor is not None and time_us <= self._floor:
            self.counters["skipped:replayed"] += 1  # the rewound second, already handled
            return
        self._processed = time_us if self._processed is None else max(self._processed, time_us)
        self._uncommitted += 1
        try:
            events = parse_jetstream(data, self._matcher, int(self._clock() * 1000))
        except Ignored as exc:
            self.counters[f"skipped:{counted(exc.reason, self._endpoint)}"] += 1
            return
        except ValueError as exc:
            self._malformed(str(exc), msg.data)
            return
        for event in events:
            self._route(event)

    def _route(self, event: Event) -> None:
        if isinstance(event, Retraction):
            chats = self._published.pop(event.key, None)
            if chats is None:  # nearly every delete on the network is of a post no chat ever showed
                self.counters["skipped:delete_unpublished"] += 1
                return
            event = Retraction(event.key, event.source, chats)
            if self.profiles is not None:
                self.profiles.forget(event.key)
        else:
            post = event.post if isinstance(event, Edit) else event
            if not post.chats:
                known = self._published.get(post.key)
                if known is None or isinstance(event, Post):
                    self.counters["skipped:no_chat"] += 1
                    return
                post = post.with_chats(known)  # an edit that dropped the tag still updates where it is shown
                event = Edit(post)
            remember(self._published, [(post.key, post.chats)], self._remember)
            self._to_recall[post.key] = ",".join(post.chats)
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append(event)

    async def _flush(self, now: float, force: bool = False) -> None:
        if self._pending and (
            force or len(self._pending) >= self._flush_events or now - self._pending_since >= self._flush_seconds
        ):
            cursor = self._processed
            events: list[Event] = self._pending
            unresolved: list[Post] = []
            if self.profiles is not None:  # known authors go out resolved; the others get an Edit later
                events, unresolved = await self.profiles.resolve(events)
            published = await self._publisher.publish(
                events, cursor=(self.name, str(cursor)), recall=(self._recall, self._to_recall)
            )
            raise_if_cancelling()
            self._pending, self._to_recall = [], {}
            if self.profiles is not None:
                self.profiles.want(unresolved)
            self.counters["published"] += published
            self._commit(cursor, now)
        elif self._processed is not None and self._processed != self._committed:
            if force or now - self._last_commit >= self._cursor_seconds or self._uncommitted >= self._cursor_events:
                cursor = self._processed
                await self._cursors.set(self.name, str(cursor))
                raise_if_cancelling()
                self._commit(cursor, now)

    def _commit(self, cursor: int | None, now: float) -> None:
        self._committed = cursor
        self._last_commit = now
        self._uncommitted = 0

    async def _settle(self) -> str:
        """After a connection ends: publish what is pending, or drop it to be re-read from the stored cursor."""
        try:
            await self._flush(time.monotonic(), force=True)
            return ""
        except Exception as exc:  # Redis down (or a bug): nothing is lost, the cursor was not moved
            dropped, self._pending, self._to_recall = len(self._pending), [], {}
            self._processed = self._committed
            return f"; {dropped} unpublished events dropped, re-read from the stored cursor ({exc})"

    def _malformed(self, reason: str, raw: str) -> None:
        self.counters["malformed"] += 1
        log.warning("bluesky: malformed Jetstream message from %s: %s: %.160r", self._endpoint, reason, raw[:160])
