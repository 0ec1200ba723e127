"""A baseline candidate, start to finish: train on the training split, predict the evaluation split,
score with the same scoring as the prompts. The result is a CandidateResult like any other, so it sits
in the same summary table and the same MLflow comparison.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from promptgrade.answers import Prediction
from promptgrade.baseline.model import Baseline, available_kinds
from promptgrade.baseline.train import train_and_predict
from promptgrade.candidates import BaselineCandidate
from promptgrade.data.examples import Example, LoadedDataset
from promptgrade.grading import GradingResult
from promptgrade.providers.base import Completion
from promptgrade.runner import CandidateResult, SweepListener
from promptgrade.scoring import Outcome, Price, score, skipped, summarise
from promptgrade.task import Task

NO_COST = Price(input=0.0, output=0.0)  # no API is called: its cost is zero, not unknown


def unavailable_reason(candidate: BaselineCandidate) -> str | None:
    return available_kinds().get(candidate.spec.kind)


def evaluate_baseline(
    candidate: BaselineCandidate,
    task: Task,
    train: LoadedDataset,
    evaluation: LoadedDataset,
    result: CandidateResult,
    listeners: list[SweepListener],
) -> Baseline:
    """Train, predict and score; fills ``result`` (metrics include train_seconds and n_train)."""
    total = len(evaluation.examples) + len(evaluation.skipped)
    for listener in listeners:
        listener.candidate_started(candidate, total)

    def progress(stage: str, fraction: float) -> None:
        for listener in listeners:
            listener.training(candidate, stage, fraction)

    started = time.perf_counter()
    baseline, predictions, stats = train_and_predict(
        candidate.spec.kind,
        train.examples,
        evaluation.examples,
        task,
        seed=candidate.spec.seed,
        progress=progress,
        **candidate.spec.options,
    )
    per_example_ms = 1000 * stats["predict_seconds"] / max(1, len(evaluation.examples))
    for outcome in score_predictions(predictions, evaluation.examples, task, per_example_ms):
        result.outcomes.append(outcome)
        for listener in listeners:
            listener.example_done(candidate, outcome)
    for skip in evaluation.skipped:
        result.outcomes.append(skipped(skip.id, (), None, skip.reason))
    result.metrics = summarise(result.outcomes, NO_COST, task)
    result.metrics["train_seconds"] = stats["train_seconds"]
    result.metrics["n_train"] = stats["n_train"]
    result.metrics["wall_seconds"] = time.perf_counter() - started
    return baseline


def score_predictions(
    predictions: Sequence[Prediction], examples: Sequence[Example], task: Task, latency_ms: float = 0.0
) -> list[Outcome]:
    """A trained model's predictions scored exactly as a prompt's answers are (same ``score``)."""
    return [
        score(
            example.id,
            example.labels.categories,
            example.labels.grade,
            GradingResult(_as_completion(prediction, task, latency_ms), prediction=prediction),
            task,
        )
        for prediction, example in zip(predictions, examples, strict=True)
    ]


def _as_completion(prediction: Prediction, task: Task, latency_ms: float) -> Completion:
    """The baseline's answer in the same JSON shape a prompt's answer takes, for the predictions table."""
    answer = json.dumps({"categories": list(prediction.categories), task.grade.name: prediction.grade})
    return Completion(text=answer, latency_ms=latency_ms)
