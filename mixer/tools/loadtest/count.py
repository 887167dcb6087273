"""The cheap post counter of `mixer loadtest`: walks websocket frames without parsing them or their JSON.

``FrameCounter`` holds one connection's parse state; its reads land in one buffer shared by
every connection of the process (reads of different sockets never interleave), so no
``bytes`` object is made per read, and one read may hold many frames (``mixer.tools.loadtest.poll``
reads each socket only every few tens of milliseconds). It checks the ``101`` answer to the
upgrade request (``upgrade_request``), then walks the server's frames by their headers only.

Counting: in a text frame whose payload starts with ``{"type":"posts"`` the posts are the
occurrences of ``"id":`` (once per post: network text is JSON-escaped, so a post cannot fake
one; a mark split between two reads is found from the bytes either side). Scanning for it
is the expensive part, and every client of one filter gets the very same frame, so the count
is remembered per frame, keyed by its size and first ``HEAD`` bytes (which hold the first
post's unique key): the first client to get a frame counts it, the others look it up, and
their reader need not even take the rest of its payload (``skippable``/``skipped``).
It counts ``lag`` frames, answers pings with pongs (so the server's heartbeat keeps it) and
remembers the close code. Not here: sockets (``mixer.tools.loadtest.poll``), latency (the sampled
clients of ``mixer.tools.loadtest.client``).
"""

from __future__ import annotations

import base64
import os
import struct
import time
from collections.abc import Callable
from urllib.parse import urlsplit

POSTS = b'{"type":"posts"'
LAG = b'{"type":"lag"'
MARK = b'"id":'
TAIL = len(MARK) - 1  # bytes either side of a read boundary where a split mark can hide
HEAD = 96  # payload bytes that identify a posts frame (with its size): past the first post's key
BUFFER = 1 << 20  # the shared read buffer: one read takes all a socket got since the last round
CHUNK = 4096  # bytes a read at a frame boundary takes when frames are big: a header, its HEAD, small frames whole
BIG = 16 << 10  # frames from this size on are worth dropping unread (an extra read costs about a 16 KB copy)
CLOSE = b"\x88\x82\0\0\0\0\x03\xe8"  # a client's goodbye: a close frame with 1000, masked with a zero key
KNOWN_MAX = 4096  # frames remembered per process before the memory is cleared

Counted = Callable[[int, float], None]  # (posts, receive time)
Lagged = Callable[[], None]  # a lag frame arrived

_shared = bytearray(BUFFER)
_view = memoryview(_shared)
_known: dict[tuple[int, bytes], int] = {}  # (payload size, first HEAD bytes) -> posts in that frame


