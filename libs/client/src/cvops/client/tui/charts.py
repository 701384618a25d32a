"""Charts drawn with characters: a scatter plot (a search's trials and its Pareto front) and
horizontal bars (a benchmark's cells). Plain text, so they draw fast on any terminal."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from rich.text import Text

Format = Callable[[float], str]


class Point(NamedTuple):
    x: float
    y: float
    highlighted: bool = False


class Bar(NamedTuple):
    label: str
    value: float
    highlighted: bool = False


def _span(values: Sequence[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high == low:  # one value: centre it
        pad = abs(low) * 0.1 or 1.0
        return low - pad, high + pad
    return low, high


def _general(value: float) -> str:
    return f"{value:.3g}"


def scatter(
    points: Sequence[Point],
    *,
    x_label: str,
    y_label: str,
    legend: tuple[str, str] = ("highlighted", "other"),
    width: int = 56,
    height: int = 12,
    x_format: Format = _general,
    y_format: Format = _general,
) -> Text:
    """``points`` on a ``width`` x ``height`` grid; highlighted ones drawn as ``●`` over ``·``."""
    if not points:
        return Text("no points yet", style="dim")
    x0, x1 = _span([p.x for p in points])
    y0, y1 = _span([p.y for p in points])
    cells: dict[tuple[int, int], bool] = {}
    for p in points:
        col = round((p.x - x0) / (x1 - x0) * (width - 1))
        row = height - 1 - round((p.y - y0) / (y1 - y0) * (height - 1))
        cells[(row, col)] = cells.get((row, col), False) or p.highlighted
    margin = max(len(y_format(y0)), len(y_format(y1)), 4)
    chart = Text(f"{y_label}\n", style="bold")
    for row in range(height):
        label = y_format(y1) if row == 0 else y_format(y0) if row == height - 1 else ""
        chart.append(f"{label:>{margin}} │")
        for col in range(width):
            mark = cells.get((row, col))
            if mark is None:
                chart.append(" ")
            else:
                chart.append("●" if mark else "·", style="bold green" if mark else "cyan")
        chart.append("\n")
    left, right = x_format(x0), x_format(x1)
    chart.append(" " * margin + " └" + "─" * width + "\n")
    gap = max(1, width - len(left) - len(right))
    chart.append(" " * (margin + 2) + left + " " * gap + right + "\n")
    chart.append(" " * (margin + 2) + x_label + "   ")
    chart.append("●", style="bold green")
    chart.append(f" {legend[0]}  ")
    chart.append("·", style="cyan")
    chart.append(f" {legend[1]}")
    return chart


def bars(
    items: Sequence[Bar],
    *,
    title: str,
    width: int = 40,
    value_format: Format = _general,
) -> Text:
    """One bar per item, scaled to the largest value; highlighted bars in green."""
    chart = Text(f"{title}\n", style="bold")
    if not items:
        chart.append("nothing measured yet", style="dim")
        return chart
    label_width = max(len(item.label) for item in items)
    top = max(item.value for item in items) or 1.0
    for item in items:
        length = max(1, round(item.value / top * width)) if item.value > 0 else 0
        chart.append(f"{item.label:<{label_width}} ")
        chart.append("█" * length, style="bold green" if item.highlighted else "cyan")
        chart.append(f" {value_format(item.value)}\n")
    chart.rstrip()
    return chart
