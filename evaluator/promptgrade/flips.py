"""Two candidate runs, example by example: where one is right and the other wrong, and whether that is
more than chance.

Everything is read back from MLflow (each run's params and its ``predictions.json``), never from a
sweep's memory, so any finished sweep — also one on a shared tracking server — can be compared.
The two runs must have scored the same examples of the same data (``dataset_sha256``): the exact
McNemar test is paired, and pairing examples of different datasets would be meaningless, so that is
refused unless the caller says ``unpaired`` (then only the shared example ids are compared).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from promptgrade.errors import TrackingError
from promptgrade.figures import number_text
from promptgrade.stats import BootstrapInterval, mcnemar, paired_bootstrap
from promptgrade.tracking import refs
from promptgrade.tracking.read import RunRow, RunStore


@dataclass(frozen=True)
class Flip:
    """One example the two runs disagree on, with both answers side by side."""

    example_id: str
    truth: str
    answer_a: str | None
    answer_b: str | None
    predicted_a: str
    predicted_b: str


@dataclass(frozen=True)
class Flips:
    """One correctness column (category or grade) compared between run A and run B."""

    name: str
    a_only: list[Flip]
    b_only: list[Flip]
    p_value: float
    n: int
    accuracy_difference: BootstrapInterval  # B − A, with its paired bootstrap interval

    def as_dict(self) -> dict[str, Any]:
        return {
            "a_only": [f.example_id for f in self.a_only],
            "b_only": [f.example_id for f in self.b_only],
            "p_value": self.p_value,
            "n": self.n,
            "accuracy_difference": self.accuracy_difference.as_dict(),
        }


@dataclass(frozen=True)
class Comparison:
    a: RunRow
    b: RunRow
    examples: int
    category: Flips
    grade: Flips
    grade_mae_difference: float | None  # mean |error| of B minus A over examples both have a grade for
    paired: bool = True
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "a": self.a.run_id,
            "b": self.b.run_id,
            "examples": self.examples,
            "paired": self.paired,
            "category": self.category.as_dict(),
            "grade": {**self.grade.as_dict(), "mae_difference_b_minus_a": self.grade_mae_difference},
        }


def resolve(store: RunStore, ref: str) -> RunRow:
    """A candidate run as a person names it: an id or its prefix, name@version, baseline:<kind>."""
    return refs.candidate(store, ref)


def compare_runs(store: RunStore, ref_a: str, ref_b: str, *, unpaired: bool = False) -> Comparison:
    a, b = resolve(store, ref_a), resolve(store, ref_b)
    if a.run_id == b.run_id:
        raise TrackingError("compare two different runs (both references name the same run)")
    same_data = a.params.get("dataset_sha256") == b.params.get("dataset_sha256") and a.params.get(
        "split"
    ) == b.params.get("split")
    if not same_data and not unpaired:
        raise TrackingError(
            f"runs {a.run_id[:8]} and {b.run_id[:8]} were scored on different data (dataset_sha256 or split "
            "differ): a paired test is meaningless; pass --unpaired to compare their shared example ids"
        )
    rows_a, rows_b = _predictions(store, a), _predictions(store, b)
    shared = sorted(set(rows_a) & set(rows_b))
    scored = [i for i in shared if rows_a[i]["status"] != "skipped" and rows_b[i]["status"] != "skipped"]
    category = _flips("category", "category_correct", scored, rows_a, rows_b)
    graded = [i for i in scored if rows_a[i].get("grade_correct") is not None]
    grade = _flips("grade", "grade_correct", graded, rows_a, rows_b)
    errors = [
        (rows_a[i]["grade_abs_error"], rows_b[i]["grade_abs_error"])
        for i in graded
        if rows_a[i].get("grade_abs_error") is not None and rows_b[i].get("grade_abs_error") is not None
    ]
    mae_difference = sum(eb - ea for ea, eb in errors) / len(errors) if errors else None
    notes = []
    if len(shared) < max(len(rows_a), len(rows_b)):
        notes.append(f"{max(len(rows_a), len(rows_b)) - len(shared)} example(s) are in only one of the runs")
    return Comparison(a, b, len(scored), category, grade, mae_difference, paired=same_data, notes=notes)


def _predictions(store: RunStore, row: RunRow) -> dict[str, dict[str, Any]]:
    try:
        return store.predictions(row.run_id)
    except TrackingError:
        raise TrackingError(
            f"run {row.run_id} has no predictions.json (a run logged before per-example predictions, or one "
            "still running): it cannot be compared example by example"
        ) from None


def _flips(
    name: str,
    column: str,
    ids: list[str],
    rows_a: dict[str, dict[str, Any]],
    rows_b: dict[str, dict[str, Any]],
) -> Flips:
    right_a = [bool(rows_a[i][column]) for i in ids]
    right_b = [bool(rows_b[i][column]) for i in ids]
    test = mcnemar(right_a, right_b)
    a_only = [
        _flip(i, name, rows_a[i], rows_b[i])
        for i, ra, rb in zip(ids, right_a, right_b, strict=True)
        if ra and not rb
    ]
    b_only = [
        _flip(i, name, rows_a[i], rows_b[i])
        for i, ra, rb in zip(ids, right_a, right_b, strict=True)
        if rb and not ra
    ]
    return Flips(name, a_only, b_only, test.p_value, test.n, paired_bootstrap(right_a, right_b))


def _flip(example_id: str, name: str, row_a: dict[str, Any], row_b: dict[str, Any]) -> Flip:
    if name == "category":
        truth = row_a.get("true_categories") or ""
        shown_a, shown_b = row_a.get("predicted_categories") or "–", row_b.get("predicted_categories") or "–"
    else:
        truth = number_text(row_a.get("true_grade"))
        shown_a, shown_b = (
            number_text(row_a.get("predicted_grade")),
            number_text(row_b.get("predicted_grade")),
        )
    return Flip(example_id, str(truth), row_a.get("answer"), row_b.get("answer"), str(shown_a), str(shown_b))
