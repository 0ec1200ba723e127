"""MLflow: the only module that imports it.

One run per candidate, nested under one run per sweep, in the MLflow experiment the experiment file
names. Each candidate run holds what a person needs to compare prompts side by side (params, metrics
with confidence intervals) and what they need to re-score later without re-calling the model (the
predictions table with the raw answers, the rendered prompt). Prompt versions go to the MLflow Prompt
Registry, tagged with their sha256, and are linked to the runs that measured them.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from promptgrade.candidates import BaselineCandidate, Candidate
from promptgrade.data.examples import LoadedDataset
from promptgrade.errors import TrackingError
from promptgrade.runner import CandidateResult
from promptgrade.scoring import Estimate, flatten
from promptgrade.settings import load_settings
from promptgrade.task import Task
from promptgrade.tracking.registry import PromptRegistry

DEFAULT_DB = "mlflow.db"


def tracking_uri(explicit: str | None = None) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else a sqlite file in the working directory."""
    return explicit or load_settings().mlflow_tracking_uri or f"sqlite:///{Path(DEFAULT_DB).resolve()}"


def default_trace_examples() -> bool:
    """``trace_examples`` when the experiment file does not say: on, unless PROMPTGRADE_TRACE_EXAMPLES=0.

    The variable lets a whole CI (or this project's own test suite) turn the per-example traces off
    without editing every experiment; an explicit setting in the file always wins.
    """
    return load_settings().trace_examples


def artifact_location(uri: str, experiment_name: str) -> str | None:
    """Artifacts beside a local sqlite store (not in whatever directory the command ran from)."""
    if not uri.startswith("sqlite:///"):
        return None  # a tracking server decides where its artifacts live
    folder = Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts"
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", experiment_name).strip("-") or "experiment"
    return (folder / safe).resolve().as_uri()


