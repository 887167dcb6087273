"""The Locust integration: a locustfile shipped with chatmixer, for load tests on a master and many worker hosts.

``WsUser`` holds one ``/ws`` websocket, ``SseUser`` one ``/events`` stream; each post they receive is one Locust
request event (type ``WS`` / ``SSE``, name ``post`` or the post's chats, response time = receive time minus the
post's ``at`` in ms, response length = the frame's bytes shared by its posts), so Locust's stats, CSV and web UI show
deliveries and publish-to-receive latency. Connections are ``connect`` events; ``lag``, ``reset``, closes and errors
are failures. ``DriverUser`` publishes a recording through the product's own webhook (``POST /api/posts``, bearer
token) at a fixed rate, each post with a key of its own (``<key>~<tag>.<pass>``) and stamped when sent, so dedupe
never folds a run's posts into an earlier run's. Options are Locust custom arguments (``--mixer-*`` or their
``LOCUST_MIXER_*`` variables), which the master passes to its workers. Run ``locust -f "$(python -m mixer.load.locust
--path)"``; docs/locust.md. What is not here: thresholds and verdicts (``mixer rehearse``), the server.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
import uuid
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

try:  # importing locust monkey-patches the standard library for gevent: time.sleep and sockets are cooperative
    import msgpack
    import websocket
    from locust import HttpUser, User, constant, events, task
    from locust.env import Environment
    from locust.runners import WorkerRunner
except ImportError as exc:  # pragma: no cover - the extra is installed in the test environment
    if __name__ == "__main__":
        sys.exit(f"mixer.load.locust needs the load extra: pip install 'chatmixer[load]' ({exc})")
    raise

from mixer.codec import loads
from mixer.ingest.hashtags import ChatMatcher
from mixer.ingest.recorded import read_events
from mixer.models import Edit, Event, Post, Retraction

BACKOFF_MAX = 10.0  # seconds between reconnects at most (doubling from 0.5 s)


def _positive(kind: type[float] | type[int]) -> Any:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not 0 < value < math.inf:
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number more than 0")
        return value

    return parse


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (0 or more)")
    return int(text)


def _path(text: str) -> str:
    if not text.startswith("/"):
        raise argparse.ArgumentTypeError(f"{text!r} must start with / (a path with any query, e.g. /ws?chats=a,b)")
    return text


def add_options(parser: Any) -> None:
    """The ``--mixer-*`` options; a bad value is one line from the parser and exit 2."""
    group = parser  # not an argument group: Locust takes is_secret only on the parser itself
    group.add_argument(
        "--mixer-ws", type=_path, default="/ws", env_var="LOCUST_MIXER_WS", help="WsUser: path and query (/ws)"
    )
    group.add_argument(
        "--mixer-sse", type=_path, default="/events", env_var="LOCUST_MIXER_SSE", help="SseUser: path and query"
    )
    group.add_argument(
        "--mixer-name",
        choices=("post", "chat"),
        default="post",
        env_var="LOCUST_MIXER_NAME",
        help="name of a delivery's row: post (one row) or chat (a row per post's chats, '#a #b')",
    )
    group.add_argument(
        "--mixer-recording",
        default="",
        env_var="LOCUST_MIXER_RECORDING",
        help="DriverUser: a recording mixer reads, on the driver's host (default: the bundled demo)",
    )
    group.add_argument(
        "--mixer-rate",
        type=_positive(float),
        default=20.0,
        env_var="LOCUST_MIXER_RATE",
        help="DriverUser: posts per second, per driver",
    )
    group.add_argument(
        "--mixer-batch",
        type=_positive(int),
        default=100,
        env_var="LOCUST_MIXER_BATCH",
        help="DriverUser: at most this many posts per POST (the posts due when it is sent)",
    )
    group.add_argument(
        "--mixer-posts",
        type=_count,
        default=0,
        env_var="LOCUST_MIXER_POSTS",
        help="DriverUser: posts per driver, then it idles (0: loop the recording until the run ends)",
    )
    group.add_argument(
        "--mixer-token",
        default="",
        env_var="MIXER_WEBHOOK_TOKEN",
        is_secret=True,
        help="DriverUser: the server's [webhook] token",
    )


def check_recording(environment: Environment, runner: Any, **_: Any) -> None:
    """On the master (or a standalone run), a ``--mixer-recording`` that cannot be read is one line and exit 2; a
    worker reads its own copy when its DriverUser starts."""
    path = options(environment).mixer_recording
    if path and not isinstance(runner, WorkerRunner):
        try:
            recording(path)
        except (OSError, ValueError) as exc:
            sys.stderr.write(f"locust: --mixer-recording: {exc}\n")
            sys.exit(2)


_hooks: Any = events  # (Locust's event hooks are untyped)
_hooks.init_command_line_parser.add_listener(add_options)
_hooks.init.add_listener(check_recording)


def options(environment: Environment) -> argparse.Namespace:
    """The run's parsed options (a worker has the master's: Locust sends custom arguments with each spawn)."""
    if environment.parsed_options is None:
        raise RuntimeError("mixer.load.locust runs under the locust command (locust -f ...), which parses its options")
    parsed: argparse.Namespace = environment.parsed_options
    return parsed


def with_query(base: str, path: str, **extra: str) -> str:
    """``base`` (scheme://host) + ``path`` (its own query kept) with ``extra`` query values set."""
    parts = urlsplit(base.rstrip("/") + path)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(extra)
    return urlunsplit(parts._replace(query=urlencode(query, safe=",")))


def ws_base(host: str) -> str:
    """The websocket form of Locust's ``--host``: http -> ws, https -> wss."""
    if host.startswith("https://"):
        return "wss://" + host[len("https://") :]
    if host.startswith("http://"):
        return "ws://" + host[len("http://") :]
    return host


class Deliveries:
    """Turns received posts into Locust request events; remembers the last feed id (to resume from)."""

    def __init__(self, environment: Environment, request_type: str) -> None:
        self.environment = environment
        self.request_type = request_type
        self.by_chat = options(environment).mixer_name == "chat"
        self.last_id = ""
        self.request: Any = environment.events.request  # (Locust's event hooks are untyped)

    def posts(self, items: list[Any], frame_bytes: int) -> None:
        """One request event per post: response time = now - ``at`` (ms), length = its share of the frame."""
        now = time.time() * 1000
        share = frame_bytes // max(len(items), 1)
        fire = self.request.fire
        for item in items:
            name = " ".join(f"#{c}" for c in item.get("chats", ())) if self.by_chat else "post"
            at = item.get("at")
            latency = max(0.0, now - at) if isinstance(at, int | float) else 0.0
            fire(request_type=self.request_type, name=name, response_time=latency, response_length=share)
            self.last_id = str(item.get("id") or self.last_id)

    def failure(self, name: str, reason: str, elapsed_ms: float = 0.0) -> None:
        """A failed request event (``lag``, ``reset``, ``connect``, ``closed``) with its reason."""
        self.request.fire(
            request_type=self.request_type,
            name=name,
            response_time=elapsed_ms,
            response_length=0,
            exception=RuntimeError(reason),
        )

    def connected(self, elapsed_ms: float) -> None:
        self.request.fire(request_type=self.request_type, name="connect", response_time=elapsed_ms, response_length=0)

    def control(self, message: dict[str, Any]) -> None:
        """``lag`` and ``reset`` are failures: posts this client did not get."""
        kind = message.get("type")
        if kind == "lag":
            self.failure("lag", f"the server skipped {message.get('skipped')} post(s) for this client")
        elif kind == "reset":
            self.failure("reset", "the gap since the last id is no longer in the history")
            self.last_id = str(message.get("cursor") or self.last_id)  # where the server says to carry on from


class WsUser(User):
    """One ``/ws`` client (``--mixer-ws``): every post is a ``WS`` request event; reconnects with ``since``."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self.deliveries = Deliveries(self.environment, "WS")
        self.socket: websocket.WebSocket | None = None

    def on_stop(self) -> None:
        if self.socket is not None:
            self.socket.close()

    def connect(self) -> websocket.WebSocket:
        since = {"since": self.deliveries.last_id} if self.deliveries.last_id else {}
        url = with_query(ws_base(self.host or ""), options(self.environment).mixer_ws, **since)
        started = time.perf_counter()
        # the JSON decoder checks the text anyway; websocket-client's own UTF-8 check is pure Python, per byte
        sock = websocket.create_connection(url, timeout=60, skip_utf8_validation=True)
        self.deliveries.connected((time.perf_counter() - started) * 1000)
        return sock

    @task
    def receive(self) -> None:
        """Read frames until the socket fails; then one failure event, a backoff, and a reconnect with ``since``."""
        delay = 0.5
        while True:
            try:
                self.socket = self.connect()
                delay = 0.5
                while True:
                    opcode, data = self.socket.recv_data()
                    if opcode == websocket.ABNF.OPCODE_CLOSE:
                        code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                        raise ConnectionError(f"closed by the server with code {code}")
                    message = msgpack.unpackb(data) if opcode == websocket.ABNF.OPCODE_BINARY else loads(data)
                    if not isinstance(message, dict):
                        raise ValueError(f"a frame that is not an object: {data[:80]!r}")
                    if message.get("type") == "posts":
                        self.deliveries.posts(message["items"], len(data))
                    else:
                        self.deliveries.control(message)
            except (OSError, ValueError, msgpack.UnpackException, websocket.WebSocketException) as exc:
                self.deliveries.failure("closed", f"{type(exc).__name__}: {exc}")
            if self.socket is not None:
                self.socket.close()
                self.socket = None
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)


def sse_events(lines: Iterator[bytes]) -> Iterator[tuple[str, bytes]]:
    """(event name, data bytes) of each event in an SSE body's lines (data lines joined by newlines); comments and
    ``id:``/``retry:`` fields skipped."""
    name, data = "message", b""
    for line in lines:
        if not line:
            if data:
                yield name, data
            name, data = "message", b""
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode()
        elif line.startswith(b"data:"):
            data += (b"\n" if data else b"") + line[5:].removeprefix(b" ")


class SseUser(HttpUser):
    """One ``/events`` client (``--mixer-sse``): every post is an ``SSE`` request event; reconnects with
    ``Last-Event-ID``."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self.deliveries = Deliveries(self.environment, "SSE")

    @task
    def receive(self) -> None:
        delay = 0.5
        while True:
            headers = {"Accept": "text/event-stream"}
            if self.deliveries.last_id:
                headers["Last-Event-ID"] = self.deliveries.last_id
            url = with_query(self.host or "", options(self.environment).mixer_sse)
            started = time.perf_counter()
            try:
                resp = self.client.get(url, headers=headers, stream=True, name=urlsplit(url).path, timeout=60)
                try:
                    if resp.status_code != 200:  # 0: no answer at all (Locust's client keeps the error)
                        raise ConnectionError(f"HTTP {resp.status_code} {resp.error or ''}".strip())
                    self.deliveries.connected((time.perf_counter() - started) * 1000)
                    delay = 0.5
                    # chunk_size None: each line as soon as its chunk arrives (requests accepts it; its stubs do not)
                    lines = resp.iter_lines(chunk_size=None)  # type: ignore[call-overload]
                    for kind, data in sse_events(lines):
                        if kind == "post":
                            self.deliveries.posts([loads(data)], len(data))
                        elif kind in ("lag", "reset"):
                            self.deliveries.control(loads(data))
                finally:
                    if resp.raw is not None:  # None: the request never got an answer
                        resp.close()
                raise ConnectionError("the stream ended")
            except (OSError, ValueError) as exc:  # requests' errors are OSErrors
                self.deliveries.failure("closed", f"{type(exc).__name__}: {exc}")
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)


