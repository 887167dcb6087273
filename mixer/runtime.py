"""Where a running chatmixer can be found: the runtime file naming the Redis of a `mixer run`, and its addresses.

``mixer run`` publishes its Redis (``publish``: a small JSON file ``{url, pid, event, prefix}``, one per key
prefix, mode 0600 in a 0700 directory) so that the tools and the split roles started beside it find it
without a ``--redis`` (``find_run``); the file is removed when the run stops (``withdraw``), and one left by a
run that died is ignored and removed by the next reader. ``runtime_dir`` says where the files live
(``$XDG_RUNTIME_DIR/chatmixer``, else the user's state dir), from an environment the caller passes in.
``local_addresses`` lists the machine's non-loopback IPv4 addresses (what ``mixer run --public`` prints);
``ingest_line``, ``merge_line`` and ``live_lines`` are the lines each long-running role prints saying what it
does and where (every URL in them through ``mixer.redact``); ``redis_problem`` says why a Redis does not answer.
Choosing a Redis for a command is the CLI's business; starting one is ``embedded``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from urllib.parse import quote

from redis.exceptions import RedisError

from mixer import connect
from mixer.backoff import Backoff
from mixer.embedded import pid_alive
from mixer.redact import redact, url_secret
from mixer.settings import Settings

log = logging.getLogger(__name__)

_SIOCGIFADDR = 0x8915  # from <linux/sockios.h>: an interface's IPv4 address


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What a running `mixer run` published: its Redis, its process, its event and key prefix."""

    url: str
    pid: int
    event: str
    prefix: str


def runtime_dir(env: Mapping[str, str]) -> Path:
    """The directory of the runtime files: ``$XDG_RUNTIME_DIR/chatmixer``, else ``$XDG_STATE_HOME`` (or
    ``$HOME/.local/state``) ``/chatmixer/run``, else ``/tmp/chatmixer-<uid>/run``."""
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime and Path(runtime).is_absolute():
        return Path(runtime) / "chatmixer"
    state = env.get("XDG_STATE_HOME", "")
    if state and Path(state).is_absolute():
        return Path(state) / "chatmixer" / "run"
    home = env.get("HOME", "")
    if not home or not Path(home).is_absolute():
        return Path("/tmp") / f"chatmixer-{os.getuid()}" / "run"  # no home at all (some service accounts)
    return Path(home) / ".local" / "state" / "chatmixer" / "run"


def run_file(directory: Path, prefix: str) -> Path:
    """The runtime file of the `mixer run` on key prefix ``prefix`` (any prefix gives a safe file name)."""
    return directory / f"{quote(prefix, safe='')}.json"


