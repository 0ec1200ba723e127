"""One ranking for every command: each tie-break decides exactly when the ones before it tie."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from promptgrade.ranking import best_first, lower_is_better, sort_key


@dataclass
class Row:
    label: str
    metrics: dict[str, float] = field(default_factory=dict)
    position: int | None = None


def order(rows: list[Row], metric: str = "category_accuracy") -> list[str]:
    ranked = best_first(
        rows, metric, metrics=lambda r: r.metrics, position=lambda r: r.position, label=lambda r: r.label
    )
    return [r.label for r in ranked]


def test_the_primary_metric_decides_first_in_its_direction() -> None:
    rows = [
        Row("a", {"category_accuracy": 0.5, "grade_mae": 9.0}),
        Row("b", {"category_accuracy": 0.75, "grade_mae": 4.0}),
    ]
    assert order(rows) == ["b", "a"]
    assert order(rows, "grade_mae") == ["b", "a"]  # lower is better
    assert all(lower_is_better(m) for m in ("grade_mae", "error_rate", "parse_failure_rate", "cost_usd"))
    assert not lower_is_better("grade_accuracy")


def test_a_tie_goes_to_grade_accuracy_then_fewer_failures_then_the_file_order_then_the_label() -> None:
    tied = {"category_accuracy": 0.75}
    rows = [
        Row("first-listed", {**tied, "grade_accuracy": 0.5}, position=0),
        Row("better-grade", {**tied, "grade_accuracy": 0.6, "parse_failure_rate": 0.1}, position=1),
        Row("fewer-failures", {**tied, "grade_accuracy": 0.6, "parse_failure_rate": 0.05}, position=2),
        Row("listed-earlier", {**tied, "grade_accuracy": 0.5}, position=3),
    ]
    assert order(rows) == ["fewer-failures", "better-grade", "first-listed", "listed-earlier"]
    unplaced = [Row("zeta", dict(tied)), Row("alpha", dict(tied)), Row("placed", dict(tied), position=5)]
    assert order(unplaced) == ["placed", "alpha", "zeta"]  # no position: after those with one, by label


def test_grade_accuracy_as_primary_is_broken_by_category_accuracy() -> None:
    rows = [
        Row("a", {"grade_accuracy": 0.5, "category_accuracy": 0.6}, position=0),
        Row("b", {"grade_accuracy": 0.5, "category_accuracy": 0.7}, position=1),
    ]
    assert order(rows, "grade_accuracy") == ["b", "a"]


def test_missing_or_nan_figures_sort_last() -> None:
    rows = [
        Row("nan", {"category_accuracy": math.nan}, position=0),
        Row("none", {}, position=1),
        Row("zero", {"category_accuracy": 0.0}, position=2),
    ]
    assert order(rows)[0] == "zero"
    assert sort_key({}, "grade_mae", position=None, label="x")[0] == math.inf
    with_grade = Row("graded", {"category_accuracy": 0.5, "grade_accuracy": 0.1}, position=1)
    no_grade = Row("ungraded", {"category_accuracy": 0.5}, position=0)
    assert order([no_grade, with_grade]) == ["graded", "ungraded"]


@pytest.mark.parametrize("metric", ["category_accuracy", "grade_mae", "error_rate"])
def test_the_order_does_not_depend_on_the_input_order(metric: str) -> None:
    rows = [Row(f"c{i}", {metric: (i % 3) / 4, "grade_accuracy": (i % 2) / 2}, position=i) for i in range(8)]
    assert order(rows, metric) == order(list(reversed(rows)), metric)
