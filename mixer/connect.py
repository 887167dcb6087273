"""``client`` and ``pool``: the one place a Redis URL becomes a redis-py client, for one server, a Cluster or Sentinel.

URL forms (``rediss`` for TLS everywhere, ``user:password@`` and redis-py's query options as usual)::

    redis://host:port/db  ·  unix:///path.sock  ·  redis+cluster://host:port[,host:port...]
    redis+sentinel://host:port[,host:port...]/<master-name>[/db]   (?sentinel_username= &sentinel_password=)

Every event keeps all its keys in one hash slot (``mixer.keys``), so on a Cluster a client needs only the master
that owns that slot. Rather than redis-py's ``RedisCluster`` (another client type that every function taking a
``redis.asyncio.Redis`` would have to accept, and whose async pipelines route MULTI/WATCH and blocking XREAD
differently), each connection here is a plain ``Connection`` that looks its address up when it connects: the
slot's master from ``CLUSTER SLOTS`` (asked of the seed nodes and the masters learnt since), or the master
Sentinel names. The address is remembered until a connection to it fails, times out, or is answered ``MOVED``
(the slot moved), ``READONLY`` (the master was demoted), ``CLUSTERDOWN`` or ``TRYAGAIN``: the connection is then
dropped and the error raised as a ``ConnectionError``, which the roles already ride out as an outage (capped
backoff, cursors re-read, WATCH conflicts retried); the next connection looks the master up again. So XREAD
BLOCK, MULTI/WATCH, pipelines and Lua work as on one server, and a failover looks like a short Redis outage.
A client not told its event's key learns the slot from the first ``MOVED``. Pure URL checks are ``problem``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection, ConnectionPool, SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import ClusterDownError, MovedError, ReadOnlyError, RedisError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel")
_SENTINEL_QUERY = ("sentinel_username", "sentinel_password")  # for the sentinels themselves, not the data nodes
_LOOKUP_TIMEOUT = 2.0  # seconds a seed or sentinel may take to answer a lookup before the next one is asked
_HOST = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[^:\[\]]+))(?::(?P<port>\d{1,5}))?$")
Address = tuple[str, int]


@dataclass(frozen=True)
class Target:
    """A parsed URL: ``kind`` server, cluster or sentinel; the nodes (seeds or sentinels) and master name."""

    kind: str
    tls: bool
    nodes: tuple[Address, ...] = ()
    master: str = ""  # sentinel's name for the master
    userinfo: str = ""  # "user:password@" as written (percent-encoded), or ""
    db: int = 0
    query: tuple[tuple[str, str], ...] = ()  # redis-py options, sentinel ones removed
    sentinel_query: tuple[tuple[str, str], ...] = ()

    def node_url(self, address: Address, sentinel: bool = False) -> str:
        """A plain redis[s]:// URL for one node with this URL's options and credentials (for a sentinel: its own
        ``sentinel_username``/``sentinel_password``, and database 0)."""
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        query, userinfo, db = dict(self.query), self.userinfo, self.db
        if sentinel:
            for name in ("db", "username", "password"):
                query.pop(name, None)
            got = dict(self.sentinel_query)
            user, password = got.get("sentinel_username", ""), got.get("sentinel_password", "")
            userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}@" if user or password else ""
            db = 0
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{userinfo}{host}:{address[1]}/{db}" + (f"?{urlencode(query)}" if query else "")


def parse(url: str) -> Target:
    """``url`` as a ``Target``; ValueError completing "the URL ..." (callers redact and quote the URL)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ValueError("is not a " + ", ".join(f"{s}://" for s in SCHEMES) + " URL")
    base, _, kind = scheme.partition("+")
    userinfo, at, _ = rest.rpartition("@")
    if "=" in userinfo.partition("?")[2]:  # the '@' is in the query ("?password=p@ss"), not after a user info
        userinfo = ""
    if any(ch in "/?#" or ch.isspace() for ch in userinfo):  # a parser would read part of it as the host
        raise ValueError("has a user or password holding '/', '?', '#' or a space: percent-encode it (%2F %3F %23 %20)")
    if not kind:
        if base != "unix":
            _database(rest)
        _options(url)
        return Target("server", base == "rediss")
    rest, _, query_text = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    nodes: list[Address] = []
    for item in hosts.split(","):
        match = _HOST.match(item.strip())
        if not match:
            raise ValueError(f"names {item.strip()!r}, not host:port")
        port = int(match["port"] or (6379 if kind == "cluster" else 26379))
        if not 0 < port < 65536:
            raise ValueError(f"names port {port}, out of range")
        nodes.append((match["v6"] or match["name"], port))
    query = parse_qsl(query_text, keep_blank_values=True)
    parts = [p for p in path.split("/") if p]
    master, db_text = "", "0"
    if kind == "cluster":
        if parts not in ([], ["0"]):
            raise ValueError("names a database: a cluster URL names seed nodes only (a cluster has database 0 only)")
    else:
        if not parts or len(parts) > 2:
            raise ValueError("does not end with /<master-name> or /<master-name>/<db>, as a sentinel URL must")
        master, db_text = parts[0], parts[1] if len(parts) == 2 else "0"
    if not db_text.isdigit():
        raise ValueError(f"names database {db_text!r}, not a number")
    target = Target(
        kind,
        base == "rediss",
        tuple(nodes),
        master,
        userinfo + at,
        int(db_text),
        tuple((k, v) for k, v in query if k not in _SENTINEL_QUERY),
        tuple((k, v) for k, v in query if k in _SENTINEL_QUERY),
    )
    _options(target.node_url(nodes[0]))
    return target


