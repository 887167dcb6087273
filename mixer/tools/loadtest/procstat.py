"""Reading /proc: how busy each core was, a process's CPU time and resident memory, and what the machine is.

The parsers take the files' text and are pure; ``read_cores`` and ``ServerProbe`` read the files.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path


def core_times(proc_stat: str) -> list[tuple[int, int]]:
    """(busy, total) jiffies of each core (cpu0, cpu1, ...) from the text of /proc/stat."""
    cores = []
    for line in proc_stat.splitlines():
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name[3:].isdigit():
            fields = [int(f) for f in rest.split()]
            idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
            total = sum(fields[:8])  # guest time is already inside user/nice
            cores.append((total - idle, total))
    return cores


def core_busy(before: Sequence[tuple[int, int]], after: Sequence[tuple[int, int]]) -> list[float]:
    """Percent busy of each core between two ``core_times`` readings."""
    return [
        round(100.0 * (b1 - b0) / (t1 - t0), 1) if t1 > t0 else 0.0
        for (b0, t0), (b1, t1) in zip(before, after, strict=False)
    ]


def process_ticks(pid_stat: str) -> int:
    """utime + stime (clock ticks) from the text of /proc/<pid>/stat (the name may hold spaces)."""
    fields = pid_stat.rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of the whole line


# Less resident memory per connection than any connection costs (a parked idle websocket, the leanest, measured
# ~1,800 B: docs/benchmarks.md): what such a run shows is memory that earlier clients freed, reused, not the cost.
MIN_CONN_BYTES = 512


def bytes_per_connection(rss_before: int | None, rss_connected: int | None, connected: int) -> int | None:
    """The server's RSS growth per connected client; None when it cannot be told: no readings, no client, or a
    growth below ``MIN_CONN_BYTES`` (a server that held clients before reuses the memory they freed, and its RSS
    grows little or not at all: 0 there would claim connections cost nothing)."""
    if rss_before is None or rss_connected is None or connected <= 0:
        return None
    per = round((rss_connected - rss_before) / connected)
    return per if per >= MIN_CONN_BYTES else None


def rss_bytes(pid_status: str) -> int:
    """Resident set size from the text of /proc/<pid>/status."""
    for line in pid_status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError("no VmRSS line (a kernel thread or a zombie?)")


class ServerProbe:
    """CPU ticks and RSS of the server process, when a pid is given; every reading None without one."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.hz = os.sysconf("SC_CLK_TCK")

    def ticks(self) -> int | None:
        return None if self.pid is None else process_ticks(Path(f"/proc/{self.pid}/stat").read_text())

    def rss(self) -> int | None:
        return None if self.pid is None else rss_bytes(Path(f"/proc/{self.pid}/status").read_text())


def read_cores() -> list[tuple[int, int]]:
    """``core_times`` of this machine now."""
    return core_times(Path("/proc/stat").read_text())


def cpu_model(cpuinfo: str) -> str:
    """The first core's model name and clock from the text of /proc/cpuinfo ("AMD EPYC at 2445 MHz"), or ""."""
    fields: dict[str, str] = {}
    for line in cpuinfo.split("\n\n", 1)[0].splitlines():
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    model, mhz = fields.get("model name", ""), fields.get("cpu MHz", "")
    if mhz:
        try:
            return f"{model} at {float(mhz):.0f} MHz".strip()
        except ValueError:
            pass
    return model


def reference_seconds(additions: int = 2_000_000) -> float:
    """Seconds this interpreter takes for a plain loop of ``additions`` integer additions (best of 3): a figure to
    compare machines by, printed beside benchmark figures, since the same VM kind can be twice as fast one day."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(additions):
            total += i
        best = min(best, time.perf_counter() - started)
    return best


def describe_machine() -> str:
    """One line for a benchmark's head: architecture, cores, CPU model and clock, Python, the reference loop."""
    try:
        model = cpu_model(Path("/proc/cpuinfo").read_text())
    except OSError:
        model = ""
    parts = [platform.machine(), f"{os.cpu_count()} cores", model, f"Python {platform.python_version()}"]
    reference = f"reference loop {reference_seconds() * 1000:.0f} ms (2M additions; lower is faster)"
    return ", ".join(p for p in parts if p) + ", " + reference
