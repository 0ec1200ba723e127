"""Scoring counts every example; failures are wrong, never dropped; intervals are honest."""

from __future__ import annotations

import math

import pytest

from promptgrade.answers import ParseFailure, Prediction
from promptgrade.grading import GradingResult
from promptgrade.providers.base import Completion, ErrorInfo, ErrorKind
from promptgrade.scoring import Price, flatten, score, skipped, summarise, wilson
from promptgrade.task import GradeScale, Task

TASK = Task(name="t", categories=("soup", "stew", "salad"), grade=GradeScale(tolerance=10))


def ok(categories: tuple[str, ...], grade: float, tokens: int = 100) -> GradingResult:
    completion = Completion(text="…", input_tokens=tokens, output_tokens=10, latency_ms=100)
    return GradingResult(
        completion, prediction=Prediction(categories=categories, grade=grade, answer_format="json")
    )


def test_category_accuracy_counts_any_true_category_top1_only_the_first() -> None:
    outcome = score("a", ("stew",), 50, ok(("soup", "stew"), 55), TASK)
    assert outcome.category_correct and not outcome.category_top1_correct
    assert outcome.grade_correct and outcome.grade_abs_error == 5


def test_grade_tolerance_is_inclusive() -> None:
    assert score("a", ("soup",), 50, ok(("soup",), 60), TASK).grade_correct
    assert not score("a", ("soup",), 50, ok(("soup",), 60.5), TASK).grade_correct


def test_failures_count_as_wrong_with_worst_case_grade_error() -> None:
    failure = GradingResult(
        Completion(text="nope"), failure=ParseFailure(reason="no_categories", message="x")
    )
    error = GradingResult(Completion(text=None, error=ErrorInfo(ErrorKind.SERVER_ERROR, "503")))
    outcomes = [
        score("a", ("soup",), 20, ok(("soup",), 20), TASK),
        score("b", ("soup",), 20, failure, TASK),
        score("c", ("soup",), 20, error, TASK),
    ]
    assert [o.status for o in outcomes] == ["ok", "parse_failure", "error"]
    assert outcomes[1].grade_abs_error == 80  # farthest point on the 0–100 scale from 20
    metrics = summarise(outcomes, Price(input=1.0, output=2.0))
    assert metrics["category_accuracy"].value == pytest.approx(1 / 3)
    assert metrics["category_accuracy"].n == 3
    assert metrics["parse_failure_rate"].value == pytest.approx(1 / 3)
    assert metrics["error_rate"].value == pytest.approx(1 / 3)
    assert metrics["grade_mae"].value == pytest.approx((0 + 80 + 80) / 3)
    assert metrics["n_examples"] == 3
    assert metrics["cost_usd"] == pytest.approx((100 * 1.0 + 10 * 2.0) / 1e6)


def test_skipped_examples_are_reported_not_scored() -> None:
    outcomes = [
        score("a", ("soup",), 20, ok(("soup",), 20), TASK),
        skipped("b", ("soup",), 20, "unreadable image"),
    ]
    metrics = summarise(outcomes)
    assert metrics["n_examples"] == 1 and metrics["n_skipped"] == 1
    assert metrics["category_accuracy"].value == 1.0
    assert "cost_usd" not in metrics  # no price: cost unknown, not zero


def test_examples_without_grade_labels_do_not_enter_grade_metrics() -> None:
    outcomes = [score("a", ("soup",), None, ok(("soup",), 20), TASK)]
    flat = flatten(summarise(outcomes))
    assert "grade_accuracy" not in flat and "grade_mae" not in flat
    assert flat["category_accuracy"] == 1.0


def test_wilson_interval_matches_reference_values() -> None:
    # Reference: Wilson 95% interval for 8/10 is (0.4902, 0.9433).
    estimate = wilson(8, 10)
    assert estimate.ci_low == pytest.approx(0.4902, abs=1e-4)
    assert estimate.ci_high == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 5).ci_low == 0.0 and wilson(5, 5).ci_high == 1.0
    assert math.isnan(wilson(0, 0).value)


def test_flatten_emits_interval_columns_for_mlflow() -> None:
    flat = flatten(summarise([score("a", ("soup",), 20, ok(("soup",), 20), TASK)]))
    assert {"category_accuracy", "category_accuracy_ci_low", "category_accuracy_ci_high"} <= flat.keys()
    assert flat["latency_p50_ms"] == 100
