"""Every metric a run can log is named, with its meaning, in one place (``promptgrade.metric_names``):
``summarise`` — with samples, abstention, the task's statistics, a price and estimates — produces no
name missing there, and every name there is one ``summarise`` can produce."""

from __future__ import annotations

from pathlib import Path

from promptgrade.metric_names import NAMES
from promptgrade.scoring import Outcome, Price, Sample, summarise
from promptgrade.task import load_task

ROOT = Path(__file__).resolve().parents[1]


def test_summarise_names_only_documented_metrics() -> None:
    task = load_task(ROOT / "experiments/tasks/meal_tray.yaml")
    sample = Sample(status="ok", categories=("soup",), grade=40.0, category_correct=True)
    outcomes = [
        Outcome(
            example_id=f"e{i}",
            status="ok",
            true_categories=("soup",),
            true_grade=40.0,
            predicted_categories=("soup",),
            predicted_grade=40.0 + i,
            category_correct=True,
            category_top1_correct=True,
            grade_correct=True,
            grade_abs_error=float(i),
            answer="{}",
            input_tokens=100,
            output_tokens=10,
            latency_ms=50.0,
            estimated_input_tokens=100,
            samples=(sample, sample),
            agreement=1.0,
            grade_spread=0.0,
            abstained=i == 0,
        )
        for i in range(3)
    ]

    produced = set(summarise(outcomes, Price(input=1.0, output=2.0), task, selective=True))

    assert produced == NAMES, (produced - NAMES, NAMES - produced)
