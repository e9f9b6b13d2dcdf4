"""Geometry for the dashboard's inline SVG charts (numbers only; templates escape the labels).

Charts are drawn on the server as SVG, so the dashboard needs no JavaScript at all and its
Content-Security-Policy can forbid scripts outright.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Bar", "BarChart", "ExpiryRow", "bar_chart", "expiry_rows"]

RANGES: dict[str, tuple[dt.timedelta, int]] = {
    "24h": (dt.timedelta(hours=24), 1),
    "7d": (dt.timedelta(days=7), 24),
    "30d": (dt.timedelta(days=30), 24),
}


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar: position, size, and its tooltip."""

    x: float
    y: float
    width: float
    height: float
    count: int
    label: str


@dataclass(frozen=True, slots=True)
class BarChart:
    """A bar chart sized for a ``viewBox`` of ``width`` × ``height``."""

    width: int
    height: int
    bars: tuple[Bar, ...]
    peak: int
    ticks: tuple[tuple[float, str], ...]
    total: int


def bar_chart(
    points: Sequence[tuple[dt.datetime, int]],
    *,
    now: dt.datetime,
    span: dt.timedelta,
    bucket_hours: int,
    width: int = 720,
    height: int = 160,
) -> BarChart:
    """Lay out counts per bucket over *span* ending at *now*; empty buckets get no bar."""
    step = dt.timedelta(hours=bucket_hours)
    if bucket_hours == 1:
        end = now.replace(minute=0, second=0, microsecond=0)
    else:
        end = now.replace(hour=0, minute=0, second=0, microsecond=0)
    buckets = max(1, int(span / step))
    start = end - step * (buckets - 1)
    counts = dict.fromkeys(range(buckets), 0)
    for moment, count in points:
        index = int((moment - start) / step)
        if 0 <= index < buckets:
            counts[index] += count
    peak = max(counts.values(), default=0)
    plot_h = height - 20
    slot = width / buckets
    bars = []
    for index, count in counts.items():
        if not count:
            continue
        h = max(1.0, plot_h * count / peak)
        when = start + step * index
        label = when.strftime("%Y-%m-%d %H:00" if bucket_hours == 1 else "%Y-%m-%d")
        bars.append(Bar(round(index * slot + 1, 1), round(plot_h - h, 1),
                        round(max(1.0, slot - 2), 1), round(h, 1), count,
                        f"{label} UTC: {count} report{'s' if count != 1 else ''}"))
    every = max(1, buckets // 6)
    ticks = tuple(
        (round(i * slot, 1),
         (start + step * i).strftime("%H:00" if bucket_hours == 1 else "%m-%d"))
        for i in range(0, buckets, every)
    )
    return BarChart(width, height, tuple(bars), peak, ticks, sum(counts.values()))


@dataclass(frozen=True, slots=True)
class ExpiryRow:
    """One endpoint on the expiry timeline: markers at days-left positions."""

    endpoint: str
    status: str
    y: float
    markers: tuple[tuple[float, str, str], ...]  # (x, kind, tooltip)


def expiry_rows(
    results: Sequence[Mapping[str, Any]], *, horizon_days: int = 120, width: int = 720,
    row_height: int = 22, left: int = 0,
) -> tuple[tuple[ExpiryRow, ...], tuple[tuple[float, str], ...]]:
    """Markers for leaf, intermediate and rule expiry per endpoint, 0..*horizon_days* days.

    Values past the horizon sit at its edge and values already past sit at 0; the tooltip
    keeps the real number.
    """
    scale = (width - left) / horizon_days
    rows = []
    for index, result in enumerate(results):
        markers = []
        for kind, key in (("leaf", "leaf_days_left"),
                          ("intermediate", "min_intermediate_days_left"),
                          ("rule", "rule_days_left")):
            days = result.get(key)
            if not isinstance(days, int):
                continue
            x = left + min(max(days, 0), horizon_days) * scale
            markers.append((round(x, 1), kind, f"{kind} expires in {days} days"
                            if days >= 0 else f"{kind} expired {-days} days ago"))
        rows.append(ExpiryRow(str(result.get("endpoint")), str(result.get("status")),
                              index * row_height + 10, tuple(markers)))
    ticks = tuple((round(left + d * scale, 1), f"{d}d") for d in range(0, horizon_days + 1, 30))
    return tuple(rows), ticks
