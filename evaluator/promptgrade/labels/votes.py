"""What every candidate of a finished sweep answered, example by example, read back from MLflow.

Ordering the labelling queue and finding suspect labels both start from the same table: for each
example, each candidate's named categories and grade (or its failure). It is rebuilt from the runs'
``predictions.json`` artifacts — never from a sweep's memory — so any finished sweep, also one on a
shared tracking server, can feed a labelling round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from promptgrade.errors import TrackingError
from promptgrade.flips import resolve
from promptgrade.tracking.read import RunRow, RunStore, ranked


@dataclass(frozen=True)
class Answer:
    """One candidate's answer to one example: categories and grade when it parsed, else its status."""

    candidate: str  # the run's name: its candidate label (prompt@version · model, or the baseline)
    status: str  # ok | parse_failure | error
    categories: tuple[str, ...]
    grade: float | None
    abstained: bool = False  # its samples agreed less than its ``abstain_below``: a person should look


@dataclass(frozen=True)
class SweepAnswers:
    """The chosen candidate (whose answers pre-fill the tasks) and every candidate's answers per example."""

    sweep_run_id: str
    chosen: RunRow
    candidates: list[RunRow]
    answers: dict[str, list[Answer]]  # example id → one answer per candidate that scored it
    split: str | None

    def of(self, example_id: str) -> list[Answer]:
        return self.answers.get(example_id, [])

    def chosen_answer(self, example_id: str) -> Answer | None:
        return next((a for a in self.of(example_id) if a.candidate == self.chosen.name), None)


def read_sweep(store: RunStore, run: str | None = None) -> SweepAnswers:
    """The sweep of ``run`` (a run id or name@version), or the latest sweep and its best candidate."""
    if run is not None:
        chosen = resolve(store, run)
        sweep = chosen.sweep_run_id
        if sweep is None:
            raise TrackingError(f"run {chosen.run_id} is not part of a sweep")
    else:
        sweep = store.latest_sweep()
    rows = [r for r in store.candidates(sweep) if r.tags.get("promptgrade.partial") != "true"]
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        try:
            tables[row.run_id] = store.predictions(row.run_id)
        except TrackingError:
            continue  # a skipped candidate (no credentials, no torch) has no predictions: it did not vote
    with_answers = [r for r in rows if r.run_id in tables]
    if not with_answers:
        raise TrackingError(
            f"sweep {sweep} of {store.name!r} has no finished candidate with predictions: nothing to order by"
        )
    if run is None:
        chosen = _best(store, sweep, with_answers)
    elif chosen.run_id not in tables:
        raise TrackingError(f"run {chosen.run_id} has no predictions.json: it cannot pre-fill the tasks")
    answers: dict[str, list[Answer]] = {}
    for row in with_answers:
        for example_id, record in tables[row.run_id].items():
            if record.get("status") == "skipped":
                continue
            answers.setdefault(example_id, []).append(_answer(row.name, record))
    return SweepAnswers(sweep, chosen, with_answers, answers, chosen.params.get("split"))


def _best(store: RunStore, sweep: str, rows: list[RunRow]) -> RunRow:
    """The candidate the sweep printed as best (one ranking for every command: ``promptgrade.ranking``)."""
    return ranked(rows, store.primary_metric(sweep))[0]


def _answer(candidate: str, record: dict[str, Any]) -> Answer:
    named = record.get("predicted_categories") or ""
    categories = tuple(part.strip() for part in str(named).split(";") if part.strip())
    grade = record.get("predicted_grade")
    if grade is not None and isinstance(grade, float) and math.isnan(grade):
        grade = None
    status = str(record.get("status") or "ok")
    return Answer(
        candidate,
        status,
        categories if status == "ok" else (),
        grade if status == "ok" else None,
        abstained=record.get("abstained") is True,
    )