def recording(path: str) -> list[Event]:
    """Every event of a recording (any shape mixer reads); the bundled demo for an empty path. Malformed records
    are skipped (and logged by the reader); a recording with no post is refused."""
    source = Path(path) if path else Path(str(resources.files("mixer.data").joinpath("pstweetchat.jsonl")))
    read = [e for e in read_events(source, ChatMatcher(None), int(time.time() * 1000)) if not _is_error(e)]
    if not any(isinstance(e, Post) for e in read):
        raise ValueError(f"{source}: no post in this recording")
    return read  # type: ignore[return-value]


def _is_error(item: object) -> bool:
    return not isinstance(item, Post | Edit | Retraction)


def restamped(event: Event, tag: str, pass_no: int, now_ms: int) -> dict[str, Any]:
    """The webhook record of ``event`` as published now: ``~<tag>.<pass>`` added to its key (a boost's ``boost_of``
    too) and to a post's text, ``at`` and ``created`` now. Dedupe folds a known key and, for ten minutes, the same
    text by the same author: with both its own, no post of a run or pass is folded into another run's or pass's."""
    suffix = f"~{tag}.{pass_no}"

    def post(p: Post) -> Post:
        boost_of = None if p.boost_of is None else p.boost_of + suffix
        text = f"{p.text} {suffix}"
        return p.replace(key=p.key + suffix, created=now_ms, at=now_ms, text=text, boost_of=boost_of, id="")

    if isinstance(event, Post):
        return post(event).to_dict()
    if isinstance(event, Edit):
        return {"type": "edit", "post": post(event.post).to_dict()}
    return {"type": "retract", "key": event.key + suffix, "source": event.source, "chats": list(event.chats)}