def upgrade_request(url: str) -> tuple[str, int, bytes]:
    """The host, port and HTTP upgrade request of a ``ws://`` URL (a fresh random key)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    return host, port, request.encode()


class FrameCounter:
    """The frame walker of one websocket connection: feed it reads with ``get_buffer``/``buffer_updated``.

    Subclasses say how to ``write`` (pongs) and what ``opened``, ``refused`` and ``finish`` do."""

    def __init__(self, counted: Counted, lagged: Lagged) -> None:
        self.counted = counted
        self.lagged = lagged
        self.upgraded = False
        self.pending = b""  # unparsed bytes (a header, a frame's HEAD, the HTTP answer) waiting for more
        self.kept = 0  # how many of them get_buffer put at the start of the shared buffer
        self.left = 0  # payload bytes of the current frame still to come
        self.scanning = False  # counting marks in the current frame (not known yet)
        self.frame: tuple[int, bytes] | None = None  # the current posts frame's key into _known
        self.posts = 0  # posts in the current posts frame, so far or as known
        self.edge = b""  # the last TAIL bytes scanned of the current frame
        self.close_code: int | None = None  # from the server's close frame; 0 when the socket just dropped
        self.unread = 0  # payload bytes accounted for by ``skipped``, never read
        self.last_size = 0  # payload size of the latest data frame

    def opened(self) -> None:
        """The server answered the upgrade with 101."""

    def refused(self, line: str) -> None:
        """The server answered the upgrade with something else (its status line)."""
        self.finish()

    def write(self, frame: bytes) -> None:
        """Send ``frame`` to the server (a pong); dropped when the socket cannot take it."""

    def finish(self) -> None:
        """Drop the connection (after a close frame or a refused upgrade)."""

    def get_buffer(self, sizehint: int) -> memoryview:
        kept = len(self.pending)  # the unparsed bytes go first, the read lands right after them
        _shared[:kept] = self.pending
        self.pending = b""
        self.kept = kept
        return _view[kept:]

    def skippable(self) -> int:
        """Payload bytes of the current frame that need not be read (its posts are known, or it is no posts
        frame): ``skipped`` may account for them without their bytes. 0 when the next bytes must be read."""
        return 0 if self.scanning or self.pending else self.left

    def read_size(self) -> int:
        """How many bytes the next read should ask for: ``CHUNK`` at a frame boundary after a big frame (the next
        is likely big and skippable), else everything that arrived (small frames: one read for all of them)."""
        if self.upgraded and not self.left and self.last_size >= BIG:
            return CHUNK
        return BUFFER - len(self.pending)

    def skipped(self, nbytes: int) -> None:
        """``nbytes`` (at most ``skippable()``) of the current frame's payload were dropped unread."""
        self.left -= nbytes
        self.unread += nbytes
        if not self.left and self.frame is not None:
            self.counted(self._frame_done(), time.time())

    def buffer_updated(self, nbytes: int) -> None:
        n = self.kept + nbytes
        pos = 0 if self.upgraded else self._upgrade(n)
        done = 0
        while 0 <= pos < n:
            if self.left:
                end = min(n, pos + self.left)
                if self.scanning:
                    self._scan(pos, end)
                self.left -= end - pos
                pos = end
                if not self.left and self.frame is not None:
                    done += self._frame_done()
                continue
            pos = self._header(pos, n)
        if done:
            self.counted(done, time.time())

    def _scan(self, pos: int, end: int) -> None:
        self.posts += _shared.count(MARK, pos, end)
        if self.edge:
            self.posts += (self.edge + _shared[pos : min(end, pos + TAIL)]).count(MARK)
        self.edge = bytes(_shared[end - TAIL : end]) if end - pos >= TAIL else (self.edge + _shared[pos:end])[-TAIL:]

    def _frame_done(self) -> int:
        assert self.frame is not None
        if self.scanning:
            if len(_known) >= KNOWN_MAX:
                _known.clear()
            _known[self.frame] = self.posts
        self.frame, self.scanning = None, False
        return self.posts

    def _upgrade(self, n: int) -> int:
        """Where the frames start after the HTTP answer; -1 while it is incomplete or was not a 101."""
        end = _shared.find(b"\r\n\r\n", 0, n)
        if end < 0:
            self.pending = bytes(_shared[:n])
            return -1
        if not _shared.startswith(b"HTTP/1.1 101"):
            line = bytes(_shared[: _shared.find(b"\r\n")])
            self.refused(line.decode(errors="replace"))
            return -1
        self.upgraded = True
        self.opened()
        return end + 4

    def _header(self, pos: int, n: int) -> int:
        """Read the frame header at ``pos``: where its payload starts, or -1 to wait for more bytes."""
        if n - pos < 2:
            return self._wait(pos, n)
        opcode, size = _shared[pos] & 0x0F, _shared[pos + 1] & 0x7F
        start = pos + 2 + (2 if size == 126 else 8 if size == 127 else 0)
        if n < start:
            return self._wait(pos, n)
        if size >= 126:
            size = int.from_bytes(_shared[pos + 2 : start], "big")
        if opcode >= 8:  # control frame (close, ping, pong): at most 125 bytes, handled whole
            if n < start + size:
                return self._wait(pos, n)
            self._control(opcode, bytes(_shared[start : start + size]))
            return start + size
        head_size = min(size, HEAD)
        if n < start + head_size:
            return self._wait(pos, n)
        head = bytes(_shared[start : start + head_size])
        self.left = self.last_size = size
        if opcode == 1 and head.startswith(POSTS):
            self.frame = (size, head)
            known = _known.get(self.frame)
            self.scanning = known is None
            self.posts = known or 0
            self.edge = b""
        elif head.startswith(LAG):
            self.lagged()
        return start

    def _wait(self, pos: int, n: int) -> int:
        self.pending = bytes(_shared[pos:n])
        return -1

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == 9:  # ping: a pong with the same payload, masked with a zero key (RFC 6455 5.3)
            self.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
        elif opcode == 8:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            self.finish()
