"""Read candidate runs back from MLflow: the CLI's ``compare`` and promotion both start here."""

from __future__ import annotations

import json
import math
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from promptgrade.errors import TrackingError
from promptgrade.tracking.runs import tracking_uri

DEFAULT_PRIMARY = "category_accuracy"
LOWER_IS_BETTER = (
    "grade_mae",
    "parse_failure_rate",
    "error_rate",
    "latency_p50_ms",
    "latency_p95_ms",
    "cost_usd",
)


def candidate_rows(
    experiment_name: str, uri: str | None = None, *, latest_only: bool = True, metric: str | None = None
) -> tuple[list[dict[str, Any]], str]:
    """Candidate runs (of the latest sweep, by default), best first by ``metric`` or the sweep's primary."""
    client = MlflowClient(tracking_uri=tracking_uri(uri))
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise TrackingError(f"no MLflow experiment named {experiment_name!r} in {tracking_uri(uri)}")
    sweeps = client.search_runs(
        [experiment.experiment_id],
        "tags.`promptgrade.kind` = 'sweep'",
        order_by=["attributes.start_time DESC"],
    )
    if not sweeps:
        raise TrackingError(
            f"experiment {experiment_name!r} has no sweeps yet: run `promptgrade sweep` first"
        )
    query = "tags.`promptgrade.kind` = 'candidate'"
    if latest_only:
        query += f" and tags.`mlflow.parentRunId` = '{sweeps[0].info.run_id}'"
    runs = client.search_runs([experiment.experiment_id], query, max_results=1000)
    primary = metric or _primary_of(client, sweeps[0].info.run_id)
    sign = 1 if primary in LOWER_IS_BETTER else -1
    rows = [
        {
            "run_id": r.info.run_id,
            "name": r.info.run_name,
            "metrics": dict(r.data.metrics),
            "params": dict(r.data.params),
        }
        for r in runs
    ]
    rows.sort(key=lambda row: sign * row["metrics"].get(primary, sign * math.inf))
    return rows, primary


def _primary_of(client: MlflowClient, sweep_run_id: str) -> str:
    """The metric the sweep's experiment file chose (recorded in the sweep run's summary)."""
    try:
        summary = client.download_artifacts(sweep_run_id, "summary.json")
        with open(summary, encoding="utf-8") as handle:
            return str(json.load(handle).get("primary_metric", DEFAULT_PRIMARY))
    except (MlflowException, OSError, ValueError):
        return DEFAULT_PRIMARY
