"""The X follower: API v2 filtered stream with one rule per chat, resuming after the newest published tweet id.

``XSource.run`` first makes the stream's rules exactly ours (one rule per chat: value
``#<tag>``, tag ``<tag>``; any other rule is deleted, ours added once), then reads
``GET /2/tweets/search/stream`` (newline-delimited JSON, blank keep-alive lines about
every 20 s) and publishes every message through ``parse_v2`` with the message's tweet
id as the cursor, in the same Redis transaction. Snowflake ids grow with time, so after
a reconnect or restart any tweet with an id at or below the cursor is skipped (and a
bounded set of recent ids catches repeats inside one connection). Reconnects follow
X's published policy: network errors back off linearly (+250 ms, up to 16 s), HTTP
errors exponentially (5 s doubling, up to 320 s), HTTP 429 exponentially from 60 s
unless ``x-rate-limit-reset`` says when to come back; 90 s without a byte is a stall.
While Redis is away the stream keeps being read and the Publisher holds what it offers
(``Publisher.offer``: bounded, overflow counted). Payload parsing lives in ``x_v2``, not here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp
from redis.exceptions import RedisError

from mixer.backoff import Backoff
from mixer.ingest.hashtags import ChatMatcher, normalize_hashtag
from mixer.ingest.publish import CursorStore, Publisher
from mixer.ingest.skips import counted
from mixer.ingest.sources.x import SOURCE, load_json
from mixer.ingest.sources.x_v2 import parse_v2
from mixer.models import Event, Ignored
from mixer.streams import raise_if_cancelling

log = logging.getLogger(__name__)

DEFAULT_API = "https://api.twitter.com"
STREAM_PATH = "/2/tweets/search/stream"
RULES_PATH = "/2/tweets/search/stream/rules"
STREAM_QUERY = {  # the fields parse_v2 reads (note_tweet: the whole text of posts longer than 280 characters)
    "tweet.fields": "created_at,lang,entities,referenced_tweets,edit_history_tweet_ids,attachments,author_id,"
    "conversation_id,in_reply_to_user_id,note_tweet",
    "expansions": "author_id,referenced_tweets.id,attachments.media_keys",
    "user.fields": "profile_image_url,name,username",
    "media.fields": "url,preview_image_url,alt_text,width,height",  # (media_key and type come always)
}
_MAX_LINE = 4 << 20  # one tweet with its includes is a few kB; a "line" this long is garbage, not a message


def rule_for(tag: str) -> dict[str, str]:
    """The filtered-stream rule that follows one chat: its hashtag, tagged with the chat."""
    return {"value": f"#{tag}", "tag": tag}


def tweet_ids(message: dict[str, Any]) -> list[int]:
    """The ids of the tweets a v2 message carries in ``data``; empty for other messages."""
    data = message.get("data")
    tweets = [data] if isinstance(data, dict) else data if isinstance(data, list) else []
    return [
        int(t["id"])
        for t in tweets
        if isinstance(t, dict) and isinstance(t.get("id"), str) and t["id"].isascii() and t["id"].isdigit()
    ]


class HttpError(Exception):
    """X answered a request with an HTTP error status."""

    def __init__(self, method: str, url: str, status: int, headers: Mapping[str, str], body: str) -> None:
        super().__init__(f"{method} {url}: HTTP {status} {body[:200]!r}")
        self.status = status
        self.headers = headers


class Stalled(Exception):
    """No byte (not even a keep-alive) arrived for the stall timeout: the connection is treated as dead."""


class XSource:
    """Follows the filtered stream for every chat; publishes each tweet once, in stream order, resuming by tweet id."""

    def __init__(
        self,
        publisher: Publisher,
        cursors: CursorStore,
        matcher: ChatMatcher,
        *,
        bearer_token: str,
        tags: Sequence[str],
        api: str = DEFAULT_API,
        backoff: Backoff | None = None,  # after an HTTP error: X says 5 s, doubling, up to 320 s
        network_backoff: Backoff | None = None,  # after a network error or stall: +250 ms a try, up to 16 s
        rate_limit_backoff: Backoff | None = None,  # after HTTP 429 without x-rate-limit-reset: 60 s, doubling
        stall_seconds: float = 90.0,  # no byte for this long (keep-alives come every ~20 s): reconnect
        backfill_minutes: int = 0,  # 1-5 asks X to replay that much on (re)connect (Enterprise access); 0: off
        remember: int = 10_000,  # recent tweet ids kept to drop repeats within one connection
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = SOURCE
        self.counters: Counter[str] = Counter()
        self._publisher = publisher
        self._cursors = cursors
        self._matcher = matcher
        self._token = bearer_token
        self._tags = tuple(dict.fromkeys(t for t in (normalize_hashtag(tag) for tag in tags) if t))
        self._api = api.rstrip("/")
        self._http = backoff or Backoff(base=5.0, factor=2.0, cap=320.0, jitter=0.0)
        self._network = network_backoff or Backoff(base=0.25, factor=1.0, step=0.25, cap=16.0, jitter=0.0)
        self._rate = rate_limit_backoff or Backoff(base=60.0, factor=2.0, cap=900.0, jitter=0.0)
        self._stall = stall_seconds
        self._backfill = max(0, min(5, backfill_minutes))
        self._remember = remember
        self._clock = clock
        self._cursor: int | None = None  # newest tweet id published (stored in Redis with it); 0: none yet
        self._rules_synced = False
        self._recent: OrderedDict[int, None] = OrderedDict()

    @property
    def stream_url(self) -> str:
        """The filtered-stream endpoint this follower reads (without its query)."""
        return self._api + STREAM_PATH

    async def run(self) -> None:
        """Follow until cancelled; every failure is logged and retried after X's backoff for its kind."""
        headers = {"Authorization": f"Bearer {self._token}", "User-Agent": "chatmixer"}
        timeout = aiohttp.ClientTimeout(total=None, connect=30, sock_connect=30)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            while True:
                problem, delay = await self._attempt(session)
                self.counters["reconnects"] += 1
                log.warning("x: %s; reconnecting in %.2f s", problem, delay)
                await asyncio.sleep(delay)

    async def _attempt(self, session: aiohttp.ClientSession) -> tuple[str, float]:
        """One connection's life (cursor and rules first when not done yet); returns why it ended and the delay."""
        try:
            if self._cursor is None:
                self._cursor = await self._load_cursor()
            if not self._rules_synced:
                await self._sync_rules(session)
                self._rules_synced = True
            await self._follow(session)
            return f"stream {self.stream_url} ended", self._network.next()
        except HttpError as exc:
            if exc.status == 429:
                return f"rate limited: {exc}", self._rate_limit_delay(exc.headers)
            return str(exc), self._http.next()
        except Stalled as exc:
            return str(exc), self._network.next()
        except (aiohttp.ClientError, OSError, TimeoutError, RedisError) as exc:
            return f"{type(exc).__name__}: {exc} ({self.stream_url})", self._network.next()
        except Exception as exc:  # a bug must not end the follower: log it loudly and go on
            log.exception("x: unexpected failure following %s", self.stream_url)
            return f"unexpected {type(exc).__name__}", self._http.next()

    async def _load_cursor(self) -> int:
        raw = await self._cursors.get(self.name)
        raise_if_cancelling()
        if raw is None:
            return 0
        if not raw.isdigit():
            log.warning("x: stored cursor %r is not a tweet id; following live", raw)
            return 0
        return int(raw)

    def _rate_limit_delay(self, headers: Mapping[str, str]) -> float:
        """Until ``x-rate-limit-reset`` (epoch seconds) when it is ahead, else the 429 backoff."""
        fallback = self._rate.next()
        reset = headers.get("x-rate-limit-reset", "")
        # isascii too: str.isdigit() also takes digits such as "²" that int() refuses, and one bad header must not
        # end the follower (this runs in _attempt's except clause, which nothing catches)
        if reset.isascii() and reset.isdigit() and int(reset) > self._clock():
            return min(int(reset) - self._clock(), self._rate.cap)
        return fallback

    async def _request(self, session: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> dict[str, Any]:
        async with session.request(method, url, json=body, timeout=aiohttp.ClientTimeout(total=30)) as resp:
            text = await resp.text(errors="replace")
            if resp.status not in (200, 201):
                raise HttpError(method, url, resp.status, resp.headers, text)
        try:
            return load_json(text)
        except ValueError as exc:
            raise HttpError(method, url, resp.status, resp.headers, f"unreadable answer: {exc}") from None

    async def _sync_rules(self, session: aiohttp.ClientSession) -> None:
        """Make the rules exactly one ``#<tag>`` rule per chat: delete every other rule, add what is missing."""
        url = self._api + RULES_PATH
        current = (await self._request(session, "GET", url)).get("data") or []
        kept: set[str] = set()
        stale: list[str] = []
        for rule in current if isinstance(current, list) else []:
            if not isinstance(rule, dict) or rule.get("id") is None:
                continue
            tag = rule.get("tag")
            if isinstance(tag, str) and tag in self._tags and rule.get("value") == f"#{tag}" and tag not in kept:
                kept.add(tag)
            else:
                stale.append(str(rule["id"]))
        if stale:
            await self._request(session, "POST", url, {"delete": {"ids": stale}})
            self.counters["rules_deleted"] += len(stale)
            log.info("x: deleted %d stream rules that are not ours: %s", len(stale), ", ".join(stale))
        missing = [tag for tag in self._tags if tag not in kept]
        if missing:
            answer = await self._request(session, "POST", url, {"add": [rule_for(tag) for tag in missing]})
            errors = answer.get("errors") or []
            refused = [e for e in errors if not (isinstance(e, dict) and e.get("title") == "DuplicateRule")]
            if refused:
                log.warning("x: X refused stream rules: %.500s", refused)
            self.counters["rules_added"] += len(missing) - len(refused)
            log.info("x: added stream rules for %s", ", ".join(f"#{tag}" for tag in missing))
        if not self._tags:
            log.warning("x: no chat tags configured: the filtered stream will deliver nothing")

    async def _follow(self, session: aiohttp.ClientSession) -> None:
        """Read one stream connection until it ends; publishes as lines arrive."""
        query = dict(STREAM_QUERY)
        if self._backfill:
            query["backfill_minutes"] = str(self._backfill)
        url = self.stream_url
        async with session.get(url, params=query) as resp:
            if resp.status != 200:
                raise HttpError("GET", url, resp.status, resp.headers, await resp.text(errors="replace"))
            self._http.reset()
            self._rate.reset()
            self.counters["connections"] += 1
            floor = self._cursor or 0
            after = f"resuming after tweet id {floor}" if floor else "no tweet published yet"
            log.info("x: connected to %s; %s", url, after)
            buffer, overlong = b"", False
            while True:
                try:
                    async with asyncio.timeout(self._stall):
                        chunk = await resp.content.readany()
                except TimeoutError:
                    self.counters["stalls"] += 1
                    self._truncated(buffer)
                    raise Stalled(f"no byte from {url} for {self._stall:g} s: stream treated as stalled") from None
                except (aiohttp.ClientError, OSError):
                    self._truncated(buffer)
                    raise
                if not chunk:
                    self._truncated(buffer)
                    return
                self._network.reset()
                *lines, buffer = (buffer + chunk).split(b"\n")
                if overlong and lines:
                    lines, overlong = lines[1:], False  # the tail of the line already counted as malformed
                if len(buffer) > _MAX_LINE:
                    self._malformed(f"line longer than {_MAX_LINE} bytes", buffer)
                    buffer, overlong = b"", True
                if lines:
                    await self._handle(lines, floor)

    async def _handle(self, lines: list[bytes], floor: int) -> None:
        """Parse complete lines and publish their events in one transaction with the newest tweet id as cursor."""
        events: list[Event] = []
        cursor = start = self._cursor or 0
        now_ms = int(self._clock() * 1000)
        for raw in lines:
            line = raw.strip()
            if not line:
                self.counters["keepalives"] += 1
                continue
            self.counters["received"] += 1
            try:
                message = load_json(line)
                if "errors" in message and "data" not in message:
                    self._log_errors(message["errors"])
                parsed = parse_v2(message, self._matcher, now_ms)
            except Ignored as exc:
                self.counters[f"skipped:{counted(exc.reason, self.stream_url)}"] += 1
                continue
            except ValueError as exc:
                self._malformed(str(exc), line)
                continue
            newest = max(tweet_ids(message), default=0)
            if newest and (newest <= floor or newest in self._recent):
                self.counters["skipped:duplicate"] += 1
                continue
            events.extend(parsed)
            if newest:
                self._recent[newest] = None
                while len(self._recent) > self._remember:
                    self._recent.popitem(last=False)
                cursor = max(cursor, newest)
        if events or cursor != start:
            await self._publish(events, cursor)

    async def _publish(self, events: list[Event], cursor: int) -> None:
        """Hand events and the cursor to the Publisher without waiting: X cannot pause a stream or replay it, so
        while Redis is away the Publisher holds them (bounded; what overflows is counted in ``overflowed``) and
        the stream keeps being read. ``published`` is counted as they land."""
        await self._publisher.offer(events, cursor=(self.name, str(cursor)), counters=self.counters)
        self._cursor = cursor

    def _log_errors(self, errors: Any) -> None:
        for error in errors if isinstance(errors, list) else [errors]:
            title = error.get("title") if isinstance(error, dict) else None
            detail = error.get("detail") if isinstance(error, dict) else error
            log.warning("x: error message in the stream %s: %s: %.300s", self.stream_url, title, detail)

    def _truncated(self, buffer: bytes) -> None:
        if buffer.strip():
            self._malformed("truncated: the connection ended inside this message", buffer)

    def _malformed(self, reason: str, raw: bytes) -> None:
        self.counters["malformed"] += 1
        log.warning("x: malformed stream message from %s: %s: %.160r", self.stream_url, reason, raw[:160])
