"""A tool whose output is piped into a reader that stops early (`mixer synth | head`) stops quietly, as cat does.

Python ignores SIGPIPE, so a write to a pipe whose reader has gone raises BrokenPipeError; a command that
writes to stdout catches it and returns ``reader_gone()``. Not here: what each tool writes.
"""

from __future__ import annotations

import os
import sys


def reader_gone() -> int:
    """Exit status 0 for a command whose stdout reader went away; stdout then points at /dev/null, so the
    interpreter's last flush of what is still buffered cannot fail again with a traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 0


def print_out(text: str) -> None:
    """``text`` and a newline on stdout, flushed; a reader gone is no error (``reader_gone``): the command goes on."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        reader_gone()
