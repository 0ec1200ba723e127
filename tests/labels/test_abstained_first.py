"""Given a sweep where a candidate abstained on a tray (its samples disagreed), when the labelling queue
is ordered, then that tray comes first — in production it goes to a person anyway."""

from __future__ import annotations

from pathlib import Path

from promptgrade.labels.ordering import ABSTAINED, TIERS, Current, order
from promptgrade.labels.votes import Answer, SweepAnswers
from promptgrade.task import load_task
from promptgrade.tracking.read import RunRow

ROOT = Path(__file__).resolve().parents[2]


def test_abstained_trays_lead_the_queue() -> None:
    task = load_task(ROOT / "experiments/tasks/meal_tray.yaml")
    row = RunRow("r1", "json@v1", "s1", {}, {}, {}, "FINISHED")
    answers = {
        "unlabelled": [Answer("json@v1", "ok", ("soup",), 40.0)],
        "agreed": [Answer("json@v1", "ok", ("soup",), 40.0)],
        "abstained": [Answer("json@v1", "ok", ("soup",), 40.0, abstained=True)],
    }
    sweep = SweepAnswers("s1", row, [row], answers, "test")
    current = [
        Current("unlabelled", "test", (), None),
        Current("agreed", "test", ("soup",), 40.0),
        Current("abstained", "test", ("soup",), 40.0),
    ]

    queue = order(current, sweep, task)

    assert TIERS[0] == ABSTAINED
    assert [p.example_id for p in queue] == ["abstained", "unlabelled", "agreed"]
    assert queue[0].reason.startswith("abstained by json@v1")