def _database(rest: str) -> None:
    """A redis[s]:// URL's path (after ``://``) names a database by number, or none (redis-py reads ``/abc`` as 0)."""
    path = rest.partition("?")[0].partition("#")[0].rpartition("@")[2].partition("/")[2]
    if path and not path.isdigit():
        raise ValueError(f"names database {path!r}, not a number")


def _options(url: str) -> None:
    """redis-py's own checks of a plain URL (its query options' values), as a ValueError phrased like ours."""
    try:
        parse_url(url)
    except ValueError as exc:
        raise ValueError(f"has a bad option: {exc}") from None


def problem(url: str) -> str | None:
    """What is wrong with ``url`` ("is not a ... URL", "names port 0, out of range"...), or None when this product
    can use it. Pure: nothing is reached."""
    try:
        parse(url)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass
class Locator:
    """Where the master is: looked up on the first connection and after ``forget``; shared by a pool's connections."""

    target: Target
    slot: int | None = None  # cluster: the hash slot this client serves (None: learnt from the first MOVED)
    known: list[Address] = field(default_factory=list)  # cluster: seeds, then masters learnt; answering one first
    address: Address | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.known = list(self.target.nodes)

    def forget(self, address: Address | None = None) -> None:
        """Look the master up again on the next connection (unless it was already re-looked-up elsewhere)."""
        if address is None or address == self.address:
            self.address = None

    def moved(self, slot: int, address: Address) -> None:
        """A ``MOVED slot host:port`` answer: the slot (if not known) and its master, as the node that said it."""
        if self.slot is None:
            self.slot = slot
        if slot == self.slot:
            self.address = address
            if address not in self.known:
                self.known.append(address)

    async def locate(self) -> Address:
        """The master's address (cached until forgotten); ConnectionError when no seed or sentinel says."""
        async with self._lock:  # one lookup at a time: a burst of new connections shares its answer
            if self.address is None:
                if self.target.kind == "cluster":
                    self.address = await self._cluster()
                else:
                    self.address = await self._sentinel()
            return self.address

    async def _ask(self, address: Address, sentinel: bool, *command: str) -> Any:
        url = self.target.node_url(address, sentinel=sentinel)
        kwargs: dict[str, Any] = {"socket_timeout": _LOOKUP_TIMEOUT, "socket_connect_timeout": _LOOKUP_TIMEOUT}
        redis = aioredis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **kwargs)
        try:
            return await redis.execute_command(*command)  # type: ignore[no-untyped-call]
        finally:
            await redis.aclose()

    async def _cluster(self) -> Address:
        errors: list[str] = []
        for node in list(self.known):
            try:
                reply = await self._ask(node, False, "CLUSTER", "SLOTS")
            except (RedisError, OSError) as exc:
                errors.append(f"{node[0]}:{node[1]}: {exc or type(exc).__name__}")
                continue
            owner: Address | None = None
            for start, end, master, *_replicas in reply:
                host = _text(master[0]) or node[0]  # an empty host means "the address you asked me on"
                address = (host, int(master[1]))
                if address not in self.known:
                    self.known.append(address)
                if self.slot is not None and int(start) <= self.slot <= int(end):
                    owner = address
            self.known.remove(node)
            self.known.insert(0, node)  # ask the node that answered first next time
            if self.slot is None:
                return node  # any node will do until a MOVED names the slot
            if owner is not None:
                return owner
            errors.append(f"{node[0]}:{node[1]}: no master serves slot {self.slot}")
        raise RedisConnectionError("no cluster node named the slot's master (" + "; ".join(errors) + ")")

    async def _sentinel(self) -> Address:
        errors: list[str] = []
        for node in self.target.nodes:
            try:
                reply = await self._ask(node, True, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.target.master)
            except (RedisError, OSError) as exc:
                errors.append(f"{node[0]}:{node[1]}: {exc or type(exc).__name__}")
                continue
            if reply:
                return _text(reply[0]), int(reply[1])
            errors.append(f"{node[0]}:{node[1]}: no master named {self.target.master!r}")
        raise RedisConnectionError("no sentinel named the master (" + "; ".join(errors) + ")")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class LocatedConnection(Connection):
    """A connection to wherever its ``Locator`` says the master is; dropped (ConnectionError) when that changed."""

    def __init__(self, *, locator: Locator, **kwargs: Any) -> None:
        self.locator = locator
        super().__init__(**kwargs)

    async def _connect(self) -> None:
        self.host, self.port = await self.locator.locate()
        try:
            await super()._connect()  # type: ignore[no-untyped-call]
        except BaseException:
            self.locator.forget((self.host, self.port))
            raise

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except MovedError as exc:
            self.locator.moved(exc.slot_id, _address(exc.host, exc.port))
            reason = f"MOVED {exc}"
        except (ReadOnlyError, ClusterDownError, TryAgainError) as exc:  # demoted master; failover under way
            self.locator.forget((self.host, self.port))
            reason = str(exc) or type(exc).__name__
        except (RedisConnectionError, RedisTimeoutError, OSError):
            self.locator.forget((self.host, self.port))
            raise
        await self.disconnect()
        raise RedisConnectionError(f"{self.host}:{self.port} no longer serves this client ({reason}): reconnecting")