class DriverUser(HttpUser):
    """Publishes a recording (``--mixer-recording``) through ``POST /api/posts`` at ``--mixer-rate`` posts/s, pass
    after pass (or ``--mixer-posts`` posts, then idles). Each POST is an HTTP request event named ``/api/posts``;
    an answer other than 202, or one listing a record it could not use, is a failure."""

    fixed_count = 1  # one driver in the whole run unless the user says otherwise (Locust's class options)
    wait_time = constant(0)

    def on_start(self) -> None:
        try:
            self.events = recording(options(self.environment).mixer_recording)
        except (OSError, ValueError) as exc:  # this worker's copy: a failure in the stats, and this driver idles
            request: Any = self.environment.events.request
            request.fire(request_type="DRIVE", name="recording", response_time=0, response_length=0, exception=exc)
            self.events = []
        self.tag = uuid.uuid4().hex[:8]  # this driver's run: its keys and texts are its own
        self.sent = 0

    def plan(self) -> Iterator[tuple[Event, int]]:
        """The recording's events with their pass number, pass after pass."""
        for pass_no in itertools.count():
            for event in self.events:
                yield event, pass_no

    @task
    def drive(self) -> None:
        """Post k is due at start + k / rate: each POST carries every post due by then (at most ``--mixer-batch``),
        stamped as it is sent, so a slow round trip delays posts but never lowers the rate."""
        opts = options(self.environment)
        headers = {"Authorization": f"Bearer {opts.mixer_token}", "Content-Type": "application/json"}
        planned = itertools.islice(self.plan() if self.events else iter(()), opts.mixer_posts or None)
        start = time.monotonic()
        while True:
            wait = start + self.sent / opts.mixer_rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            due = int((time.monotonic() - start) * opts.mixer_rate) + 1 - self.sent
            batch = list(itertools.islice(planned, max(1, min(due, opts.mixer_batch))))
            if not batch:
                break
            now_ms = int(time.time() * 1000)
            body = json.dumps([restamped(event, self.tag, pass_no, now_ms) for event, pass_no in batch])
            with self.client.post("/api/posts", data=body, headers=headers, catch_response=True) as resp:
                if resp.status_code != 202 or resp.json().get("errors"):
                    resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
            self.sent += len(batch)
        while True:  # done: stay (a user whose task returns runs it again) without publishing more
            time.sleep(3600)


def main(argv: list[str] | None = None) -> int:
    """``python -m mixer.load.locust --path``: print this locustfile's path (for ``locust -f``)."""
    about = 'The chatmixer locustfile: locust -f "$(python -m mixer.load.locust --path)" (docs/locust.md).'
    parser = argparse.ArgumentParser(prog="python -m mixer.load.locust", description=about)
    parser.add_argument("--path", action="store_true", help="print the locustfile's path")
    args = parser.parse_args(argv)
    if not args.path:
        parser.print_help()
        return 2
    print(Path(__file__).resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