class Tracker:
    def __init__(
        self, experiment_name: str, uri: str | None = None, *, trace_examples: bool | None = None
    ) -> None:
        self.uri = tracking_uri(uri)
        self.trace_examples = default_trace_examples() if trace_examples is None else trace_examples
        self.dataset: LoadedDataset | None = None  # the evaluated split: image references for traces
        # Some MLflow calls (linking a prompt to a run) read the global store, not the client's.
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        self.task: Task | None = None  # the sweep's task, known from the first candidate run (for plots)
        try:
            experiment = self.client.get_experiment_by_name(experiment_name)
            if experiment is None:
                self.experiment_id = self.client.create_experiment(
                    experiment_name, artifact_location=artifact_location(self.uri, experiment_name)
                )
            elif experiment.lifecycle_stage == "deleted":
                raise TrackingError(
                    f"MLflow experiment {experiment_name!r} is deleted; restore it or rename the experiment"
                )
            else:
                self.experiment_id = experiment.experiment_id
        except MlflowException as exc:
            raise TrackingError(f"cannot use MLflow store {self.uri}: {exc.message}") from None
        self.experiment_name = experiment_name
        self.registry = PromptRegistry(self.client)

    # -- sweep ---------------------------------------------------------------------------------
    def start_sweep(
        self, experiment_file: Path, dataset: LoadedDataset, n_candidates: int, sweep_key: str
    ) -> bool:
        """Start a sweep run, or resume the unfinished one with the same key; True if resumed.

        The key hashes the candidates and the dataset, so "the same command again" finds its sweep
        and an edited experiment starts a new one.
        """
        unfinished = self.client.search_runs(
            [self.experiment_id],
            f"tags.`promptgrade.kind` = 'sweep' and tags.`sweep_key` = '{sweep_key}' and attributes.status != 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if unfinished:
            self.parent_run_id = unfinished[0].info.run_id
            self.client.update_run(self.parent_run_id, status="RUNNING")
            return True
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"sweep {time.strftime('%Y-%m-%d %H:%M:%S')}",
            tags={
                "promptgrade.kind": "sweep",
                "experiment_file": str(experiment_file),
                "sweep_key": sweep_key,
            },
        )
        self.parent_run_id = run.info.run_id
        self.client.log_batch(
            self.parent_run_id,
            params=[Param(k, str(v)) for k, v in self._dataset_params(dataset).items()]
            + [Param("n_candidates", str(n_candidates)), Param("trace_examples", str(self.trace_examples))],
        )
        self._log_dataset(self.parent_run_id, dataset)
        return False

    def finish_sweep(
        self,
        results: list[CandidateResult],
        primary_metric: str,
        status: str = "FINISHED",
        stop_reason: str | None = None,
    ) -> None:
        summary = [
            {
                "candidate": r.candidate.label,
                "run_id": r.run_id,
                "skipped_reason": r.skipped_reason,
                "partial": r.partial,
                **{k: v for k, v in flatten(r.metrics).items() if not k.endswith(("_ci_low", "_ci_high"))},
            }
            for r in results
        ]
        record = {"primary_metric": primary_metric, "stop_reason": stop_reason, "candidates": summary}
        self.client.log_dict(self.parent_run_id, record, "summary.json")
        ran = [
            (r.candidate.label, r.metrics.get(primary_metric)) for r in results if r.skipped_reason is None
        ]
        if any(value is not None for _, value in ran):
            from promptgrade.tracking import plots

            figure = plots.comparison(ran, primary_metric, self.experiment_name)
            self._log_figures(self.parent_run_id, {"plots/candidates.png": figure})
        self.client.set_tag(self.parent_run_id, "promptgrade.partial", str(status != "FINISHED").lower())
        if stop_reason:
            self.client.set_tag(self.parent_run_id, "stop_reason", stop_reason[:5000])
        self.client.set_terminated(self.parent_run_id, status=status)

    # -- candidates ----------------------------------------------------------------------------
    def candidate_run(
        self, candidate: Candidate, dataset: LoadedDataset, task: Task, image_max_side: int
    ) -> tuple[str, bool]:
        """The candidate's run in this sweep (created, or found when resuming); True if it is finished."""
        self.task, self.dataset = task, dataset
        found = self._child(candidate.key)
        if found is not None:
            return found
        run_id = self._new_child(
            candidate, task, {**self._dataset_params(dataset), "image_max_side": image_max_side}
        )
        self.client.log_text(run_id, candidate.rendered_prompt, "prompt/rendered.txt")
        self.client.log_text(
            run_id, candidate.prompt.text, f"prompt/{candidate.prompt.name}-v{candidate.prompt.version}.jinja"
        )
        self.client.log_dict(run_id, candidate_record(candidate, task, image_max_side), "candidate.json")
        uri = self.registry.link(run_id, candidate.prompt)
        self.client.set_tag(run_id, "registry_prompt_uri", uri)
        return run_id, False

    def baseline_run(
        self, candidate: BaselineCandidate, dataset: LoadedDataset, train: LoadedDataset, task: Task
    ) -> tuple[str, bool]:
        """Like candidate_run, for a trained baseline; records which splits it trained and was scored on."""
        self.task, self.dataset = task, dataset
        found = self._child(candidate.key)
        if found is not None:
            return found
        extra = {
            **self._dataset_params(dataset),
            "train_split": train.split,
            "train_dataset_sha256": train.sha256,
            "n_train": len(train.examples),
        }
        return self._new_child(candidate, task, extra), False

    def _new_child(self, candidate: Candidate | BaselineCandidate, task: Task, params: dict[str, Any]) -> str:
        """A candidate run under the sweep: the candidate's params also as tags, to filter on in the UI."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=candidate.label,
            tags={
                "mlflow.parentRunId": self.parent_run_id,
                "promptgrade.kind": "candidate",
                "candidate_key": candidate.key,
                "task": task.name,
                **{k: str(v) for k, v in candidate.params().items()},
            },
        )
        everything = {**candidate.params(), **params}
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in everything.items()])
        if self.dataset is not None:
            self._log_dataset(run.info.run_id, self.dataset)
        return run.info.run_id

    def _log_dataset(self, run_id: str, dataset: LoadedDataset) -> None:
        """The evaluated split as an MLflow dataset input: fills the runs table's Dataset column."""
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        entity = mlflow_dataset(dataset)._to_mlflow_entity()
        self.client.log_inputs(
            run_id, datasets=[DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, dataset.split)])]
        )

    def log_model(self, run_id: str, baseline: Any, task: Task, sample_images: list[bytes]) -> str:
        from promptgrade.baseline.model import log_baseline_model

        uri = log_baseline_model(run_id, baseline, task, sample_images, tracking_uri=self.uri)
        self.client.set_tag(run_id, "model_uri", uri)
        return uri

    def _child(self, candidate_key: str) -> tuple[str, bool] | None:
        found = self.client.search_runs(
            [self.experiment_id],
            f"tags.`mlflow.parentRunId` = '{self.parent_run_id}' and tags.`candidate_key` = '{candidate_key}'",
            max_results=1,
        )
        if not found:
            return None
        run = found[0]
        if run.info.status != "FINISHED":
            self.client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id, run.info.status == "FINISHED"

    def finished_metrics(self, run_id: str) -> dict[str, float]:
        return dict(self.client.get_run(run_id).data.metrics)

    def log_candidate(self, result: CandidateResult) -> None:
        """Metrics and the predictions table; a partial result is logged too, and marked as such."""
        run_id = result.run_id
        if run_id is None:
            raise TrackingError(f"candidate {result.candidate.label} has no MLflow run")
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in flatten(result.metrics).items()],
            tags=[RunTag("promptgrade.partial", str(result.partial).lower())],
        )
        self.client.log_dict(run_id, metrics_with_ci(result.metrics), "metrics.json")
        if result.partial:
            # log_table appends to an existing table; the full table is written once, when complete.
            self.client.log_dict(run_id, predictions_table(result), "predictions_partial.json")
            self.client.set_terminated(run_id, status="KILLED")
        else:
            self.client.log_table(run_id, predictions_table(result), "predictions.json")
            self._log_figures(run_id, self._candidate_figures(result))
            if self.trace_examples:
                self._log_traces(result)
            self.client.set_terminated(run_id)

    def _log_traces(self, result: CandidateResult) -> None:
        from promptgrade.tracking.traces import log_example_traces

        assert result.run_id is not None
        candidate = result.candidate
        log_example_traces(
            self.client,
            self.experiment_id,
            result.run_id,
            result.outcomes,
            name=candidate.label,
            prompt=getattr(candidate, "rendered_prompt", None),
            model=getattr(candidate, "model", None),
            dataset=self.dataset,
        )

    def _candidate_figures(self, result: CandidateResult) -> dict[str, Any]:
        if self.task is None or not result.outcomes:
            return {}
        from promptgrade.tracking import plots  # matplotlib is imported only when there is a plot to draw

        return plots.candidate_figures(result.outcomes, self.task, result.candidate.label)

    def _log_figures(self, run_id: str, figures: dict[str, Any]) -> None:
        for path, figure in figures.items():
            self.client.log_figure(run_id, figure, path)

    def kill_unfinished(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            if self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_terminated(run_id, status="KILLED")

    @staticmethod
    def _dataset_params(dataset: LoadedDataset) -> dict[str, Any]:
        return {"dataset": dataset.name, "dataset_sha256": dataset.sha256, "split": dataset.split}


def mlflow_dataset(dataset: LoadedDataset) -> Any:
    """Name, digest (our content hash, cut to MLflow's 36 characters) and where the data lives."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    where = dataset.source or dataset.name
    if where.startswith(("/", "s3://", "file:")):
        with warnings.catch_warnings():  # a local path matches two equivalent source kinds: either will do
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(where)
    else:  # a Hub id such as worldcuisines/food-kb
        source = HuggingFaceDatasetSource(path=where, split=dataset.split)
    return MetaDataset(source, name=f"{dataset.name}:{dataset.split}", digest=dataset.sha256[:16])


def candidate_record(candidate: Candidate, task: Task, image_max_side: int) -> dict[str, Any]:
    """Exactly what was run, so promotion can ship the same prompt, model, settings, task and image size."""
    return {
        "key": candidate.key,
        "label": candidate.label,
        "prompt": {
            "name": candidate.prompt.name,
            "version": candidate.prompt.version,
            "sha256": candidate.prompt.sha256,
        },
        "provider": candidate.provider,
        "model": candidate.model,
        "settings": candidate.settings.model_dump(exclude_none=True),
        "task": task.model_dump(mode="json"),
        "image_max_side": image_max_side,
        "endpoint": {"region": candidate.spec.region, "base_url": candidate.spec.base_url},
    }


def predictions_table(result: CandidateResult) -> dict[str, list[Any]]:
    """One row per example: enough to re-score later without calling the model again."""
    columns: dict[str, list[Any]] = {
        "example_id": [],
        "status": [],
        "true_categories": [],
        "predicted_categories": [],
        "category_correct": [],
        "category_top1_correct": [],
        "true_grade": [],
        "predicted_grade": [],
        "grade_abs_error": [],
        "grade_correct": [],
        "error_kind": [],
        "error_message": [],
        "answer": [],
        "input_tokens": [],
        "estimated_input_tokens": [],
        "output_tokens": [],
        "latency_ms": [],
    }
    for outcome in result.outcomes:
        row = outcome.model_dump()
        row["true_categories"] = "; ".join(outcome.true_categories)
        row["predicted_categories"] = "; ".join(outcome.predicted_categories)
        for name, values in columns.items():
            values.append(row[name])
    return columns


def metrics_with_ci(metrics: dict[str, Estimate | float]) -> dict[str, Any]:
    """Every metric with its interval and count; NaN (nothing to measure) becomes null, valid JSON."""

    def clean(value: float) -> float | None:
        return None if math.isnan(value) else value

    return {
        name: {k: clean(v) for k, v in value.model_dump().items()}
        if isinstance(value, Estimate)
        else clean(value)
        for name, value in metrics.items()
    }
