"""The figures of a `mixer loadtest` run: percentiles, spreads and loss; for people, a few lines of text, a PNG
plot over time, and the verdict.

``verdict`` judges a result against the thresholds the command was given (failed connections, lost
driven posts): what it returns is why the run failed, nothing when it passed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SATURATED = 90.0  # % busy in a second: a core at or above this is saturated for that second


def percentiles(values: Iterable[float]) -> dict[str, float] | None:
    """p50, p95, p99 (nearest rank) and max of ``values``, rounded to 0.1; None when there are none."""
    ordered = sorted(values)
    if not ordered:
        return None

    def rank(q: float) -> float:
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 1)

    return {"count": len(ordered), "p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "max": rank(1.0)}


def merged_codes(counts: list[dict[int, int]]) -> dict[str, int]:
    """Close-code counts of every worker summed, keyed by the code as a string (JSON keys)."""
    out: dict[str, int] = {}
    for c in counts:
        for code, n in c.items():
            out[str(code)] = out.get(str(code), 0) + n
    return out


def spread_of(values: list[int]) -> dict[str, float] | None:
    """Min, mean (to 0.1) and max of ``values``; None when there are none."""
    if not values:
        return None
    return {"min": min(values), "mean": round(sum(values) / len(values), 1), "max": max(values)}


def loss_of(published: int, seen: list[int]) -> dict[str, int]:
    """Driven posts the sampled clients missed: the worst one's count and how many missed any."""
    missing = [max(0, published - n) for n in seen]
    return {
        "published": published,
        "sampled_clients": len(seen),
        "clients_missing": sum(1 for m in missing if m),
        "worst_missing": max(missing, default=published),
    }


def render_plot(result: dict[str, Any], path: Path) -> None:
    """Write a PNG of latency percentiles and deliveries per second over the run (needs matplotlib)."""
    from matplotlib.figure import Figure  # not pyplot: no global state, no display; the Agg canvas writes PNG

    rows = result["timeline"]
    fig = Figure(figsize=(9, 6), dpi=100, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    timed = [r for r in rows if r["latency_ms"]]
    for q, style in (("p50", "-"), ("p95", "--"), ("p99", ":"), ("max", "-.")):
        top.plot([r["second"] for r in timed], [r["latency_ms"][q] for r in timed], style, label=q)
    top.set_ylabel("latency, ms")
    top.legend(loc="upper left")
    title = result.get("title", "mixer loadtest")
    top.set_title(f"{title}: {result['clients']:,} clients, {result['processes']} processes, {result['url']}")
    bottom.bar([r["second"] for r in rows], [r["deliveries"] for r in rows], color="#4f7fc3", label="deliveries/s")
    for n, at in enumerate(result.get("pass_starts_s", ())):  # where each pass through the recording began
        for axes in (top, bottom):
            axes.axvline(at, color="#888888", linestyle="--", linewidth=0.8, label="pass start" if n == 0 else None)
    bottom.legend(loc="upper left")
    bottom.set_ylabel("deliveries / s")
    bottom.set_xlabel("seconds since the first client connected")
    fig.savefig(path, format="png")


def report(result: dict[str, Any]) -> str:
    """The result as a few human-readable lines."""
    lat, loss, server, cores = result["latency_ms"], result["loss"], result["server"], result["cores"]
    spread = result["posts_per_client"] or {"min": 0, "mean": 0, "max": 0}
    lines = [
        f"clients      {result['connected_peak']:,} connected of {result['clients']:,} "
        f"({result['failed']} failed, {result['closes']} closed by the server, {result['lag_frames']} lag frames)",
        f"deliveries   {result['deliveries']:,} in {result['elapsed_s']} s = {result['deliveries_per_s']:,}/s; "
        f"posts per client min {spread['min']} mean {spread['mean']} max {spread['max']}",
    ]
    if loss is not None:
        lines.append(
            f"loss         {loss['worst_missing']} of {loss['published']:,} driven posts missing on the worst "
            f"of {loss['sampled_clients']} sampled clients ({loss['clients_missing']} missing any)"
        )
    if lat is not None:
        lines.append(f"latency ms   p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}  max {lat['max']}")
    if server is not None:
        lines.append(f"server       pid {server['pid']}: {server['cpu_percent']}% CPU, {memory_per_connection(server)}")
    busy = ", ".join(f"cpu{i} {b}%" for i, b in enumerate(cores["busy_percent"]))
    hot = ", ".join(f"cpu{i}" for i in cores["saturated"]) or "none"
    lines.append(f"cores        {busy}; saturated (>= {SATURATED:.0f}% in some second): {hot}")
    return "\n".join(lines)


def memory_per_connection(server: dict[str, Any]) -> str:
    """The server's memory per connection as the report says it; when it could not be measured, why."""
    per = server["bytes_per_connection"]
    if per is not None:
        return f"{per / 1024:,.1f} KiB per connection"
    before, connected, clients = server["rss_before"], server["rss_connected"], server.get("connected")
    if before is None or connected is None or not clients:
        return "memory per connection not measured"
    return (
        f"memory per connection not measured (RSS grew {(connected - before) / clients:,.0f} B per connection: "
        "the server reused memory its earlier clients freed; measure on a freshly started server)"
    )


def verdict(result: dict[str, Any], max_failed: int = 0, max_loss: float = 0.0) -> list[str]:
    """Why the run failed, one reason a line, or [] when it passed: no client connected, more than ``max_failed``
    connections failed, or the worst sampled client missed more than ``max_loss`` % of the driven posts."""
    problems: list[str] = []
    clients, failed, connected = result["clients"], result["failed"], result["connected_peak"]
    if connected == 0:
        problems.append(f"no client could connect to {result['url']} ({failed} of {clients:,} failed)")
    elif failed > max_failed:
        problems.append(f"{failed:,} of {clients:,} clients could not connect (--max-failed {max_failed})")
    loss = result["loss"]
    if loss is not None and loss["published"] and connected:
        missing = 100.0 * loss["worst_missing"] / loss["published"]
        if missing > max_loss:
            problems.append(
                f"a sampled client missed {loss['worst_missing']:,} of {loss['published']:,} driven posts "
                f"({missing:.2f}% > --max-loss {max_loss:g}%)"
            )
    return problems
