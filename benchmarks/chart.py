"""The no-op plan's time against the number of mounts, as a small SVG chart.

Hand-written SVG (no plotting library): one line per way of checking, a
logarithmic time axis, since the `bao` CLI script is two orders of magnitude
above the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from html import escape
from typing import Any

_WIDTH, _HEIGHT = 640, 400
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 190, 40, 50
# (label, colour, the seconds of one row)
_SERIES: tuple[tuple[str, str, Callable[[dict[str, Any]], float]], ...] = (
    ("bao CLI script", "#d62728", lambda row: row["bao_cli"]["seconds"]),
    ("reconciler plan (process)", "#9467bd", lambda row: row["ours_process"]["median_s"]),
    ("reconciler (in process)", "#1f77b4", lambda row: row["ours"]["median_s"]),
    ("floor (raw GETs)", "#2ca02c", lambda row: row["floor"]["median_s"]),
)


def plan_time_svg(rows: list[dict[str, Any]], machine: str) -> str:
    """The chart of `results["noop_plan"]` (one row per size)."""
    sizes: list[int] = [int(row["mounts"]) for row in rows]
    values = [value(row) for row in rows for _, _, value in _SERIES]
    low = 10 ** math.floor(math.log10(min(values)))
    high = 10 ** math.ceil(math.log10(max(values)))
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    x_max = max(sizes)

    def x(mounts: float) -> float:
        return _LEFT + plot_w * mounts / x_max

    def y(seconds: float) -> float:
        share = (math.log10(seconds) - math.log10(low)) / (math.log10(high) - math.log10(low))
        return _TOP + plot_h * (1 - share)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{_WIDTH}" height="{_HEIGHT}" fill="white"/>',
        f'<text x="{_LEFT}" y="20" font-size="14">No-op plan: seconds against mounts '
        f"(= catalog entries), log scale</text>",
        f'<text x="{_LEFT}" y="{_HEIGHT - 8}" fill="#666">{escape(machine)}</text>',
    ]
    decade = low
    while decade <= high:
        parts.append(
            f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y(decade):.1f}" '
            f'y2="{y(decade):.1f}" stroke="#ddd"/>'
            f'<text x="{_LEFT - 6}" y="{y(decade) + 4:.1f}" text-anchor="end">{decade:g} s</text>'
        )
        decade *= 10
    for mounts in sizes:
        parts.append(
            f'<line x1="{x(mounts):.1f}" x2="{x(mounts):.1f}" y1="{_TOP}" '
            f'y2="{_TOP + plot_h}" stroke="#eee"/>'
            f'<text x="{x(mounts):.1f}" y="{_TOP + plot_h + 16}" '
            f'text-anchor="middle">{mounts}</text>'
        )
    parts.append(
        f'<text x="{_LEFT + plot_w / 2}" y="{_TOP + plot_h + 34}" text-anchor="middle">'
        "mounts</text>"
    )
    for index, (label, colour, value) in enumerate(_SERIES):
        points = " ".join(f"{x(row['mounts']):.1f},{y(value(row)):.1f}" for row in rows)
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>'
        )
        parts.extend(
            f'<circle cx="{x(row["mounts"]):.1f}" cy="{y(value(row)):.1f}" r="3" fill="{colour}"/>'
            for row in rows
        )
        legend_y = _TOP + 10 + 20 * index
        parts.append(
            f'<line x1="{_WIDTH - _RIGHT + 15}" x2="{_WIDTH - _RIGHT + 35}" y1="{legend_y}" '
            f'y2="{legend_y}" stroke="{colour}" stroke-width="2"/>'
            f'<text x="{_WIDTH - _RIGHT + 40}" y="{legend_y + 4}">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
