"""The figures of a `mixer loadtest` run for people: a few lines of text and a PNG plot over time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SATURATED = 90.0  # % busy in a second: a core at or above this is saturated for that second


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
    top.set_title(f"mixer loadtest: {result['clients']:,} clients, {result['processes']} processes, {result['url']}")
    bottom.bar([r["second"] for r in rows], [r["deliveries"] for r in rows], color="#4f7fc3", label="deliveries/s")
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
            f"loss         {loss['worst_missing']} of {loss['published']:,} published posts missing on the worst "
            f"of {loss['sampled_clients']} sampled clients ({loss['clients_missing']} missing any)"
        )
    if lat is not None:
        lines.append(f"latency ms   p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}  max {lat['max']}")
    if server is not None:
        per = server["bytes_per_connection"]
        lines.append(
            f"server       pid {server['pid']}: {server['cpu_percent']}% CPU, "
            f"{'?' if per is None else f'{per / 1024:,.1f} KiB'} per connection"
        )
    busy = ", ".join(f"cpu{i} {b}%" for i, b in enumerate(cores["busy_percent"]))
    hot = ", ".join(f"cpu{i}" for i in cores["saturated"]) or "none"
    lines.append(f"cores        {busy}; saturated (>= {SATURATED:.0f}% in some second): {hot}")
    return "\n".join(lines)
