"""Pictures for the admin console, drawn server-side as inline SVG: no script, no CDN, nothing to fetch.

The console's Content-Security-Policy allows no script and no image source, so every picture is markup in
the page itself. This module does the geometry; ``templates/_pictures.html`` writes the (escaped) SVG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

WAVEFORM_WIDTH, WAVEFORM_HEIGHT = 1000, 120
#: SVG user units: a chart is drawn about as wide as it is shown (wide: the page; narrow: half), so text keeps its size.
WIDE, NARROW, CHART_HEIGHT = 1080, 520, 200
CHART_LEFT, CHART_TOP, CHART_BOTTOM = 44, 18, 22  # room for the y-axis labels, the unit and the x-axis labels
PLOT_HEIGHT = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
#: One colour per series name; others take the palette in turn.
COLOURS = {
    "succeeded": "#1e7b34",
    "failed": "#b3261e",
    "retrying": "#d08a00",
    "lost": "#7b3fb3",
    "cancelled": "#8a94a6",
    "waiting": "#2451b3",
}
PALETTE = ("#2451b3", "#1e7b34", "#d08a00", "#b3261e", "#7b3fb3", "#0f8a8a", "#8a94a6")


def colour(name: str, index: int) -> str:
    return COLOURS.get(name) or PALETTE[index % len(PALETTE)]


def waveform_points(peaks: Sequence[Sequence[float]]) -> str:
    """The [min, max] pairs (-1..1) as one outline: the maxima left to right, then the minima back."""
    mid = WAVEFORM_HEIGHT / 2
    step = WAVEFORM_WIDTH / max(len(peaks) - 1, 1)

    def y(value: float) -> str:
        return f"{mid - max(-1.0, min(1.0, value)) * mid:.1f}"

    top = [f"{i * step:.1f},{y(pair[1])}" for i, pair in enumerate(peaks)]
    bottom = [f"{i * step:.1f},{y(pair[0])}" for i, pair in reversed(list(enumerate(peaks)))]
    return " ".join(top + bottom)


@dataclass(frozen=True)
class Chart:
    """Series of values over the same x positions (oldest first), labelled at both ends."""

    title: str
    unit: str
    x_labels: tuple[str, str]
    series: Mapping[str, Sequence[float]]
    width: int = NARROW


@dataclass
class Drawing:
    """A chart's shapes in SVG user units, for the template to write out."""

    chart: Chart
    ticks: list[tuple[float, str]]  # y, label
    legend: list[tuple[str, str]]  # series, colour
    rects: list[dict[str, str]] = field(default_factory=list)  # x, y, width, height, fill, title
    lines: list[dict[str, str]] = field(default_factory=list)  # points, stroke, title


def _number(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def _y(share: float) -> float:
    """Where a share of the y axis's range (0 at the bottom, 1 at the top) is drawn."""
    return CHART_TOP + PLOT_HEIGHT * (1 - share)


def _drawing(chart: Chart, largest: float) -> tuple[Drawing, float]:
    """The frame of a chart whose y axis runs to ``largest`` (at least 1, so an empty chart has a scale)."""
    top = max(largest, 1.0)
    ticks = [(_y(share), _number(top * share)) for share in (0.0, 0.5, 1.0)]
    legend = [(name, colour(name, index)) for index, name in enumerate(chart.series)]
    return Drawing(chart, ticks, legend), top


def stacked_bars(chart: Chart) -> Drawing:
    """One bar per x position, its series stacked in the order given; a tooltip per segment."""
    count = max((len(values) for values in chart.series.values()), default=0)
    totals = [sum(values[i] for values in chart.series.values()) for i in range(count)]
    drawing, top = _drawing(chart, max(totals, default=0))
    width = (chart.width - CHART_LEFT) / max(count, 1)
    for i in range(count):
        base = 0.0
        for (name, values), (_, fill) in zip(chart.series.items(), drawing.legend, strict=True):
            if not values[i]:
                continue
            height = PLOT_HEIGHT * values[i] / top
            base += height
            drawing.rects.append(
                {
                    "x": f"{CHART_LEFT + i * width + 1:.1f}",
                    "y": f"{CHART_TOP + PLOT_HEIGHT - base:.1f}",
                    "width": f"{max(width - 2, 1):.1f}",
                    "height": f"{height:.1f}",
                    "fill": fill,
                    "title": f"{name}: {_number(values[i])}",
                }
            )
    return drawing


def lines(chart: Chart) -> Drawing:
    """One polyline per series; its tooltip names the series and its latest value."""
    drawing, top = _drawing(chart, max((max(values, default=0) for values in chart.series.values()), default=0))
    for (name, values), (_, stroke) in zip(chart.series.items(), drawing.legend, strict=True):
        step = (chart.width - CHART_LEFT) / max(len(values) - 1, 1)
        points = " ".join(f"{CHART_LEFT + i * step:.1f},{_y(v / top):.1f}" for i, v in enumerate(values))
        latest = _number(values[-1]) if values else "—"
        drawing.lines.append({"points": points, "stroke": stroke, "title": f"{name}: {latest} now"})
    return drawing
