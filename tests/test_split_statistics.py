"""Statistics over a whole split, checked against values worked out by hand: per-category precision,
recall and F1 (multi-label over the named sets), their macro mean, and the grades' quadratic-weighted
kappa on tolerance bins — in ``summarise`` and, after a sweep, in MLflow (metrics and
``per_category.json``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.entities import Run
from typer.testing import CliRunner

from helpers.scripted_sweeps import planted_answers, write_experiment
from promptgrade.answers import ParseFailure, Prediction
from promptgrade.cli import app
from promptgrade.grading import GradingResult
from promptgrade.providers.base import Completion
from promptgrade.scoring import (
    Outcome,
    flatten,
    grade_bin,
    grade_weighted_kappa,
    macro_f1,
    per_category,
    score,
    skipped,
    summarise,
    weighted_kappa,
)
from promptgrade.task import GradeScale, Task
from promptgrade.testing.gemini_server import FakeGemini

TASK = Task(name="t", categories=("soup", "stew", "salad", "bread"), grade=GradeScale(tolerance=10))
RUNNER = CliRunner(env={"COLUMNS": "200"})


def ok(categories: tuple[str, ...], grade: float) -> GradingResult:
    return GradingResult(
        Completion(text="…", input_tokens=1, output_tokens=1),
        prediction=Prediction(categories=categories, grade=grade, answer_format="json"),
    )


FAILED = GradingResult(Completion(text="?"), failure=ParseFailure(reason="no_categories", message="x"))


def seven_trays() -> list[Outcome]:
    """Seven trays: 4 failed to parse, 5 is skipped (not scored at all), 7 has no true grade."""
    return [
        score("1", ("soup",), 20, ok(("soup",), 24), TASK),
        score("2", ("soup", "salad"), 50, ok(("soup", "stew"), 35), TASK),
        score("3", ("stew",), 80, ok(("soup",), 75), TASK),
        score("4", ("stew",), 40, FAILED, TASK),
        skipped("5", ("salad",), 10, "unreadable image"),
        score("6", ("soup",), 0, ok(("soup",), 30), TASK),
        score("7", ("soup",), None, ok(("soup",), 100), TASK),  # no true grade: no kappa pair
    ]


def test_per_category_counts_the_named_sets_and_a_failure_misses_its_true_categories() -> None:
    rows = {row.category: row for row in per_category(seven_trays(), TASK.categories)}
    assert list(rows) == ["soup", "stew", "salad", "bread"]  # the task's order, every category
    soup, stew, salad, bread = rows["soup"], rows["stew"], rows["salad"], rows["bread"]
    # soup: true on 1, 2, 6, 7; named on 1, 2, 3, 6, 7
    assert (soup.support, soup.predicted, soup.true_positives) == (4, 5, 4)
    assert (soup.precision, soup.recall, soup.f1) == pytest.approx((4 / 5, 1.0, 8 / 9))
    assert (soup.false_positives, soup.false_negatives) == (1, 0)
    # stew: true on 3 and 4 (4 failed: a miss), named on 2 only
    assert (stew.support, stew.predicted, stew.true_positives) == (2, 1, 0)
    assert (stew.precision, stew.recall, stew.f1) == (0.0, 0.0, 0.0)
    # salad: true on 2, never named (the skipped tray 5 does not count): no precision, F1 0
    assert (salad.support, salad.predicted, salad.true_positives) == (1, 0, 0)
    assert math.isnan(salad.precision) and salad.recall == 0.0 and salad.f1 == 0.0
    # bread: never true, never named — no F1 at all, so it stays out of the macro mean
    assert bread.support == bread.predicted == 0 and math.isnan(bread.f1)
    assert macro_f1(list(rows.values())) == pytest.approx((8 / 9 + 0 + 0) / 3)


def test_a_category_outside_the_given_list_is_still_counted_after_them() -> None:
    outcomes = [score("1", ("soup",), 20, ok(("stew",), 20), TASK)]
    assert [r.category for r in per_category(outcomes, ("stew",))] == ["stew", "soup"]
    assert math.isnan(macro_f1([]))


@pytest.mark.parametrize(
    ("grade", "tolerance", "expected"),
    [
        (24, 10, 2.0),
        (35, 10, 4.0),  # halves go up: every bin is one tolerance wide
        (85, 10, 9.0),  # Python's round(8.5) would give 8
        (25, 10, 3.0),
        (0.35, 0.1, 4.0),  # 0.35 / 0.1 = 3.4999… in floating point: still the half
        (12.5, 0, 12.5),  # tolerance 0: the grade itself
    ],
)
def test_grade_bins_round_half_up(grade: float, tolerance: float, expected: float) -> None:
    assert grade_bin(grade, tolerance) == expected


def test_weighted_kappa_by_hand() -> None:
    # truth bins 2, 5, 8, 0, 10; predicted bins 2, 4, 8, 3, 9
    # observed disagreement: (0 + 1 + 0 + 9 + 1) / 5 = 2.2
    # chance: var(truth) 13.6 + var(predicted) 7.76 + (5 − 5.2)² 0.04 = 21.4 → kappa = 1 − 2.2/21.4
    truth, predicted = [2, 5, 8, 0, 10], [2, 4, 8, 3, 9]
    assert weighted_kappa(truth, predicted) == pytest.approx(96 / 107)
    assert weighted_kappa(truth, truth) == 1.0
    assert math.isnan(weighted_kappa([], [])) and math.isnan(weighted_kappa([3, 3], [3, 3]))


def test_weighted_kappa_is_scikit_learns_on_integer_bins() -> None:
    from sklearn.metrics import cohen_kappa_score

    truth, predicted = [2, 5, 8, 0, 10, 7, 7, 1], [2, 4, 8, 3, 9, 1, 7, 1]
    expected = cohen_kappa_score(truth, predicted, weights="quadratic", labels=list(range(11)))
    assert weighted_kappa(truth, predicted) == pytest.approx(expected)


def test_grade_kappa_leaves_out_failures_and_ungraded_trays() -> None:
    # graded pairs: (20, 24) → (2, 2), (50, 35) → (5, 4), (80, 75) → (8, 8), (0, 30) → (0, 3)
    # tray 4 failed, tray 5 skipped, tray 7 has no true grade
    # observed (0 + 1 + 0 + 9) / 4 = 2.5; chance: var 9.1875 + var 5.1875 + (3.75 − 4.25)² = 14.625
    assert grade_weighted_kappa(seven_trays(), 10) == pytest.approx(1 - 2.5 / 14.625)


def test_summarise_adds_the_split_statistics_when_it_knows_the_task() -> None:
    outcomes = seven_trays()
    metrics = summarise(outcomes, task=TASK)
    assert metrics["category_macro_f1"] == pytest.approx((8 / 9) / 3)
    assert metrics["grade_weighted_kappa"] == pytest.approx(97 / 117)
    assert "category_macro_f1" not in summarise(outcomes)  # without a task: no categories, no tolerance
    nothing = [score("1", ("soup",), 50, FAILED, TASK)]
    assert "grade_weighted_kappa" not in flatten(summarise(nothing, task=TASK))  # NaN: nothing logged


def test_a_sweep_logs_the_statistics_and_the_per_category_table(
    tmp_path: Path, tracking: str, gemini_server: FakeGemini, fake_api_key: str
) -> None:
    """JSON answers every tray right; free text names "snack" on each and the far end of the scale."""
    path = tmp_path / "exp.yaml"
    examples = write_experiment(path, name="stats", base_url=gemini_server.base_url, n=6)
    # the first six test trays of the sample set, by id: their truth, as labelled
    assert [(e.labels.categories, e.labels.grade) for e in examples] == [
        (("seafood dish",), 25.0),
        (("rice dish", "seafood dish"), 100.0),
        (("dumpling",), 5.0),
        (("sandwich", "salad"), 55.0),
        (("noodle dish",), 80.0),
        (("dumpling", "rice dish"), 75.0),
    ]
    gemini_server.default_answer = planted_answers(examples, {e.id for e in examples}, set())
    result = RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", tracking])
    assert result.exit_code == 0, result.output

    client = MlflowClient(tracking_uri=tracking)
    runs = client.search_runs(
        [client.get_experiment_by_name("stats").experiment_id], "tags.`promptgrade.kind` = 'candidate'"
    )
    by_prompt = {r.data.params["prompt_name"]: r for r in runs}
    right, wrong = by_prompt["meal_tray_json"], by_prompt["meal_tray_freetext"]
    assert right.data.metrics["category_macro_f1"] == 1.0
    assert right.data.metrics["grade_weighted_kappa"] == 1.0
    assert wrong.data.metrics["category_macro_f1"] == 0.0
    # free text: truth bins 3 (25 → 2.5 up), 10, 1 (5 → 0.5 up), 6, 8, 8; answered 10, 0, 10, 0, 0, 0
    # observed (49 + 100 + 81 + 36 + 64 + 64) / 6 = 394/6; chance: 58/6 + 200/9 + (6 − 10/3)² = 39
    assert wrong.data.metrics["grade_weighted_kappa"] == pytest.approx(1 - (394 / 6) / 39)

    def table(run: Run) -> dict[str, dict[str, Any]]:
        local = client.download_artifacts(run.info.run_id, "per_category.json")
        data = json.loads(Path(local).read_text())
        return {row[0]: dict(zip(data["columns"], row, strict=True)) for row in data["data"]}

    rows = table(right)
    assert len(rows) == 20  # every category of the meal-tray task, in its order
    assert rows["dumpling"] == {
        "category": "dumpling",
        "support": 2,
        "predicted": 2,
        "true_positives": 2,
        "false_positives": 0,
        "false_negatives": 0,
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
    }
    assert rows["soup"]["f1"] is None and rows["soup"]["precision"] is None  # neither true nor named
    snack, seafood = table(wrong)["snack"], table(wrong)["seafood dish"]
    assert (snack["predicted"], snack["support"], snack["precision"], snack["recall"]) == (6, 0, 0.0, None)
    assert (seafood["support"], seafood["recall"], seafood["f1"]) == (2, 0.0, 0.0)
    # both tables are shown as tables on the runs page, and neither is appended to on a resume
    logged = json.loads(right.data.tags["mlflow.loggedArtifacts"])
    assert {entry["path"] for entry in logged} == {"predictions.json", "per_category.json"}
