"""The Mastodon follower: one instance, every chat's hashtag; streaming with a token, polling without.

``MastodonSource.run`` keeps one cursor per tag (``mastodon:<host>:<tag>``: the highest
status id published) in Redis, written in the same transaction as the posts. Without a
token it polls ``/api/v1/timelines/tag/<tag>?min_id=<cursor>`` every ``poll_seconds``,
page by page, oldest first, honouring ``X-RateLimit-*`` and 429; each tag on its own schedule, a few
requests at a time per instance, so a slow tag holds up no other. With a token it
subscribes to the hashtag streams (one websocket per instance; server-sent events per
tag when the websocket upgrade is refused) and, since streaming has no resume, first
backfills every tag from its cursor on each (re)connect; statuses already published in
this process are recognised by id and not repeated. Parsing lives in ``mastodon``, rate-limited
REST requests in ``mastodon_rest``, the streaming wire formats and readers in ``mastodon_stream``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections import ChainMap, Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from redis.exceptions import RedisError

from mixer.backoff import Backoff
from mixer.ingest.hashtags import ChatMatcher, normalize_hashtag
from mixer.ingest.publish import CursorStore, Publisher, remember
from mixer.ingest.skips import counted
from mixer.ingest.sources.mastodon import id_order, parse_event, parse_status
from mixer.ingest.sources.mastodon_rest import MastodonRest, SourceError
from mixer.ingest.sources.mastodon_stream import Item, StreamEnded, parse_ws_message, read_event_stream, read_websocket
from mixer.models import Event, Ignored
from mixer.streams import raise_if_cancelling

log = logging.getLogger(__name__)

PAGE_LIMIT = 40  # the most statuses Mastodon returns per timeline page
_NO_WEBSOCKET = frozenset({200, 400, 404, 405, 426})  # the upgrade was refused: this server speaks SSE only
_FAILURES = (aiohttp.ClientError, OSError, RedisError, SourceError, StreamEnded)


class MastodonSource:
    """Follows ``tags`` on one instance; every status is published once, in id order per tag, across restarts."""

    def __init__(
        self,
        publisher: Publisher,
        cursors: CursorStore,
        matcher: ChatMatcher,
        *,
        instance: str,
        tags: Sequence[str],
        token: str | None = None,
        poll_seconds: float = 10.0,
        backoff: Backoff | None = None,
        initial_backfill: int = PAGE_LIMIT,  # statuses published on a tag's very first start (0: only new ones)
        known_max: int = 10_000,  # published status ids remembered (dedupe of streamed statuses, id -> uri)
        max_rate_wait: float = 900.0,  # never wait longer than this for a rate-limit reset (clock skew guard)
        read_timeout: float = 60.0,  # a stream silent this long (no event, no heartbeat) is reconnected
        heartbeat: float = 30.0,  # websocket ping interval; an unanswered ping closes the socket
        request_timeout: float = 30.0,  # seconds for a whole REST answer (a timeline page, the instance document)
        max_requests: int = 4,  # timeline requests in flight at once: a slow tag takes one, the others go on
        clock: Callable[[], float] = time.time,  # wall clock, to compare with the server's reset times
    ) -> None:
        base = instance if "://" in instance else f"https://{instance}"
        self._base = base.rstrip("/")
        self.host = urlsplit(self._base).netloc
        self.name = f"mastodon:{self.host}"
        self.counters: Counter[str] = Counter()
        self.tags = tuple(dict.fromkeys(t for t in (normalize_hashtag(tag) for tag in tags) if t))
        self._publisher = publisher
        self._cursors = cursors
        self._matcher = matcher
        self._token = token or None
        self._poll_seconds = poll_seconds
        self._backoff = backoff or Backoff(base=1.0, cap=60.0)
        self._initial_backfill = max(0, min(initial_backfill, PAGE_LIMIT))
        self._known_max = known_max
        self._read_timeout = read_timeout
        self._heartbeat = heartbeat
        self._clock = clock
        self._cursor: dict[str, str] = {}
        self._known: OrderedDict[str, str] = OrderedDict()
        self._recall = publisher.recall(self.name, known_max)  # ... and in Redis, for after a restart
        self._rest = MastodonRest(
            self._base,
            name=self.name,
            counters=self.counters,
            backoff=self._backoff,
            max_rate_wait=max_rate_wait,
            timeout=request_timeout,
            clock=clock,
        )
        self._requests = asyncio.Semaphore(max(1, max_requests))
        self._publishing = asyncio.Lock()
        self._stream_base: str | None = None
        self._use_sse = False
        self._session: aiohttp.ClientSession | None = None

    def cursor_name(self, tag: str) -> str:
        """The Redis cursor name of one tag on this instance."""
        return f"{self.name}:{tag}"

    @property
    def known_uris(self) -> Mapping[str, str]:
        """Status id -> uri of the most recently published statuses (bounded by ``known_max``)."""
        return self._known

    async def run(self) -> None:
        """Follow until cancelled; network, Redis and payload trouble is logged, counted and retried with backoff."""
        headers = {"User-Agent": "chatmixer", "Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        # Bounds connecting and the websocket handshake; REST and SSE requests set their own timeouts.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=30)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            self._session = self._rest.session = session
            try:
                await self._load_cursors()
                if self._token:
                    await self._stream_forever()
                else:
                    await self._poll_forever()
            finally:
                self._session = self._rest.session = None

    async def _load_cursors(self) -> None:
        while True:
            try:
                # deletes and duplicates after a restart
                remember(self._known, (await self._recall.load()).items(), self._known_max)
                for tag in self.tags:
                    value = await self._cursors.get(self.cursor_name(tag))
                    raise_if_cancelling()
                    if value:
                        self._cursor[tag] = value
                return
            except Exception as exc:  # Redis away, or a bug: either must not end the follower (nor `mixer ingest`)
                if not isinstance(exc, RedisError):
                    log.exception("%s: unexpected failure reading cursors", self.name)
                delay = self._backoff.next()
                log.warning("%s: reading cursors failed (%s); retrying in %.2fs", self.name, _why(exc), delay)
                await asyncio.sleep(delay)

    # Polling (no token).

    async def _poll_forever(self) -> None:
        """Every tag polls on its own schedule: a tag whose timeline is slow or failing holds up no other tag."""
        if not self.tags:
            await asyncio.Event().wait()  # nothing to poll: idle until cancelled, as a follower never returns
        async with asyncio.TaskGroup() as group:  # the tasks never fail: only cancellation ends them
            for tag in self.tags:
                group.create_task(self._poll_tag(tag), name=f"{self.name}:{tag}")

    async def _poll_tag(self, tag: str) -> None:
        backoff = dataclasses.replace(self._backoff, attempts=0)  # each tag backs off on its own failures
        while True:
            try:
                await self._backfill(tag)
            except _FAILURES as exc:
                log.warning("%s: polling #%s on %s failed: %s", self.name, tag, self._base, exc)
            except Exception:  # a bug must not end the follower: log it loudly and go on
                log.exception("%s: unexpected failure polling #%s on %s", self.name, tag, self._base)
            else:
                backoff.reset()
                self._backoff.reset()  # the instance answers: a 429 without a reset time starts the backoff over
                await asyncio.sleep(self._poll_seconds)
                continue
            self.counters["reconnects"] += 1
            delay = backoff.next()
            log.warning("%s: next poll of #%s on %s in %.2fs (backing off)", self.name, tag, self._base, delay)
            await asyncio.sleep(delay)

    async def _backfill(self, tag: str) -> None:
        """Publish every status of ``tag`` after its cursor, oldest first, until a page comes back short."""
        path = f"/api/v1/timelines/tag/{quote(tag, safe='')}"
        while True:
            cursor = self._cursor.get(tag)
            if cursor is None:  # first start: the newest few, then forward from there
                page = await self._get_page(path, {"limit": str(max(1, self._initial_backfill))})
                if self._initial_backfill == 0:
                    self.counters["received"] += len(page)
                    ids = [i for i in (_status_id(s) for s in page) if i is not None]
                    async with self._publishing:
                        await self._commit(tag, [], max(ids, key=id_order) if ids else None, [])
                    return
                await self._handle_statuses(tag, page)
                return
            # min_id pages forward from the cursor (since_id would return the newest page and skip a gap).
            page = await self._get_page(path, {"limit": str(PAGE_LIMIT), "min_id": cursor})
            await self._handle_statuses(tag, page)
            if len(page) < PAGE_LIMIT or self._cursor.get(tag) == cursor:
                return

    async def _get_page(self, path: str, params: dict[str, str]) -> list[Any]:
        """A timeline page; at most ``max_requests`` of them in flight at once (the rate limit is ``_rest``'s)."""
        async with self._requests:
            return await self._rest.get_list(path, params)

    async def _handle_statuses(self, tag: str | None, statuses: Iterable[Any]) -> None:
        """Parse and publish statuses oldest first, skipping ones already published; move ``tag``'s cursor."""
        # One batch at a time: a status carrying two tags, fetched for both at once, is published once.
        async with self._publishing:
            await self._publish_statuses(tag, statuses)

    async def _publish_statuses(self, tag: str | None, statuses: Iterable[Any]) -> None:
        now_ms = int(self._clock() * 1000)
        events: list[Event] = []
        fresh: list[tuple[str, str]] = []
        # id -> uri of what this batch parsed so far: a reply to a status of the same page names it by uri too
        batch: dict[str, str] = {}
        known = ChainMap(batch, self._known)
        best = self._cursor.get(tag) if tag else None
        for status in sorted(statuses, key=lambda s: id_order(_status_id(s) or "")):
            self.counters["received"] += 1
            status_id = _status_id(status)
            if status_id is None:
                self._malformed("status without an id", status)
                continue
            if best is None or id_order(status_id) > id_order(best):
                best = status_id
            if status_id in self._known:
                self.counters["duplicates"] += 1
                continue
            try:
                events.extend(
                    parse_status(status, self._matcher, now_ms, instance=self.host, known_uris=known, seen_uris=batch)
                )
            except Ignored as exc:
                self.counters[f"skipped:{counted(exc.reason, self.name)}"] += 1
            except ValueError as exc:
                self._malformed(str(exc), status)
            else:
                fresh.append((status_id, status["uri"]))
        await self._commit(tag, events, best, fresh)

    async def _commit(
        self, tag: str | None, events: list[Event], best: str | None, fresh: list[tuple[str, str]]
    ) -> None:
        """Publish events with the tag's new cursor in one transaction; only then remember what was published."""
        moved = tag is not None and best is not None and best != self._cursor.get(tag)
        cursor = (self.cursor_name(tag), best) if tag is not None and best is not None else None
        if events:
            recall = (self._recall, dict(fresh))
            self.counters["published"] += await self._publisher.publish(events, cursor=cursor, recall=recall)
            raise_if_cancelling()
        elif moved and cursor is not None:
            await self._cursors.set(*cursor)
            raise_if_cancelling()
        if moved and tag is not None and best is not None:
            self._cursor[tag] = best
        remember(self._known, fresh, self._known_max)

    # Streaming (token).

    async def _stream_forever(self) -> None:
        while True:
            reason = "closed"
            try:
                await self._stream_once()
            except _FAILURES as exc:
                reason = _why(exc)
            except Exception as exc:  # a bug must not end the follower: log it loudly and go on
                log.exception("%s: unexpected failure following %s", self.name, self._base)
                reason = f"unexpected {type(exc).__name__}"
            self.counters["reconnects"] += 1
            delay = self._backoff.next()
            log.warning("%s: stream from %s lost (%s); reconnecting in %.2fs", self.name, self._base, reason, delay)
            await asyncio.sleep(delay)

    async def _stream_once(self) -> None:
        """Subscribe, backfill every tag, then publish streamed events until the connection ends (raises why)."""
        queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=10_000)  # full: readers wait, TCP pushes back
        readers: list[asyncio.Task[None]] = []
        async with contextlib.AsyncExitStack() as stack:
            try:
                await self._subscribe(stack, queue, readers)
                await self._backfill_all()
                self._backoff.reset()
                while True:
                    item = await queue.get()
                    if isinstance(item, BaseException):
                        raise item
                    await self._handle_event(*item)
            finally:
                for task in readers:
                    task.cancel()
                await asyncio.gather(*readers, return_exceptions=True)

    async def _backfill_all(self) -> None:
        """Backfill every tag at once (bounded by ``max_requests``); then raise the first failure, if any. A failure
        does not cancel the other tags' backfills: one cut mid-publish could leave its cursor behind what landed."""
        outcomes = await asyncio.gather(*(self._backfill(tag) for tag in self.tags), return_exceptions=True)
        if failure := next((o for o in outcomes if isinstance(o, BaseException)), None):
            raise failure

    async def _subscribe(
        self, stack: contextlib.AsyncExitStack, queue: asyncio.Queue[Item], readers: list[asyncio.Task[None]]
    ) -> None:
        assert self._session is not None
        base = await self._streaming_base()
        if not self._use_sse:
            url = base.replace("http", "ws", 1) + "/api/v1/streaming"
            try:
                ws = await stack.enter_async_context(self._session.ws_connect(url, heartbeat=self._heartbeat))
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status not in _NO_WEBSOCKET:
                    raise
                log.info("%s: no websocket at %s (HTTP %s); using server-sent events", self.name, url, exc.status)
                self._use_sse = True
            else:
                for tag in self.tags:
                    await ws.send_json({"type": "subscribe", "stream": "hashtag", "tag": tag})
                readers.append(asyncio.create_task(read_websocket(ws, queue, self._envelope)))
                return
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self._read_timeout)
        for tag in self.tags:
            url = base + "/api/v1/streaming/hashtag"
            resp = await stack.enter_async_context(
                self._session.get(url, params={"tag": tag}, timeout=timeout, headers={"Accept": "text/event-stream"})
            )
            if resp.status != 200:
                raise SourceError(f"GET {url}?tag={tag}: HTTP {resp.status}", resp.status)
            readers.append(asyncio.create_task(read_event_stream(tag, resp, queue, self._oversized)))

    async def _streaming_base(self) -> str:
        """The streaming server's http(s) base: /api/v2/instance ``configuration.urls.streaming``, else the instance."""
        if self._stream_base is None:
            try:
                doc = await self._rest.get_json("/api/v2/instance", {})
                url = doc["configuration"]["urls"]["streaming"]
                if not isinstance(url, str) or "://" not in url:
                    raise TypeError(url)
            except SourceError as exc:
                if exc.status is None or exc.status >= 500:
                    raise
                url = self._base
            except (KeyError, TypeError):
                url = self._base
            self._stream_base = url.rstrip("/").replace("ws", "http", 1) if url.startswith("ws") else url.rstrip("/")
        return self._stream_base

    def _envelope(self, text: str) -> Item | None:
        try:
            tag, event, payload = parse_ws_message(text)
        except (Ignored, ValueError) as exc:
            self.counters["received"] += 1
            if isinstance(exc, Ignored):
                self.counters[f"skipped:{counted(exc.reason, self.name)}"] += 1
                log.warning("%s: streaming server says: %.200s", self.name, text)
            else:
                self._malformed(str(exc), text)
            return None
        return (tag if tag in self.tags else None), event, payload

    def _oversized(self, tag: str, count: int) -> None:
        self.counters["malformed"] += count
        log.warning("%s: dropped %d oversized SSE event(s) on #%s", self.name, count, tag)

    async def _handle_event(self, tag: str | None, event: str, payload: str) -> None:
        if event == "update":
            try:
                status = json.loads(payload)
            except ValueError as exc:
                self.counters["received"] += 1
                self._malformed(f"update payload is not JSON ({exc})", payload)
                return
            await self._handle_statuses(tag, [status])
            return
        self.counters["received"] += 1
        now_ms = int(self._clock() * 1000)
        try:
            events = parse_event(event, payload, self._matcher, now_ms, instance=self.host, known_uris=self._known)
        except Ignored as exc:
            self.counters[f"skipped:{counted(exc.reason, self.name)}"] += 1
        except ValueError as exc:
            self._malformed(str(exc), payload)
        else:
            await self._publisher.publish(events)
            raise_if_cancelling()

    def _malformed(self, reason: str, raw: Any) -> None:
        self.counters["malformed"] += 1
        excerpt = raw if isinstance(raw, str) else json.dumps(raw, default=str)
        log.warning("%s: malformed payload skipped (%s): %.160s", self.name, reason, excerpt)


def _status_id(status: Any) -> str | None:
    """The instance-local id of a status, or None when it has no usable one."""
    if not isinstance(status, dict):
        return None
    value = status.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return value if isinstance(value, str) and value.isalnum() and len(value) <= 64 else None


def _why(exc: BaseException) -> str:
    """An exception as a log line's reason: its message, else its type (a TimeoutError's message is empty)."""
    return str(exc) or type(exc).__name__
