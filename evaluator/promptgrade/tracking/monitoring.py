"""Monitoring runs: production's accuracy on a labelled sample, logged in the experiment that promoted it.

A monitoring run sits beside the sweeps and candidates of the promoted prompt's experiment, and is
linked to the prompt version production runs (``mlflow.linkedPrompts``, as a candidate run is), so the
registry's page of that version lists both the run that measured it and every later check of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from promptgrade.errors import TrackingError
from promptgrade.tracking.registry import PromptRegistry
from promptgrade.tracking.uri import artifact_location, tracking_uri

KIND_TAG = "promptgrade.kind"
MONITOR_KIND = "monitor"


@dataclass(frozen=True)
class MonitoringRun:
    run_id: str
    experiment: str
    uri: str
    prompt_uri: str | None  # the linked registry version (None: the prompt is not in this registry)


def log_monitoring_run(
    experiment: str,
    uri: str | None,
    *,
    run_name: str,
    prompt_name: str,
    prompt_sha256: str,
    params: dict[str, str],
    metrics: dict[str, float],
    tags: dict[str, str],
    documents: dict[str, Any],
) -> MonitoringRun:
    """One finished run with the figures, the verdict and the sample, linked to the prompt version."""
    uri = tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        found = client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id
            if found is not None
            else client.create_experiment(experiment, artifact_location=artifact_location(uri, experiment))
        )
        run = client.create_run(experiment_id, run_name=run_name, tags={KIND_TAG: MONITOR_KIND, **tags})
        run_id = run.info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric(name, value, 0, 0) for name, value in metrics.items()],
            params=[Param(name, value) for name, value in params.items()],
        )
        for name, document in documents.items():
            client.log_dict(run_id, document, name)
        version = PromptRegistry(client).find(prompt_name, prompt_sha256)
        prompt_uri = None if version is None else f"prompts:/{prompt_name}/{version}"
        if prompt_uri is not None:
            client.link_prompt_version_to_run(run_id, prompt_uri)
        client.set_terminated(run_id)
    except MlflowException as exc:
        raise TrackingError(f"cannot log the monitoring run in {uri}: {exc.message}") from None
    return MonitoringRun(run_id, experiment, uri, prompt_uri)
