"""Big shared frames sent without a copy per client: ``sendfile`` from one in-memory file.

``SharedFrame.of`` puts a frame's bytes once in an anonymous in-memory file (``os.memfd_create``);
``SharedFrame.send`` then hands the file to a client's socket with ``os.sendfile``, so the kernel
queues references to the file's pages instead of copying the bytes into every socket: at 100 KB+
frames a write costs about half the CPU (docs/benchmarks.md), and 10,000 sockets holding the same
frame hold one copy of it. Guarantees:

- a client gets the same bytes in the same order as with ``transport.write``: ``send`` is only used
  while the transport has nothing queued, and what the socket does not take at once goes to the
  transport's buffer, behind it;
- the file is written once and never again (one file per frame), so pages still queued in sockets
  keep their bytes after ``close``;
- small frames (under ``MIN_BYTES``, cheaper to copy), TLS transports (``socket_fd`` is -1) and
  systems without ``memfd_create``/``sendfile`` get ``None``/-1 and are written as usual.
"""

from __future__ import annotations

import asyncio
import logging
import os

log = logging.getLogger(__name__)

MIN_BYTES = 16 << 10  # measured on loopback: copy and sendfile cost the same at ~16 KB, sendfile wins above
AVAILABLE = hasattr(os, "memfd_create") and hasattr(os, "sendfile")
_failures = 0  # in-memory files that could not be made (logged at powers of two)


def socket_fd(transport: asyncio.BaseTransport) -> int:
    """The descriptor of the transport's plain socket, which ``send`` may write to directly; -1 for TLS or none."""
    if not AVAILABLE or transport.get_extra_info("sslcontext") is not None:
        return -1
    sock = transport.get_extra_info("socket")
    try:
        return int(sock.fileno()) if sock is not None else -1
    except (AttributeError, OSError, ValueError):
        return -1


class SharedFrame:
    """One frame in an in-memory file, ready to be sent to many sockets; ``close`` when the broadcast is done."""

    def __init__(self, frame: bytes) -> None:
        self.frame = frame
        self.sent = 0  # sends that went (at least partly) by sendfile
        self.fd = os.memfd_create("mixer-frame", os.MFD_CLOEXEC)
        try:
            view, written = memoryview(frame), 0
            while written < len(frame):
                written += os.write(self.fd, view[written:])
        except OSError:
            os.close(self.fd)
            raise

    @classmethod
    def of(cls, frame: bytes) -> SharedFrame | None:
        """A shared copy of ``frame`` when sending it by sendfile pays, else None (write it as usual)."""
        if not AVAILABLE or len(frame) < MIN_BYTES:
            return None
        try:
            return cls(frame)
        except OSError as err:  # out of memory or descriptors: the usual writes still work
            global _failures
            _failures += 1
            if _failures & (_failures - 1) == 0:  # the 1st, 2nd, 4th, 8th ... time: said, not repeated per frame
                log.warning("zerocopy: no in-memory file (%s), %d times; writing frames per client", err, _failures)
            return None

    def send(self, fd: int, transport: asyncio.WriteTransport) -> int:
        """Send the frame to socket ``fd`` of ``transport``, which must have nothing queued; returns the bytes that
        went by sendfile (the rest, if any, was written to the transport, to follow in order)."""
        size = len(self.frame)
        try:
            sent = os.sendfile(fd, self.fd, 0, size)
        except OSError:  # full (EAGAIN) or broken: the transport's own write queues it or finds the error
            sent = 0
        if sent:
            self.sent += 1
        if sent < size:
            transport.write(memoryview(self.frame)[sent:] if sent else self.frame)
        return sent

    def close(self) -> None:
        os.close(self.fd)
