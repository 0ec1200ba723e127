"""A sweep from experiment file to MLflow runs: the library entry point the CLI calls.

The order is deliberate: everything that can be checked for free (experiment, templates, dataset,
credentials) is checked before the first paid call, and each candidate is logged as soon as it is
done so an interrupted sweep keeps what it finished.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from promptgrade.candidates import Candidate, candidates_for
from promptgrade.config import Plan, load_experiment, plan_experiment
from promptgrade.data.examples import LoadedDataset
from promptgrade.data.loaders import load_dataset_split
from promptgrade.errors import CredentialsError
from promptgrade.estimate import CandidateEstimate, estimate, image_size
from promptgrade.providers.base import Provider
from promptgrade.providers.registry import make_provider
from promptgrade.runner import CandidateResult, SweepListener, run_sweep
from promptgrade.scoring import Estimate

if TYPE_CHECKING:
    from promptgrade.tracking import Tracker


@dataclass
class SweepReport:
    plan: Plan
    dataset: LoadedDataset
    candidates: list[Candidate]
    results: list[CandidateResult] = field(default_factory=list)
    estimates: list[CandidateEstimate] = field(default_factory=list)
    sweep_run_id: str | None = None
    tracking_uri: str | None = None

    @property
    def primary_metric(self) -> str:
        return self.plan.experiment.primary_metric

    def best(self) -> CandidateResult | None:
        """Highest primary metric among candidates that ran (lowest, for an error like grade_mae)."""
        lower_is_better = self.primary_metric.endswith("_mae")
        scored = [
            (primary_value(r, self.primary_metric), r) for r in self.results if r.skipped_reason is None
        ]
        scored = [(v, r) for v, r in scored if not math.isnan(v)]
        if not scored:
            return None
        return (min if lower_is_better else max)(scored, key=lambda pair: pair[0])[1]


def primary_value(result: CandidateResult, metric: str) -> float:
    value = result.metrics.get(metric, math.nan)
    return value.value if isinstance(value, Estimate) else float(value)


def prepare(
    experiment_path: str | Path, *, limit: int | None = None
) -> tuple[Plan, LoadedDataset, list[Candidate]]:
    """Load and validate everything a sweep needs; raises a PromptgradeError naming what is wrong."""
    plan = plan_experiment(load_experiment(experiment_path))
    config = plan.experiment.dataset
    if limit is not None:
        config = config.model_copy(update={"limit": limit})
    dataset = load_dataset_split(config, plan.task, plan.experiment.base_dir)
    return plan, dataset, candidates_for(plan)


def dry_run(experiment_path: str | Path, *, limit: int | None = None) -> SweepReport:
    plan, dataset, candidates = prepare(experiment_path, limit=limit)
    sizes = [image_size(example.image.data) for example in dataset.examples]
    report = SweepReport(plan, dataset, candidates)
    report.estimates = estimate(candidates, sizes, plan.prices)
    return report


def _providers(
    plan: Plan, candidates: list[Candidate], results: dict[str, CandidateResult]
) -> dict[tuple[str, str], Provider]:
    """One provider per model; a model without credentials skips its candidates, with the reason."""
    providers: dict[tuple[str, str], Provider] = {}
    failures: dict[tuple[str, str], CredentialsError] = {}
    for spec in plan.experiment.models:
        key = (spec.provider, spec.model)
        if key in providers or key in failures:
            continue
        try:
            providers[key] = make_provider(
                spec.provider, spec.model, base_url=plan.experiment.base_url, timeout_s=spec.timeout_s
            )
        except CredentialsError as exc:
            failures[key] = exc
    for candidate in candidates:
        if (error := failures.get((candidate.provider, candidate.model))) is not None:
            results[candidate.key].skipped_reason = error.message
    if failures and not providers:
        raise next(iter(failures.values()))
    return providers


class _TrackingListener:
    """Logs each candidate the moment it finishes, so an interrupted sweep keeps what it finished."""

    def __init__(self, tracker: Tracker, dataset: LoadedDataset, task_name: str) -> None:
        self.tracker = tracker
        self.dataset = dataset
        self.task_name = task_name

    def candidate_started(self, candidate: Candidate, total: int) -> None:
        pass

    def example_done(self, candidate: Candidate, outcome: object) -> None:
        pass

    def candidate_done(self, result: CandidateResult) -> None:
        self.tracker.log_candidate(result, self.dataset, self.task_name)


def run(
    experiment_path: str | Path,
    *,
    tracking_uri: str | None = None,
    limit: int | None = None,
    listeners: list[SweepListener] | None = None,
    backoff_initial_s: float = 1.0,
) -> SweepReport:
    from promptgrade.tracking import Tracker  # mlflow is imported only when a sweep really runs

    plan, dataset, candidates = prepare(experiment_path, limit=limit)
    report = SweepReport(plan, dataset, candidates)
    results = {c.key: CandidateResult(c) for c in candidates}
    providers = _providers(plan, candidates, results)
    tracker = Tracker(plan.experiment.name, tracking_uri)
    report.tracking_uri = tracker.uri
    report.sweep_run_id = tracker.start_sweep(plan.experiment.path, dataset, len(candidates))
    runnable = [c for c in candidates if results[c.key].skipped_reason is None]
    all_listeners = [_TrackingListener(tracker, dataset, plan.task.name), *(listeners or [])]
    try:
        finished = asyncio.run(
            run_sweep(plan, dataset, runnable, providers, all_listeners, backoff_initial_s=backoff_initial_s)
        )
    except BaseException:
        tracker.finish_sweep(list(results.values()), plan.experiment.primary_metric, status="KILLED")
        raise
    for result in finished:
        results[result.candidate.key] = result
    report.results = [results[c.key] for c in candidates]
    tracker.finish_sweep(report.results, plan.experiment.primary_metric)
    return report
