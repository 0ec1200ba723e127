"""Read candidate runs back from MLflow: ``compare`` and promotion both start here.

Rows are plain dicts of params, metrics and tags, and predictions are the per-example table the sweep
logged — enough to re-score or run a paired test without calling a model again.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from promptgrade.errors import ConfigError, TrackingError
from promptgrade.ranking import best_first
from promptgrade.references import REFERENCES_DIR, Reference, ReferenceRecord
from promptgrade.tracking.registry import PromptRegistry
from promptgrade.tracking.runs import REFERENCES_FILE, tracking_uri

DEFAULT_PRIMARY = "category_accuracy"
PRODUCTION_TAG = "promptgrade.production_run_id"


@dataclass(frozen=True)
class RunRow:
    run_id: str
    name: str
    sweep_run_id: str | None
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    status: str
    position: int | None = None  # its place in the sweep's candidates (the experiment file's order)

    def metric(self, name: str) -> float:
        return self.metrics.get(name, math.nan)


class RunStore:
    """One MLflow experiment's sweeps and candidates."""

    def __init__(self, experiment_name: str, uri: str | None = None) -> None:
        self.uri = tracking_uri(uri)
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        experiment = self.client.get_experiment_by_name(experiment_name)
        if experiment is None:
            raise TrackingError(f"no MLflow experiment named {experiment_name!r} in {self.uri}")
        self.name = experiment_name
        self.experiment = experiment
        self.registry = PromptRegistry(self.client)
        self._positions: dict[str, dict[str, int]] = {}

    def latest_sweep(self) -> str:
        sweeps = self.client.search_runs(
            [self.experiment.experiment_id],
            "tags.`promptgrade.kind` = 'sweep'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not sweeps:
            raise TrackingError(f"experiment {self.name!r} has no sweeps yet: run `promptgrade sweep` first")
        return sweeps[0].info.run_id

    def candidates(self, sweep_run_id: str | None = None) -> list[RunRow]:
        query = "tags.`promptgrade.kind` = 'candidate'"
        if sweep_run_id is not None:
            query += f" and tags.`mlflow.parentRunId` = '{sweep_run_id}'"
        runs = self.client.search_runs([self.experiment.experiment_id], query, max_results=5000)
        positions = self.positions(sweep_run_id) if sweep_run_id is not None else {}
        return [_row(r, positions.get(r.info.run_id)) for r in runs]

    def positions(self, sweep_run_id: str) -> dict[str, int]:
        """Run id → its place in the sweep's candidates, from the sweep's ``summary.json``: the last of
        ranking's tie-breaks, so every reader names the winner the sweep printed (empty until the sweep
        has finished or stopped)."""
        if sweep_run_id not in self._positions:
            summary = self.json_artifact(sweep_run_id, "summary.json", default={"candidates": []})
            self._positions[sweep_run_id] = {
                str(c["run_id"]): i for i, c in enumerate(summary.get("candidates", [])) if c.get("run_id")
            }
        return self._positions[sweep_run_id]

    def runs_starting(self, prefix: str, kind: str) -> list[RunRow]:
        """Runs of ``kind`` (``candidate``, ``sweep``) whose id starts with ``prefix`` (hex: no wildcard)."""
        query = f"tags.`promptgrade.kind` = '{kind}' and attributes.run_id LIKE '{prefix}%'"
        return [
            _row(r) for r in self.client.search_runs([self.experiment.experiment_id], query, max_results=50)
        ]

    def run(self, run_id: str) -> RunRow:
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            raise TrackingError(f"no MLflow run {run_id!r} in {self.uri}") from None
        if run.info.experiment_id != self.experiment.experiment_id:
            raise TrackingError(f"run {run_id} belongs to another MLflow experiment, not {self.name!r}")
        return _row(run)

    def primary_metric(self, sweep_run_id: str) -> str:
        """The metric the sweep's experiment file chose (recorded in the sweep run's summary)."""
        summary = self.json_artifact(sweep_run_id, "summary.json", default={})
        return str(summary.get("primary_metric", DEFAULT_PRIMARY))

    def json_artifact(self, run_id: str, path: str, default: Any = None) -> Any:
        try:
            local = self.client.download_artifacts(run_id, path)
            return json.loads(Path(local).read_text(encoding="utf-8"))
        except (MlflowException, OSError, ValueError):
            if default is not None:
                return default
            raise TrackingError(f"run {run_id} has no readable {path} artifact") from None

    def artifact_file(self, run_id: str, path: str) -> Path | None:
        """A local copy of one of the run's artifacts, or None if the run has no such artifact."""
        try:
            return Path(self.client.download_artifacts(run_id, path))
        except (MlflowException, OSError):
            return None

    def references(self, run_id: str) -> tuple[Reference, ...]:
        """The reference images a candidate run showed, read back from its artifacts as they were sent
        (each checked against its recorded sha256): what a promotion ships."""
        folder = self.artifact_file(run_id, REFERENCES_DIR)
        where = f"{REFERENCES_DIR}/{REFERENCES_FILE}"
        if folder is None or not (folder / REFERENCES_FILE).is_file():
            raise TrackingError(f"run {run_id} has no {where} artifact: its reference images are not logged")
        try:
            records = json.loads((folder / REFERENCES_FILE).read_text(encoding="utf-8"))["references"]
            return tuple(ReferenceRecord.model_validate(record).load(folder) for record in records)
        except ConfigError as exc:
            raise TrackingError(f"run {run_id}: {exc.message}") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TrackingError(f"run {run_id} has no readable {where}: {exc}") from None

    def mark_promoted(self, run_id: str, promoted_at: str, record: dict[str, Any]) -> None:
        """The promoted run says when it was promoted and why (``promotion.json``)."""
        self.client.set_tag(run_id, "promptgrade.promoted_at", promoted_at)
        self.client.log_dict(run_id, record, "promotion.json")

    def predictions(self, run_id: str) -> dict[str, dict[str, Any]]:
        """The run's predictions table as example id → row."""
        table = self.json_artifact(run_id, "predictions.json")
        columns = table["columns"]
        return {row[0]: dict(zip(columns, row, strict=True)) for row in table["data"]}

    def production_run_id(self) -> str | None:
        return self.experiment.tags.get(PRODUCTION_TAG)

    def set_production_run(self, run_id: str) -> None:
        self.client.set_experiment_tag(self.experiment.experiment_id, PRODUCTION_TAG, run_id)


def _row(run: Any, position: int | None = None) -> RunRow:
    return RunRow(
        run_id=run.info.run_id,
        name=run.info.run_name,
        sweep_run_id=run.data.tags.get("mlflow.parentRunId"),
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        tags=dict(run.data.tags),
        status=run.info.status,
        position=position,
    )


def ranked(rows: list[RunRow], metric: str) -> list[RunRow]:
    """Best first by ``metric``, ties broken as the sweep breaks them (``promptgrade.ranking``); runs
    without the metric go last."""
    return best_first(
        rows, metric, metrics=lambda r: r.metrics, position=lambda r: r.position, label=lambda r: r.name
    )


def candidate_rows(
    experiment_name: str, uri: str | None = None, *, latest_only: bool = True, metric: str | None = None
) -> tuple[list[dict[str, Any]], str]:
    """Candidate runs (of the latest sweep, by default), best first by ``metric`` or the sweep's primary."""
    store = RunStore(experiment_name, uri)
    sweep = store.latest_sweep()
    primary = metric or store.primary_metric(sweep)
    rows = ranked(store.candidates(sweep if latest_only else None), primary)
    return [
        {"run_id": r.run_id, "name": r.name, "metrics": r.metrics, "params": r.params} for r in rows
    ], primary
