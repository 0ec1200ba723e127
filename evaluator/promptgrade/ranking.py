"""Which candidate is best: one ordering for every command that names a winner.

The sweep's summary and plot, ``compare``, ``report``, ``label export`` and ``promote`` must name the
same candidate. With 64 examples an accuracy moves in steps of 1/64, so ties on the primary metric are
common, and each command breaking them its own way named different winners for the same sweep. The
sweep ranks results in memory and the others rank runs read back from MLflow, so this module is pure
(no mlflow) and both describe a candidate to it the same way: its metrics, its position in the
experiment file and its label.

The order, best first:

1. the primary metric (higher is better, except for the metrics in ``LOWER_IS_BETTER``); a candidate
   without it comes last;
2. ``grade_accuracy``, higher first (``category_accuracy`` when the primary metric is grade accuracy);
3. fewer failures: ``parse_failure_rate`` + ``error_rate``;
4. the candidate listed first in the experiment file (its position in the sweep);
5. its label, alphabetically (runs of different sweeps, or of a sweep that never finished).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

from promptgrade.scoring import Estimate, flatten

T = TypeVar("T")


class _Labelled(Protocol):
    @property
    def label(self) -> str: ...


class _Result(Protocol):
    """A sweep's result for one candidate, as the runner makes it (``runner.CandidateResult``)."""

    @property
    def candidate(self) -> _Labelled: ...

    @property
    def metrics(self) -> dict[str, Estimate | float]: ...


R = TypeVar("R", bound=_Result)

LOWER_IS_BETTER = frozenset(
    {
        "grade_mae",
        "parse_failure_rate",
        "error_rate",
        "latency_p50_ms",
        "latency_p95_ms",
        "cost_usd",
    }
)


def lower_is_better(metric: str) -> bool:
    """Errors, failures, latency and cost: a smaller figure is the better one."""
    return metric in LOWER_IS_BETTER or metric.endswith("_mae")


def tie_breaker(metric: str) -> str:
    """The metric that decides a tie on ``metric``: grade accuracy, unless that is what tied."""
    return "category_accuracy" if metric == "grade_accuracy" else "grade_accuracy"


def sort_key(
    metrics: Mapping[str, float], metric: str, *, position: int | None, label: str
) -> tuple[float, float, float, float, str]:
    """Ascending order is best first. NaN or a missing figure sorts after every number."""
    sign = 1.0 if lower_is_better(metric) else -1.0
    value = _figure(metrics, metric)
    second = _figure(metrics, tie_breaker(metric))
    failures = _figure(metrics, "parse_failure_rate", 0.0) + _figure(metrics, "error_rate", 0.0)
    return (
        math.inf if math.isnan(value) else sign * value,
        math.inf if math.isnan(second) else -second,
        math.inf if math.isnan(failures) else failures,
        math.inf if position is None else float(position),
        label,
    )


def best_first(
    items: Iterable[T],
    metric: str,
    *,
    metrics: Callable[[T], Mapping[str, float]],
    position: Callable[[T], int | None],
    label: Callable[[T], str],
) -> list[T]:
    """``items`` ordered best first by ``metric`` and the tie-breaks above (a stable sort)."""
    return sorted(
        items, key=lambda item: sort_key(metrics(item), metric, position=position(item), label=label(item))
    )


def rank_results(results: Sequence[R], metric: str) -> list[R]:
    """A sweep's results, given in the experiment file's order, best first: what the sweep prints as
    best and how its comparison plot is ordered."""
    position = {id(r): i for i, r in enumerate(results)}
    return best_first(
        results,
        metric,
        metrics=lambda r: flatten(r.metrics),
        position=lambda r: position[id(r)],
        label=lambda r: r.candidate.label,
    )


def _figure(metrics: Mapping[str, float], name: str, default: float = math.nan) -> float:
    value = metrics.get(name)
    return default if value is None else float(value)


__all__ = ["LOWER_IS_BETTER", "best_first", "lower_is_better", "rank_results", "sort_key", "tie_breaker"]
