"""A sweep's MLflow runs: one run per candidate, nested under one run per sweep.

Each candidate run holds what a person needs to compare prompts side by side (params, metrics with
confidence intervals) and what they need to re-score later without re-calling the model (the
predictions table with the raw answers, the rendered prompt, one trace per example). Prompt versions
go to the MLflow Prompt Registry, tagged with their sha256, and are linked to the runs that measured
them.

Every write is idempotent, because a sweep is resumed by running the same command again: the sweep
run and each candidate run are found by their keys rather than created twice, the predictions table
is written whole (never appended to, as ``log_table`` would), and example traces have ids derived
from (run, example). A sweep runs this class in its writer process (``tracking.writer``); the
optimiser uses it directly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

from promptgrade.candidates import BaselineCandidate, Candidate
from promptgrade.data.examples import DatasetSummary
from promptgrade.errors import SweepBusy, TrackingError
from promptgrade.ranking import rank_results
from promptgrade.references import REFERENCES_DIR, Reference, ReferenceRecord, write_references
from promptgrade.runner import CandidateResult
from promptgrade.scoring import Estimate, Outcome, flatten, per_category
from promptgrade.task import Task
from promptgrade.tracking.payloads import Owner
from promptgrade.tracking.registry import PromptRegistry
from promptgrade.tracking.uri import DEFAULT_DB, artifact_location, default_trace_examples, tracking_uri

__all__ = ["DEFAULT_DB", "Tracker", "artifact_location", "default_trace_examples", "tracking_uri"]

PREDICTIONS = "predictions.json"


def trace_workers_for(uri: str) -> int:
    """Trace worker processes for the sweep's writer. A tracking server takes writes side by side, so
    on a machine with cores to spare the traces (most of a sweep's MLflow writes) go to two workers; a
    sqlite file takes one writer at a time, and workers there only wait for each other's locks."""
    if uri.startswith("sqlite:") or (os.cpu_count() or 1) < 2:
        return 0
    return 2


# a candidate run's reference images, as sent, and their records (REFERENCES_DIR/REFERENCES_FILE)
PER_CATEGORY = "per_category.json"  # precision, recall and F1 of each category (see scoring.per_category)
REFERENCES_FILE = "references.json"


def reference_record(reference: Reference) -> dict[str, Any]:
    return ReferenceRecord.of(reference).model_dump(mode="json")


class Tracker:
    """The MLflow store of one experiment, written synchronously: call it from one thread."""

    def __init__(
        self,
        experiment_name: str,
        uri: str | None = None,
        *,
        trace_examples: bool | None = None,
        plots: bool = True,
        trace_workers: int = 0,
        trace_workers_after: int = 0,
    ) -> None:
        """``trace_workers``: processes that write trace batches beside this one (the sweep's writer
        process asks for them; they are started with ``spawn``, which is safe only where the main module
        is promptgrade's own), once this process has written ``trace_workers_after`` traces of the sweep
        itself (``PROMPTGRADE_TRACE_WORKERS_AFTER``)."""
        self.trace_workers, self.trace_workers_after = trace_workers, trace_workers_after
        self.uri = tracking_uri(uri)
        self.trace_examples = default_trace_examples() if trace_examples is None else trace_examples
        self.plots = plots  # PROMPTGRADE_PLOTS, read by the caller (the writer serves many sweeps)
        self.dataset: DatasetSummary | None = None  # the evaluated split: image references for traces
        self.activate()
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
        self.parent_run_id = ""
        self._traces: Any = None  # a TraceWriter, made with the first trace
        self._pool: Any = None  # the trace workers (see _trace_pool)
        self._traced_here = 0  # traces of this sweep this process wrote itself (workers start after enough)
        self._pending_traces: dict[str, list[Any]] = {}  # run id -> its batches in the workers
        self._contexts: dict[str, Any] = {}  # run id -> its TraceContext
        # run id -> its reference images, until its first batch of traces stores them
        self._unshown_references: dict[str, list[tuple[str, float | None, bytes, str]]] = {}

    def activate(self) -> None:
        """Some MLflow calls (linking a prompt to a run) read the global store, not the client's."""
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)

    # -- sweep ---------------------------------------------------------------------------------
    def start_sweep(
        self,
        experiment_file: Path,
        dataset: DatasetSummary,
        n_candidates: int,
        sweep_key: str,
        owner: Owner | None = None,
    ) -> tuple[bool, str]:
        """Start a sweep run, or resume the unfinished one with the same key: (resumed, run id).

        The key hashes the candidates and the dataset, so "the same command again" finds its sweep
        and an edited experiment starts a new one. A RUNNING sweep run is resumed only if no live
        sweep holds it (``check_lease``): two people sweeping one experiment file never share runs.
        """
        owner = owner or Owner.this_process()
        # batches an earlier, stopped sweep left in the workers are not this sweep's: their failures are
        # not its failures, and its own run sends every example's trace again (written if missing)
        self._pending_traces.clear()
        self.dataset = dataset
        unfinished = self.client.search_runs(
            [self.experiment_id],
            f"tags.`promptgrade.kind` = 'sweep' and tags.`sweep_key` = '{sweep_key}' and attributes.status != 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if unfinished:
            found = unfinished[0]
            check_lease(found, owner)
            self.parent_run_id = found.info.run_id
            self.client.update_run(self.parent_run_id, status="RUNNING")
            self._hold(owner)
            return True, self.parent_run_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"sweep {time.strftime('%Y-%m-%d %H:%M:%S')}",
            tags={
                "promptgrade.kind": "sweep",
                "experiment_file": str(experiment_file),
                "sweep_key": sweep_key,
                LEASE_TAG: owner.tag(),
                HEARTBEAT_TAG: str(int(time.time())),
            },
        )
        self.parent_run_id = run.info.run_id
        self.client.log_batch(
            self.parent_run_id,
            params=[Param(k, str(v)) for k, v in self._dataset_params(dataset).items()]
            + [Param("n_candidates", str(n_candidates)), Param("trace_examples", str(self.trace_examples))],
        )
        self._log_dataset(self.parent_run_id, dataset)
        return False, self.parent_run_id

    def _hold(self, owner: Owner) -> None:
        self.client.set_tag(self.parent_run_id, LEASE_TAG, owner.tag())
        self.heartbeat()

    def heartbeat(self) -> None:
        """The sweep is alive: another sweep of the same experiment will not take its run over."""
        self.client.set_tag(self.parent_run_id, HEARTBEAT_TAG, str(int(time.time())))

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
        ranked = rank_results([r for r in results if r.skipped_reason is None], primary_metric)
        ran = [(r.candidate.label, r.metrics.get(primary_metric)) for r in ranked]  # best first
        if self.plots and any(value is not None for _, value in ran):
            from promptgrade.tracking import plots

            figure = plots.comparison(ran, primary_metric, self.experiment_name)
            self._log_figures(self.parent_run_id, {"plots/candidates.png": figure})
        self.client.set_tag(self.parent_run_id, "promptgrade.partial", str(status != "FINISHED").lower())
        if stop_reason:
            self.client.set_tag(self.parent_run_id, "stop_reason", stop_reason[:5000])
        self.client.set_terminated(self.parent_run_id, status=status)
        self.close_workers()

    def close_workers(self) -> None:
        """The trace workers end with the sweep: a process that runs many sweeps (a notebook, the
        tests) would otherwise keep a pool of processes per tracking store it ever wrote to."""
        pool, self._pool = self._pool, None
        self._traced_here = 0  # the next sweep earns its workers again
        if pool is not None:
            pool.shutdown(wait=True)

    # -- candidates ----------------------------------------------------------------------------
    def candidate_run(
        self, candidate: Candidate, dataset: DatasetSummary, task: Task, image_max_side: int
    ) -> tuple[str, bool]:
        """The candidate's run in this sweep (created, or found when resuming); True if it is finished."""
        self.task, self.dataset = task, dataset
        found = self._child(candidate.key)
        if found is None:
            run_id = self._new_child(
                candidate, task, {**self._dataset_params(dataset), "image_max_side": image_max_side}
            )
            self.client.log_text(run_id, candidate.rendered_display, "prompt/rendered.txt")
            self.client.log_text(
                run_id,
                candidate.prompt.text,
                f"prompt/{candidate.prompt.name}-v{candidate.prompt.version}.jinja",
            )
            self.client.log_dict(run_id, candidate_record(candidate, task, image_max_side), "candidate.json")
            uri = self.registry.link(run_id, candidate.prompt)
            self.client.set_tag(run_id, "registry_prompt_uri", uri)
            if candidate.references:
                self._log_references(run_id, candidate.references)
            found = (run_id, False)
        self._trace_context(
            found[0], candidate.label, candidate.rendered_display, candidate.model, candidate.references
        )
        return found

    def _log_references(self, run_id: str, references: tuple[Reference, ...]) -> None:
        """The reference images exactly as sent (what a promotion ships), their labels and hashes, and
        one contact sheet a person can look at; the ids also as a tag, to filter runs on."""
        from promptgrade.sheets import contact_sheet

        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            records = write_references(folder, references)
            captions = [f"{r.id}: {r.grade:g}" if r.grade is not None else r.id for r in references]
            sheet = contact_sheet([r.image for r in references], captions=captions)
            (folder / "sheet.jpg").write_bytes(sheet.data)
            (folder / REFERENCES_FILE).write_text(
                json.dumps({"references": [r.model_dump(mode="json") for r in records]}, indent=2),
                encoding="utf-8",
            )
            self.client.log_artifacts(run_id, str(folder), REFERENCES_DIR)
        self.client.set_tag(run_id, "references", ",".join(r.id for r in references)[:5000])

    def baseline_run(
        self, candidate: BaselineCandidate, dataset: DatasetSummary, train: DatasetSummary, task: Task
    ) -> tuple[str, bool]:
        """Like candidate_run, for a trained baseline; records which splits it trained and was scored on."""
        self.task, self.dataset = task, dataset
        found = self._child(candidate.key)
        if found is None:
            extra = {
                **self._dataset_params(dataset),
                "train_split": train.split,
                "train_dataset_sha256": train.sha256,
                "n_train": train.n_examples,
            }
            found = (self._new_child(candidate, task, extra), False)
        self._trace_context(found[0], candidate.label, None, None)
        return found

    def _trace_context(
        self,
        run_id: str,
        name: str,
        prompt: str | None,
        model: str | None,
        references: tuple[Reference, ...] = (),
    ) -> None:
        """What the run's traces share; its reference images wait for the run's first batch of traces,
        which chooses the trace they are stored under (see ``traces.ReferenceImages``)."""
        from promptgrade.tracking.traces import TraceContext

        dataset = self.dataset
        self._contexts[run_id] = TraceContext(
            experiment_id=self.experiment_id,
            run_id=run_id,
            name=name,
            prompt=prompt,
            model=model,
            image_refs=dataset.image_refs if dataset is not None else {},
            image_sha256=dataset.image_sha256 if dataset is not None else {},
            references=tuple(r.id for r in references),
        )
        if self.trace_examples and references:  # the bytes are held only for traces to come
            self._unshown_references[run_id] = [
                (r.id, r.grade, r.image.data, r.image.mime_type) for r in references
            ]

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

    def _log_dataset(self, run_id: str, dataset: DatasetSummary) -> None:
        """The evaluated split as an MLflow dataset input: fills the runs table's Dataset column."""
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        entity = mlflow_dataset(dataset)._to_mlflow_entity()
        self.client.log_inputs(
            run_id, datasets=[DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, dataset.split)])]
        )

    def log_model(self, run_id: str, baseline: Any, task: Task, sample_images: list[bytes]) -> str:
        from promptgrade.tracking.models import log_baseline_model

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

    def log_traces(self, run_id: str, items: list[Any]) -> int:
        """Write a batch of the run's example traces (``traces.ExampleTrace``), or hand it to a trace
        worker where there are cores for one (``log_candidate`` waits for them); returns how many."""
        if not self.trace_examples or not items:
            return 0
        context = self._contexts.get(run_id)
        if context is None:
            raise TrackingError(f"run {run_id} is not a candidate run of this sweep")
        context = self._with_reference_images(run_id, context, items)
        pool = self._trace_pool()
        if pool is not None:
            from promptgrade.tracking.traces import write_batch

            self._pending_traces.setdefault(run_id, []).append(
                pool.submit(write_batch, self.uri, context, items)
            )
            self._references_stored(run_id)  # the batch in the worker stores them (or the sweep stops)
            return len(items)
        from promptgrade.tracking.traces import TraceWriter

        if self._traces is None:
            self._traces = TraceWriter(self.uri)
        written = len(self._traces.write(context, items))
        self._references_stored(run_id)
        self._traced_here += written
        return written

    def _with_reference_images(self, run_id: str, context: Any, items: list[Any]) -> Any:
        """The run's first batch with a trace to write chooses the trace its reference images are stored
        under, and carries them; a retried batch carries the same images under the same trace."""
        from promptgrade.tracking.traces import reference_images

        unshown = self._unshown_references.get(run_id)
        if not unshown or context.reference_images is not None:
            return context
        first = next((item for item in items if item.outcome.status != "skipped"), None)
        if first is None:
            return context
        context = dataclasses.replace(
            context, reference_images=reference_images(run_id, first.outcome.example_id, unshown)
        )
        self._contexts[run_id] = context
        return context

    def _references_stored(self, run_id: str) -> None:
        """Later batches name the reference images without storing them again."""
        context = self._contexts[run_id]
        if context.reference_images is not None and context.reference_images.files:
            self._unshown_references.pop(run_id, None)
            self._contexts[run_id] = dataclasses.replace(
                context, reference_images=dataclasses.replace(context.reference_images, files=())
            )

    def _trace_pool(self) -> Any:
        """Worker processes for traces, when this machine has a core to spare for them and the sweep is
        big enough to repay their start (None: write here)."""
        if self.trace_workers < 1:
            return None
        if self._pool is None and self._traced_here < self.trace_workers_after:
            return None
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            from promptgrade.tracking.traces import worker_start

            self._pool = ProcessPoolExecutor(
                max_workers=self.trace_workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=worker_start,
            )
        return self._pool

    def _traces_written(self, run_id: str) -> None:
        """Wait for the run's trace batches in the workers; the first failure is the run's."""
        for future in self._pending_traces.pop(run_id, []):
            future.result()

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
            self.client.log_dict(run_id, predictions_table(result), "predictions_partial.json")
            self.client.set_terminated(run_id, status="KILLED")
            return
        categories = self.task.categories if self.task is not None else ()
        self.log_tables(
            run_id,
            {
                PREDICTIONS: predictions_table(result),
                PER_CATEGORY: per_category_table(result.outcomes, categories),
            },
        )
        self._log_figures(run_id, self._candidate_figures(result))
        if self.trace_examples:
            self._traces_written(run_id)
            self._check_traces(result)
        self.client.set_terminated(run_id)

    def log_tables(self, run_id: str, tables: dict[str, dict[str, list[Any]]]) -> None:
        """Tables in the form ``log_table`` writes (pandas' split orient, the runs page's table view),
        each written whole: a resumed candidate replaces its tables instead of appending to them. The
        tag that makes the UI show them as tables names them all at once, as it is one value."""
        for path, columns in tables.items():
            rows = [list(values) for values in zip(*columns.values(), strict=True)]
            self.client.log_dict(run_id, {"columns": list(columns), "data": rows}, path)
        self.client.set_tag(
            run_id, MLFLOW_LOGGED_ARTIFACTS, json.dumps([{"path": path, "type": "table"} for path in tables])
        )

    def _check_traces(self, result: CandidateResult) -> None:
        """Every answered example has its trace (counted in the store, not only by us)."""
        assert result.run_id is not None
        expected = sum(o.status != "skipped" for o in result.outcomes)
        if expected == 0:
            return
        from promptgrade.tracking.traces import TraceWriter

        if self._traces is None:
            self._traces = TraceWriter(self.uri)
        found = self._traces.count(self.experiment_id, result.run_id)
        if found < expected:
            raise TrackingError(
                f"{expected - found} of {expected} example traces of run {result.run_id} are not in the "
                f"MLflow store {self.uri} (set trace_examples: false to sweep without them)"
            )

    def _candidate_figures(self, result: CandidateResult) -> dict[str, Any]:
        if not self.plots or self.task is None or not result.outcomes:
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
    def _dataset_params(dataset: DatasetSummary) -> dict[str, Any]:
        return {"dataset": dataset.name, "dataset_sha256": dataset.sha256, "split": dataset.split}


