"""How a metric or a grade is written for people — one rule for the sweep summary, ``compare``,
promotion's table and the HTML report, so the same figure never reads two ways.

Shares (``*accuracy``, ``*_rate``) as whole percentages, dollars to four decimals (one tray's cost to
six), everything else (grade errors, latencies) to one; an interval, when known, follows in
parentheses; nothing to measure (None, NaN) is a dash.
"""

from __future__ import annotations

import math
from typing import Any

DASH = "–"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def metric_text(metric: str, value: Any, low: Any = None, high: Any = None) -> str:
    if _missing(value):
        return DASH
    if metric.endswith(("accuracy", "_rate")):
        pattern = "{:.0%}"
    elif metric == "cost_usd":
        pattern = "{:,.4f}"
    elif metric == "cost_per_image_usd":  # a tray costs hundredths of a cent: four decimals would read 0
        pattern = "{:,.6f}"
    else:
        pattern = "{:,.1f}"
    shown = pattern.format(value)
    if not (_missing(low) or _missing(high)):
        shown += f" ({pattern.format(low)}–{pattern.format(high)})"
    return shown


def number_text(value: Any) -> str:
    """A grade (truth or prediction) as the model might have written it: 40, 37.5."""
    return DASH if _missing(value) else f"{float(value):g}"
