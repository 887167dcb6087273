"""A night report as one self-contained HTML page: inline CSS, charts as inline SVG, nothing loaded from anywhere.

``render`` turns the document ``report_figures.figures`` computes into the page: the stacked
timeline with its busiest bins marked, the mixing matrix as a heat map with its numbers (and as a
table), replies across chats, and a section per chat. Charts are drawn by matplotlib's SVG
backend on a ``Figure`` (no pyplot: no global state, no display) with text as paths (no fonts to
load) and math parsing off. Everything that came from posts (names, handles, chat tags) is
HTML-escaped, and the page's Content-Security-Policy forbids every load and every script, so a
hostile name stays text. Not here: the figures, reading the feed.
"""

from __future__ import annotations

import io
from datetime import datetime, tzinfo
from html import escape
from typing import Any

from mixer.tools.report_figures import TOP_AUTHORS
from mixer.tools.transcript_format import clock

_FALLBACK = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
# For series drawn side by side whose chats share a colour (a config's 8 colours repeat from its 9th chat):
# Tableau 20 without its greys, which "other chats" uses.
_DISTINCT = (
    "#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#9467bd",
    "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#bcbd22", "#dbdb8d", "#17becf", "#9edae5",
)  # fmt: skip
OTHER_COLOUR = "#9aa1ad"
_RC: Any = {"svg.fonttype": "path", "text.parse_math": False, "font.size": 9}  # matplotlib types each key
NEWCOMERS_SHOWN = 12  # per chat; the JSON has them all
# Drawn and carded: the chats with the most posts (a feed over months has hundreds); the JSON and the table have all.
MATRIX_CHATS = 16
TIMELINE_CHATS = 12  # the rest stack as one "other chats" series
CHAT_CARDS = 24
BUSIEST_CHATS = 5  # chats named in each busiest bin's line, most posts first; the JSON has them all
OTHER = "other chats"

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;background:#f6f7f9;margin:0}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:28px 0 8px}h3{font-size:17px;margin:0 0 6px}
.sub{color:#5a6272;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:10px 14px;min-width:120px}
.card b{display:block;font-size:24px}
figure{background:#fff;border:1px solid #dde1e8;border-radius:8px;margin:0;padding:8px;overflow-x:auto}
figure svg{max-width:100%;height:auto;display:block}
figcaption{color:#5a6272;font-size:13px;padding:4px 6px}
table{border-collapse:collapse;background:#fff;margin:8px 0;font-size:14px}
th,td{border:1px solid #dde1e8;padding:4px 8px;text-align:right}th:first-child,td:first-child{text-align:left}
th{background:#eef0f4}
.chats{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:12px}
.chat{background:#fff;border:1px solid #dde1e8;border-left:6px solid var(--c);border-radius:8px;padding:12px}
.chat ul{margin:4px 0 8px;padding-left:20px}.chat p{margin:4px 0}
.tag{font-weight:600}.muted{color:#5a6272}.scroll{overflow-x:auto;max-width:100%}
"""


def render(doc: dict[str, Any], colours: dict[str, str], tz: tzinfo) -> str:
    """The whole page for ``doc`` (``report_figures.figures`` plus ``event`` and ``profile``), times in ``tz``."""
    doc = _drawn(doc)
    palette = _palette(doc["chats"], colours) | {OTHER: OTHER_COLOUR}
    event = doc.get("event", {})
    # an empty feed read without --since/--until has no range at all (null), never the epoch
    zone = _zone(doc, tz)
    when = "no posts in the feed" if doc["from"] is None else _range(doc["from"], doc["to"], tz, zone)
    title = f"{event.get('name', 'chatmixer')}: {when}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        'img-src data:">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{_e(event.get('name', ''))}</h1>",
        f'<p class="sub">{_e(when)} ({_e(str(tz))}), feed profile <b>{_e(doc.get("profile", "full"))}</b></p>',
        _cards(doc),
    ]
    if not doc["posts"]:
        parts.append("<p>No posts in this range.</p>")
    else:
        parts += [
            _timeline_section(doc, apart(palette, list(doc["timeline"]["chats"])), tz, zone),
            _matrix_section(doc),
            _replies_section(doc),
            _chats_section(doc, palette),
        ]
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def _drawn(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with what is drawn cut to the busiest chats: the matrix to ``MATRIX_CHATS``, the timeline to
    ``TIMELINE_CHATS`` (and the rest as one series), the cards to ``CHAT_CARDS``; figures and tables stay whole."""
    posts = {c["chat"]: c["posts"] for c in doc["per_chat"]}
    busiest = sorted(doc["chats"], key=lambda c: -posts[c])
    keep = [i for i, c in enumerate(doc["chats"]) if c in set(busiest[:MATRIX_CHATS])]
    counts = doc["matrix"]["counts"]
    matrix = doc["matrix"] | {
        "drawn": [doc["chats"][i] for i in keep],
        "drawn_counts": [[counts[i][j] for j in keep] for i in keep],
    }
    lines = doc["timeline"]["chats"]
    top = set(busiest[:TIMELINE_CHATS])
    series = {c: n for c, n in lines.items() if c in top}
    rest = [n for c, n in lines.items() if c not in top]
    if rest:
        series[OTHER] = [sum(column) for column in zip(*rest, strict=True)]
    cards = set(busiest[:CHAT_CARDS])
    return doc | {
        "matrix": matrix,
        "timeline": doc["timeline"] | {"chats": series},
        "cards": [c for c in doc["per_chat"] if c["chat"] in cards],
    }


def _cards(doc: dict[str, Any]) -> str:
    removed = doc["removed"]
    figures = [
        ("posts", doc["posts"]),
        ("chats", len(doc["chats"])),
        ("authors", doc["authors"]),
        ("newcomers", doc["newcomers"]),
        ("cross-posts", doc["cross_posts"]),  # posts in two chats or more (a pair count counts a post per pair)
        ("removed", removed["hidden"] + removed["retracted"]),
    ]
    cards = "".join(f'<div class="card"><b>{n:,}</b>{_e(label)}</div>' for label, n in figures)
    return f'<div class="cards">{cards}</div>'


def _timeline_section(doc: dict[str, Any], palette: dict[str, str], tz: tzinfo, zone: str = "") -> str:
    line = doc["timeline"]
    unit = _unit(line["bin_seconds"])
    busiest = "".join(
        f"<li><b>{_e(_when(b['at'], tz, zone))}</b>: {b['posts']:,} posts ({_busiest_chats(b['chats'])})</li>"
        for b in line["busiest"]
    )
    return (
        f"<h2>Posts per {_e(unit)}</h2>"
        f'<figure id="timeline">{timeline_svg(doc, palette, tz, zone)}'
        f"<figcaption>Posts per {_e(unit)} per chat, stacked (a post in two chats counts in both); "
        f"numbered markers: the busiest {_e(_plural(unit))}.</figcaption></figure>"
        f"<h3>Busiest {_e(_plural(unit))}</h3><ol>{busiest}</ol>"
    )


def _busiest_chats(chats: dict[str, int]) -> str:
    """The ``BUSIEST_CHATS`` chats with most posts in a bin, most first (config order on a tie), then how many more
    had posts in it: of 50 chats, a list of them all is a wall of text."""
    ranked = sorted(chats.items(), key=lambda kv: -kv[1])  # stable: ties stay in config order
    shown = ", ".join(f'<span class="tag">#{_e(c)}</span> {n:,}' for c, n in ranked[:BUSIEST_CHATS])
    more = len(ranked) - BUSIEST_CHATS
    return shown + (f", +{more:,} more chat{'s' * (more != 1)}" if more > 0 else "")


def _matrix_section(doc: dict[str, Any]) -> str:
    matrix = doc["matrix"]
    chats = matrix["drawn"]
    head = "".join(f"<th>#{_e(c)}</th>" for c in chats)
    rows = "".join(
        f"<tr><th>#{_e(c)}</th>" + "".join(f"<td>{n:,}</td>" for n in row) + "</tr>"
        for c, row in zip(chats, matrix["drawn_counts"], strict=True)
    )
    cut = len(matrix["chats"]) - len(chats)
    more = f" The {cut:,} chats with fewest posts are in the JSON only." if cut else ""
    chart = (
        f'<figure id="matrix">{matrix_svg(doc)}<figcaption>Posts tagged with both chats of a cell; '
        f"the diagonal (grey): posts in that chat alone.{_e(more)}</figcaption></figure>"
        if len(chats) > 1
        else ""
    )
    table = f'<div class="scroll"><table class="matrix"><tr><th></th>{head}</tr>{rows}</table></div>'
    return f"<h2>The mixing matrix</h2>{chart}{table}"


def _replies_section(doc: dict[str, Any]) -> str:
    if not doc["replies"]:
        return ""
    rows = "".join(
        f"<tr><td>#{_e(r['from'])}</td><td>#{_e(r['to'])}</td><td>{r['posts']:,}</td></tr>" for r in doc["replies"]
    )
    return (
        "<h2>Replies across chats</h2>"
        f"<table><tr><th>reply in</th><th>to a post in</th><th>replies</th></tr>{rows}</table>"
    )


def _chats_section(doc: dict[str, Any], palette: dict[str, str]) -> str:
    head = "<tr><th>chat</th><th>posts</th><th>authors</th><th>newcomers</th><th>questions</th><th>answers</th>"
    head += "<th>boosts</th><th>removed</th></tr>"
    rows = "".join(
        f"<tr><td>#{_e(c['chat'])}</td><td>{c['posts']:,}</td><td>{c['authors']:,}</td>"
        f"<td>{len(c['newcomers']):,}</td><td>{len(c['questions']):,}</td><td>{c['answers']:,}</td>"
        f"<td>{c['boosts']:,}</td><td>{c['removed']['hidden'] + c['removed']['retracted']:,}</td></tr>"
        for c in doc["per_chat"]
    )
    cards = "".join(_chat_card(c, palette[c["chat"]]) for c in doc["cards"])
    cut = len(doc["per_chat"]) - len(doc["cards"])
    more = f'<p class="muted">The {cut:,} chats with fewest posts: in the table above and the JSON.</p>' if cut else ""
    return f'<h2>Per chat</h2><table>{head}{rows}</table><div class="chats">{cards}</div>{more}'


def _chat_card(chat: dict[str, Any], colour: str) -> str:
    top = "".join(f"<li>{_person(a)}: {a['posts']:,}</li>" for a in chat["top_authors"][:TOP_AUTHORS])
    questions = ", ".join(
        f"Q{q['n']}{'' if q['asked'] else ' (not asked)'} \u2192 {q['answers']}" for q in chat["questions"]
    )
    fresh = chat["newcomers"]
    shown = ", ".join(_person(a) for a in fresh[:NEWCOMERS_SHOWN])
    more = f" and {len(fresh) - NEWCOMERS_SHOWN:,} more" if len(fresh) > NEWCOMERS_SHOWN else ""
    removed = chat["removed"]
    return (
        f'<section class="chat" style="--c:{_e(colour)}"><h3>#{_e(chat["chat"])}</h3>'
        f"<p>{_n(chat['posts'], 'post')} by {_n(chat['authors'], 'author')}, {_n(chat['boosts'], 'boost')}; "
        f"removed: {removed['hidden']:,} hidden by a moderator, {removed['retracted']:,} retracted</p>"
        f'<p class="muted">Top authors</p><ul>{top}</ul>'
        f'<p><span class="muted">Questions:</span> {_e(questions) or "none"}</p>'
        f'<p><span class="muted">Newcomers ({len(fresh):,}):</span> {shown or "none"}{_e(more)}</p></section>'
    )


def timeline_svg(doc: dict[str, Any], palette: dict[str, str], tz: tzinfo, zone: str = "") -> str:
    """The stacked bars of posts per bin per chat, the busiest bins numbered, as an inline ``<svg>``; times of day
    followed by ``zone`` (a strftime suffix, ``_zone``)."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    line = doc["timeline"]
    step, n = line["bin_seconds"], line["bins"]
    start = _ms(line["start"])
    with rc_context({**_RC, "svg.hashsalt": "timeline"}):
        fig = Figure(figsize=(10.5, 3.8), dpi=100, layout="constrained")
        ax = fig.add_subplot()
        bottom = [0] * n
        for chat, counts in line["chats"].items():
            ax.bar(
                range(n),
                counts,
                bottom=bottom,
                width=0.9,
                color=palette[chat],
                label=chat if chat == OTHER else f"#{chat}",
                linewidth=0,
            )
            bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
        top = max(bottom, default=0) or 1
        for rank, busy in enumerate(line["busiest"], 1):
            i = (_ms(busy["at"]) - start) // (step * 1000)
            ax.annotate(
                str(rank),
                (i, bottom[i]),
                xytext=(0, 6),
                textcoords="offset points",
                ha="center",
                fontweight="bold",
                bbox={"boxstyle": "circle,pad=0.25", "fc": "#1d2330", "ec": "none"},
                color="white",
            )
        ax.set_ylim(0, top * 1.18)
        ax.set_xlim(-0.6, n - 0.4)
        every = max(1, -(-n // 12))
        ticks = list(range(0, n, every))
        fmt = "%H:%M" + zone if step < 86_400 else "%b %d"
        ax.set_xticks(
            ticks, [datetime.fromtimestamp((start + i * step * 1000) / 1000, tz).strftime(fmt) for i in ticks]
        )
        ax.set_ylabel(f"posts per {_unit(step)}")
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="y", color="#dde1e8", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, ncols=1 + len(line["chats"]) // 16)
        return _svg(fig)


def matrix_svg(doc: dict[str, Any]) -> str:
    """The mixing matrix as a heat map with the count in every cell (the diagonal grey), as an inline ``<svg>``."""
    import numpy as np
    from matplotlib import rc_context
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    chats, counts = doc["matrix"]["drawn"], doc["matrix"]["drawn_counts"]
    k = len(chats)
    values = np.ma.masked_array(np.array(counts, dtype=float), mask=np.eye(k, dtype=bool))
    size = min(11.0, 2.4 + 0.62 * k)
    font = 9 if k <= 12 else max(5, 9 - (k - 12) // 4)
    with rc_context({**_RC, "svg.hashsalt": "matrix"}):
        fig = Figure(figsize=(size + 1.2, size), dpi=100, layout="constrained")
        ax = fig.add_subplot()
        ax.set_facecolor("#eceef2")  # the masked diagonal
        image = ax.imshow(values, cmap="Blues", vmin=0, vmax=max(1.0, float(values.max() or 1)))
        high = float(values.max() or 1)
        for i in range(k):
            for j in range(k):
                n = counts[i][j]
                light = i != j and n > high * 0.55
                style = "italic" if i == j else "normal"
                color = "#6b7280" if i == j else ("white" if light else "#1d2330")
                ax.text(j, i, f"{n:,}", ha="center", va="center", fontsize=font, color=color, fontstyle=style)
        labels = [f"#{c}" for c in chats]
        ax.set_xticks(range(k), labels, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(k), labels)
        bar = fig.colorbar(image, ax=ax, shrink=0.7, label="posts in both chats")
        bar.locator = MaxNLocator(integer=True)  # counts: no 0.5 ticks
        bar.update_ticks()
        return _svg(fig)


def _svg(fig: Any) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # inline: no XML declaration or DOCTYPE (whose DTD URL nobody needs)


def _palette(chats: list[str], colours: dict[str, str]) -> dict[str, str]:
    return {c: colours.get(c) or _FALLBACK[i % len(_FALLBACK)] for i, c in enumerate(chats)}


def apart(palette: dict[str, str], drawn: list[str]) -> dict[str, str]:
    """``palette`` with every chat of ``drawn`` (in drawing order) in a colour of its own: one whose colour an
    earlier one already has takes the first of ``_DISTINCT`` no drawn chat has, so a legend names one series a
    colour. Chats not drawn keep theirs."""
    taken = {palette[c].casefold() for c in drawn if c in palette}
    spare = (c for c in _DISTINCT if c.casefold() not in taken)
    out: dict[str, str] = dict(palette)
    used: set[str] = set()
    for chat in drawn:
        colour = palette[chat].casefold()
        if colour in used:
            out[chat] = next(spare, palette[chat])
            colour = out[chat].casefold()
        used.add(colour)
    return out


def _person(author: dict[str, Any]) -> str:
    handle = f"@{_e(author['handle'])}"
    return f'{_e(author["name"])} <span class="muted">{handle}</span>' if author["name"] else handle


def _unit(step: int) -> str:
    names = {60: "minute", 300: "5 minutes", 900: "15 minutes", 3600: "hour", 21_600: "6 hours", 86_400: "day"}
    return names.get(step, "week")


def _plural(unit: str) -> str:
    return unit if unit[0].isdigit() else f"{unit}s"


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'s' * (count != 1)}"


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _when(iso: str, tz: tzinfo, zone: str = "", time: str = "%H:%M") -> str:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(tz).strftime(f"%Y-%m-%d {time}{zone}")


def _range(start: str, end: str, tz: tzinfo, zone: str) -> str:
    """``start to end`` in ``tz``, to the second when the range is short (``clock``)."""
    time = clock(_ms(start), _ms(end))
    return f"{_when(start, tz, zone, time)} to {_when(end, tz, zone, time)}"


def _zone(doc: dict[str, Any], tz: tzinfo) -> str:
    """``" %Z"`` when the range crosses a change of ``tz``'s offset (a DST change: 01:30 comes twice, and
    01:20 to 01:30 may be 70 minutes), so every time shown names its abbreviation (EDT, EST); else ``""``."""
    if doc["from"] is None:
        return ""
    line = doc["timeline"]
    moments = [_ms(doc["from"]), _ms(doc["to"])]
    moments += [_ms(line["start"]) + i * line["bin_seconds"] * 1000 for i in range(line["bins"])]
    offsets = {datetime.fromtimestamp(ms / 1000, tz).utcoffset() for ms in moments}
    return " %Z" if len(offsets) > 1 else ""


def _e(text: Any) -> str:
    return escape(str(text), quote=True)