LEASE_TAG = "promptgrade.lease"  # who runs a sweep run: {"host", "pid"} of the sweeping process
HEARTBEAT_TAG = "promptgrade.heartbeat"  # when it last said it was alive (epoch seconds)
LEASE_TTL_S = 180  # a sweep on another host silent this long is taken to be gone


def check_lease(run: Any, owner: Owner) -> None:
    """Refuse to resume a RUNNING sweep run that a live sweep holds: on this host, its process exists;
    on another, it sent a heartbeat within ``LEASE_TTL_S``. A sweep that was killed, or stopped, or
    whose lease is ours, may be resumed."""
    if run.info.status != "RUNNING":
        return
    try:
        lease = json.loads(run.data.tags.get(LEASE_TAG, ""))
        holder = Owner(str(lease["host"]), int(lease["pid"]))
    except (ValueError, KeyError, TypeError):
        return  # a sweep run from before leases: resumed as it always was
    if holder == owner:
        return
    age = time.time() - float(run.data.tags.get(HEARTBEAT_TAG) or 0)
    alive = _process_alive(holder.pid) if holder.host == owner.host else age < LEASE_TTL_S
    if alive:
        raise SweepBusy(
            f"sweep run {run.info.run_id} of this experiment is being run by process {holder.pid} on "
            f"{holder.host} (last heard from {age:.0f} s ago); wait for it to finish (or stop it), then run "
            "the same command to continue it"
        )


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mlflow_dataset(dataset: DatasetSummary) -> Any:
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
    """Exactly what was run, so promotion can ship the same prompt, model, settings, vote, task and image
    size."""
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
        # the images are beside it, in references/ (see _log_references): promotion ships those bytes
        "references": [reference_record(r) for r in candidate.references],
        # the vote the Lambda must take to answer as measured (a record without them: one sample)
        "samples": candidate.samples,
        "abstain_below": candidate.abstain_below,
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
    sampled = any(o.samples for o in result.outcomes)
    selective = any(o.abstained for o in result.outcomes) or getattr(result.candidate, "abstain_below", None)
    if sampled:
        columns.update({"samples": [], "agreement": [], "grade_spread": []})
    if sampled or selective:
        columns["abstained"] = []
    for outcome in result.outcomes:
        row = {
            k: None if isinstance(v, float) and math.isnan(v) else v for k, v in outcome.model_dump().items()
        }
        row["true_categories"] = "; ".join(outcome.true_categories)
        row["predicted_categories"] = "; ".join(outcome.predicted_categories)
        if sampled:  # each sample as it voted: status, categories, grade (a JSON list, one cell)
            row["samples"] = json.dumps(
                [
                    {"status": s.status, "categories": list(s.categories), "grade": s.grade}
                    for s in outcome.samples
                ]
            )
        for name, values in columns.items():
            values.append(row[name])
    return columns


def per_category_table(outcomes: list[Outcome], categories: tuple[str, ...]) -> dict[str, list[Any]]:
    """One row per category of the task (undefined ratios as null), for the runs page's table view."""
    columns: dict[str, list[Any]] = {
        name: []
        for name in (
            "category",
            "support",
            "predicted",
            "true_positives",
            "false_positives",
            "false_negatives",
            "precision",
            "recall",
            "f1",
        )
    }
    for score in per_category(outcomes, categories):
        row = score.row()
        for name, values in columns.items():
            value = row[name]
            values.append(None if isinstance(value, float) and math.isnan(value) else value)
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