def _address(host: Any, port: Any) -> Address:
    return _text(host), int(port)


class LocatedSSLConnection(LocatedConnection, SSLConnection):
    """``LocatedConnection`` over TLS."""


def pool(
    url: str, key: str | None = None, pool_class: type[ConnectionPool] = ConnectionPool, **options: Any
) -> ConnectionPool:
    """A connection pool for ``url`` (``pool_class``, with redis-py ``options``; the URL's query wins). ``key``:
    any key of the event this pool serves, so a cluster pool goes straight to its slot's master."""
    target = parse(url)
    if target.kind == "server":
        return pool_class.from_url(url, **options)
    kwargs = options | dict(parse_url(target.node_url(target.nodes[0])))
    slot = key_slot(key.encode()) if key is not None and target.kind == "cluster" else None
    kwargs["connection_class"] = LocatedSSLConnection if target.tls else LocatedConnection
    kwargs["locator"] = Locator(target, slot)
    return pool_class(**kwargs)


def client(url: str, key: str | None = None, *, single: bool = False, **options: Any) -> aioredis.Redis:
    """A client for ``url`` that owns its pool (closed with it); ``single``: one connection of its own (safe for
    blocking reads). ``key`` as for ``pool``; ``options`` are redis-py's (``socket_timeout``...)."""
    redis = aioredis.Redis(connection_pool=pool(url, key, **options), single_connection_client=single)
    redis.auto_close_connection_pool = True
    return redis


def nodes(url: str) -> Sequence[Address]:
    """The seed nodes or sentinels a cluster or sentinel URL names (empty for one server)."""
    return parse(url).nodes
