"""A start's timeline as a waterfall picture: an SVG document with nothing outside it (no fonts, scripts,
styles or links to fetch). One bar per phase per host, each starting where the one before it ended, on a
time axis in seconds from the start; a phase with no time gets its row and says why."""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

from booted.state.timelines import NO_KERNEL, PHASES, Phase

COLORS = dict(zip([name for name, _, _ in PHASES],
                  ("#9e9e9e", "#8e44ad", "#c0392b", "#d68910", "#2e86c1", "#27ae60", "#16a085", "#34495e")))
WIDTH, LEFT, RIGHT, TOP, ROW, HOST_GAP = 900, 170, 70, 46, 16, 10
STEPS = (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
WHY = {NO_KERNEL: "n/a: no kernel of its own (the machine's)", "-": "-"}


def step_for(span: float, most: int = 10) -> float:
    """A tick step that puts at most `most` ticks on `span` seconds."""
    return next((s for s in STEPS if span / s <= most), STEPS[-1])


def waterfall(title: str, hosts: Sequence[tuple[str, Sequence[Phase]]]) -> str:
    """The picture of `hosts` (label, its phases in order) under `title`."""
    span = max([p.end for _, phases in hosts for p in phases if p.end is not None] + [0.1])
    step = step_for(span)
    span = max(span, step * -(-span // step))  # the axis ends on a tick
    scale = (WIDTH - LEFT - RIGHT) / span
    rows = sum(1 + len(phases) for _, phases in hosts)
    height = TOP + rows * ROW + len(hosts) * HOST_GAP + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">',
           f"<title>{escape(title)}</title>",
           f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>',
           f'<text x="10" y="20" font-size="14" font-weight="bold">{escape(title)}</text>']
    bottom = height - 24
    ticks, t = [], 0.0
    while t <= span + 1e-9:
        ticks.append(t)
        t += step
    for t in ticks:  # the time axis: a grid line and a label per tick
        x = LEFT + t * scale
        out.append(f'<line class="tick" x1="{x:.1f}" y1="{TOP - 8}" x2="{x:.1f}" y2="{bottom}" stroke="#e0e0e0"/>')
        out.append(f'<text class="axis" x="{x:.1f}" y="{bottom + 14}" text-anchor="middle" fill="#555">{t:g} s</text>')
    out.append(f'<line x1="{LEFT}" y1="{bottom}" x2="{WIDTH - RIGHT}" y2="{bottom}" stroke="#555"/>')
    y = TOP
    for host, phases in hosts:
        done = [p.end for p in phases if p.end is not None]
        out.append(f'<text class="host" x="10" y="{y + 12}" font-weight="bold">{escape(host)}'
                   + (f" ({max(done):.2f} s)" if done else "") + "</text>")
        y += ROW
        for p in phases:
            out.append(f'<text x="24" y="{y + 11}" fill="#333">{escape(p.name)}</text>')
            if p.begin is None or p.end is None:
                out.append(f'<text x="{LEFT}" y="{y + 11}" fill="#999">{escape(WHY.get(p.why, p.why))}</text>')
            else:
                x, w = LEFT + p.begin * scale, max(1.0, (p.end - p.begin) * scale)
                tip = f"{host} {p.name}: {p.end - p.begin:.3f} s ({p.begin:.3f} to {p.end:.3f} s after the start)"
                out.append(f'<rect class="bar" data-host={quoteattr(host)} data-phase={quoteattr(p.name)} '
                           f'x="{x:.2f}" y="{y + 2}" width="{w:.2f}" height="{ROW - 4}" '
                           f'fill="{COLORS.get(p.name, "#777")}"><title>{escape(tip)}</title></rect>')
                out.append(f'<text x="{x + w + 4:.1f}" y="{y + 11}" fill="#333">{p.end - p.begin:.2f} s</text>')
            y += ROW
        y += HOST_GAP
    out.append("</svg>")
    return "\n".join(out) + "\n"