def find_run(directory: Path, prefix: str) -> RunInfo | None:
    """The live `mixer run` on ``prefix``, or None; a file of a dead process (or unreadable) is removed."""
    path = run_file(directory, prefix)
    try:
        data = json.loads(path.read_text())
        info = RunInfo(str(data["url"]), int(data["pid"]), str(data.get("event", "")), str(data["prefix"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        info = None
    if info is None or info.prefix != prefix or not info.url or not pid_alive(info.pid):
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return info


def publish(directory: Path, info: RunInfo) -> Path | None:
    """Write ``info`` as the runtime file of its prefix and return its path; None (nothing written) when another
    live run already published that prefix. Written whole or not at all (a rename), readable by this user only."""
    if find_run(directory, info.prefix) is not None:
        return None
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = run_file(directory, info.prefix)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"url": info.url, "pid": info.pid, "event": info.event, "prefix": info.prefix}, out)
    os.replace(partial, path)
    return path


def withdraw(path: Path, pid: int) -> None:
    """Remove the runtime file at ``path`` if it still names ``pid`` (a later run's file is left alone)."""
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


@contextlib.contextmanager
def published(directory: Path, info: RunInfo) -> Iterator[Path | None]:
    """``info`` published while the block runs (its path, or None when it could not be: logged why), withdrawn
    after it, however it ends."""
    try:
        path = publish(directory, info)
    except OSError as exc:
        log.warning("cannot write the runtime file in %s (%s): other commands will need --redis", directory, exc)
        path = None
    else:
        if path is None:
            other = find_run(directory, info.prefix)
            log.warning(
                "another mixer run (pid %s) already runs on key prefix %r: commands without --redis join that one",
                other.pid if other else "?",
                info.prefix,
            )
        else:
            log.debug("the tools find this Redis through %s", path)
    try:
        yield path
    finally:
        if path is not None:
            withdraw(path, info.pid)


def redis_url_problem(url: str) -> str | None:
    """Why ``url`` is not a Redis URL this product can use (one server, ``redis+cluster://``,
    ``redis+sentinel://``: ``mixer.connect``), or None when it is one."""
    problem = connect.problem(url)
    return None if problem is None else f"{redact(url, url_secret(url))!r} {problem}"


async def redis_problem(url: str, wait: float = 0.0, patience: float = 5.0) -> str | None:
    """Why the Redis at ``url`` does not answer PING, or None once it does. Each try gets ``patience`` seconds; one
    that fails is followed by another (backoff 0.1 s doubling to 1 s, the first failure logged once) until ``wait``
    seconds have passed, so a process started while its Redis starts, restarts or fails over waits for it."""
    deadline = time.monotonic() + wait
    backoff = Backoff(base=0.1, cap=1.0)
    while True:
        problem = await _ping_problem(url, patience)
        left = deadline - time.monotonic()
        if problem is None or left <= 0:
            return problem
        if not backoff.attempts:
            log.warning("%s (asking again for up to %.0f s)", problem, left)
        await asyncio.sleep(min(backoff.next(), left))


async def _ping_problem(url: str, patience: float) -> str | None:
    redis = connect.client(url, socket_timeout=patience, socket_connect_timeout=patience)
    try:
        await redis.ping()
    except (RedisError, OSError) as exc:
        return redact(f"cannot reach Redis at {url}: {exc or type(exc).__name__}", url_secret(url))
    finally:
        await redis.aclose()
    return None


def local_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses, one per interface that has one, in interface order."""
    found: list[str] = []
    try:
        interfaces = socket.if_nameindex()
    except OSError:
        interfaces = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in interfaces:
            try:
                reply = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:  # no IPv4 address on it (or not Linux)
                continue
            address = IPv4Address(reply[20:24])
            if not address.is_loopback and not address.is_unspecified and str(address) not in found:
                found.append(str(address))
    return found


def _chats(settings: Settings, most: int = 8) -> str:
    tags = [f"#{tag}" for tag in settings.chat_tags]
    if not tags:
        return "no chat (configure [[chats]])"
    return ", ".join(tags[:most]) + (f" and {len(tags) - most} more" if len(tags) > most else "")


def ingest_line(settings: Settings, redis_url: str, files: Sequence[Path], speed: float, follow: bool) -> str:
    """The line `mixer ingest` prints: the sources it follows, the recordings it loops, the chats, the Redis."""
    doing: list[str] = []
    if follow:
        shown = {"mastodon": settings.mastodon_instances, "bluesky": ("Bluesky",), "x": ("X",)}
        live = [name for source in settings.live_sources if settings.tags_for(source) for name in shown[source]]
        idle = [source for source in settings.live_sources if not settings.tags_for(source)]
        if live:
            doing.append(f"following {', '.join(live)}")
        if idle:
            them = "it" if len(idle) == 1 else "them"
            doing.append(f"{', '.join(idle)} configured, but no chat's sources name {them}")
    if files:
        pace = "as fast as possible" if speed == 0 else f"at {speed:g}x"
        names = [f"{Path(f).name}{' (the demo)' if str(f) == settings.demo_file else ''}" for f in files]
        doing.append(f"replaying {', '.join(names)} {pace} in a loop")
    return (
        f"mixer ingest: {'; '.join(doing) or 'nothing to ingest'} into {_chats(settings)} "
        f"on {redact(redis_url)}  (Ctrl-C stops it)"
    )


def merge_line(settings: Settings, redis_url: str) -> str:
    """The line `mixer merge` prints: the chats merged, the streams written, the Redis, one leader at a time."""
    shaped = [name for name in settings.profile_names if name != "full"]
    into = "the feed" + (f" and the {', '.join(shaped)} stream{'s' if len(shaped) > 1 else ''}" if shaped else "")
    return (
        f"mixer merge: merging {_chats(settings)} into {into} on {redact(redis_url)}; "
        "one merge process leads at a time, others stand by  (Ctrl-C stops it)"
    )


def live_lines(web_url: str, detail: str, port: int | None = None, link: str = "") -> list[str]:
    """The lines a fan-out server prints once it listens: where it is live (with ``detail``, e.g. the Redis);
    with ``port`` (listening on every address) the address of each network interface, and ``link`` (the QR
    code's join link) when set."""
    lines = [f"chatmixer is live at {web_url}  ({detail + '; ' if detail else ''}Ctrl-C stops it)"]
    if port is not None:
        addresses = local_addresses()
        for address in addresses:
            lines.append(f"  open it from another machine at http://{address}:{port}/")
        if not addresses:
            lines.append("  this machine has no network address besides loopback: only it can open the wall")
    if port is not None and link:
        lines.append(f"  the wall's QR code sends people to {link}")
    return lines
