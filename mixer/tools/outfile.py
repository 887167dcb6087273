"""The ``--out FILE`` of a tool that reads for minutes before it writes (`mixer report`, `mixer transcript`).

``OutFile(path)`` is made before the reading: it checks the destination then (a missing directory,
a directory given as the file, a place that cannot be written), so a night is not read for nothing,
and opens a temporary file beside it; ``commit`` renames that over the destination once the text is
whole, so a write that fails half way (a full disk, a signal) leaves an earlier file as it was and
never a truncated one; ``discard`` removes it. A destination that exists but is no regular file
(``/dev/stdout``, a FIFO) is written in place, at ``open``. Not here: what is written, the messages'
prefix.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import IO


class OutFile:
    """A file written whole or not at all: ``open``, write, ``commit``; ``discard`` (idempotent) if anything fails."""

    def __init__(self, path: Path) -> None:
        """Check ``path`` and make its temporary file; ValueError naming ``path`` and what is wrong with it."""
        self.path = path
        self._file: IO[bytes] | None = None
        self._temp: Path | None = None
        target = path.resolve() if path.is_symlink() else path  # a link stays a link: its target is replaced
        try:
            found = target.stat()
        except (FileNotFoundError, NotADirectoryError):  # (the folder is checked below)
            found = None
        except OSError as exc:
            raise ValueError(f"cannot write {path}: {exc.strerror or exc}") from None
        if found is not None and stat.S_ISDIR(found.st_mode):
            raise ValueError(f"cannot write {path}: it is a directory; give a file name")
        if found is not None and not stat.S_ISREG(found.st_mode):
            if not os.access(target, os.W_OK):
                raise ValueError(f"cannot write {path}: permission denied")
            self._target = target  # /dev/stdout, a FIFO: opened (a FIFO waits for its reader) when written
            return
        folder = target.parent
        if not folder.is_dir():
            problem = "is not a directory" if folder.exists() else "does not exist"
            raise ValueError(f"cannot write {path}: the directory {folder} {problem}")
        if found is not None and not os.access(target, os.W_OK):  # replacing it would bypass its read-only mode
            raise ValueError(f"cannot write {path}: permission denied")
        try:
            fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=folder)
        except OSError as exc:
            raise ValueError(f"cannot write {path}: {exc.strerror or exc} (making a file in {folder})") from None
        self._target, self._temp = target, Path(temp)
        os.fchmod(fd, stat.S_IMODE(found.st_mode) if found is not None else 0o666 & ~_umask())
        self._file = os.fdopen(fd, "wb")

    def open(self) -> IO[bytes]:
        """The file to write to (the temporary one, or a special file opened now); OSError if it cannot be opened."""
        if self._file is None:
            self._file = self._target.open("wb")
        return self._file

    def commit(self) -> None:
        """Flush what was written and put it in place of the destination; OSError (the temporary file removed) if
        that fails."""
        try:
            file = self.open()
            file.close()
            if self._temp is not None:
                os.replace(self._temp, self._target)
                self._temp = None
        finally:
            self.discard()

    def discard(self) -> None:
        """Close and remove the temporary file, leaving the destination as it was (nothing once committed)."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass  # a flush that failed: the file is dropped anyway
            self._file = None
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
            self._temp = None


def _umask() -> int:
    mask = os.umask(0)  # read by setting it: there is no other way; set straight back
    os.umask(mask)
    return mask
