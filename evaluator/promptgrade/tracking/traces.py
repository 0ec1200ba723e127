"""Per-example results in MLflow's own GenAI views: one trace per example, truth and scores on it.

Why traces and not only the predictions table: MLflow 3's run page lists a run's traces with their
assessments and compares two runs example by example, so a person can see *which* trays a prompt
gets wrong without downloading JSON. Each trace holds what the model saw (example id, image
reference, rendered prompt) and what it said (raw answer, parsed prediction); the truth is logged as
expectations and our scores as feedback, all with source ``CODE:promptgrade``.

Why this route: ``mlflow.log_expectation``/``log_feedback`` write one row per call (about 20 ms each
on a sqlite store, so six per example made a 1,000-example candidate take minutes). MLflow's exporter
writes a trace's assessments in the same transaction as the trace itself when they are already on
its TraceInfo, so we attach them before the span ends — the same route MLflow's own
``copy_trace_to_experiment`` takes to edit a trace before export. Export runs on MLflow's async
queue; ``flush`` waits for it before the candidate's run is closed, the traces are linked to the
run (100 per call, MLflow's limit), and they are counted back, since the exporter drops a trace
whose write failed with only a debug log line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import AssessmentSource, AssessmentSourceType, Expectation, Feedback, SpanType
from mlflow.exceptions import MlflowException
from mlflow.tracing.constant import SpanAttributeKey, TraceMetadataKey
from mlflow.tracing.trace_manager import InMemoryTraceManager

from promptgrade.data.examples import LoadedDataset
from promptgrade.errors import TrackingError
from promptgrade.scoring import Outcome

SOURCE_ID = "promptgrade"
LINK_BATCH = 100  # MLflow's MAX_TRACE_LINKS_PER_REQUEST
FEEDBACK = ("category_correct", "category_top1_correct", "grade_abs_error", "grade_correct")


def assessments(outcome: Outcome) -> list[Expectation | Feedback]:
    """The truth as expectations, our per-example scores as feedback (unknowns left out, not zeroed)."""
    source = AssessmentSource(source_type=AssessmentSourceType.CODE, source_id=SOURCE_ID)
    found: list[Expectation | Feedback] = [
        Expectation(name="categories", value=list(outcome.true_categories), source=source)
    ]
    if outcome.true_grade is not None:
        found.append(Expectation(name="grade", value=outcome.true_grade, source=source))
    for name in FEEDBACK:
        value = getattr(outcome, name)
        if value is not None:
            found.append(Feedback(name=name, value=value, source=source))
    if outcome.status != "ok":
        found.append(
            Feedback(
                name="error_kind",
                value=outcome.error_kind or outcome.status,
                rationale=outcome.error_message,
                source=source,
            )
        )
    return found


def log_example_traces(
    client: MlflowClient,
    experiment_id: str,
    run_id: str,
    outcomes: Sequence[Outcome],
    *,
    name: str,
    prompt: str | None,
    model: str | None,
    dataset: LoadedDataset | None,
) -> list[str]:
    """One trace per answered example, linked to ``run_id``; returns the trace ids in outcome order.

    ``dataset`` (the evaluated split) says where each image came from; without it the trace has none.
    """
    image_refs = dataset.image_refs if dataset is not None else {}
    image_sha256 = {e.id: e.image.sha256 for e in dataset.examples} if dataset is not None else {}
    manager = InMemoryTraceManager.get_instance()
    trace_ids: list[str] = []
    now_ns = time.time_ns()
    for outcome in outcomes:
        if outcome.status == "skipped":
            continue  # never sent: there is nothing the model saw or said
        latency_ns = int((outcome.latency_ms or 0.0) * 1e6)
        inputs: dict[str, Any] = {
            "example_id": outcome.example_id,
            "image": image_refs.get(outcome.example_id, ""),
            "image_sha256": image_sha256.get(outcome.example_id, ""),
        }
        if prompt is not None:
            inputs["prompt"] = prompt
        attributes: dict[str, Any] = {
            SpanAttributeKey.CHAT_USAGE: {
                "input_tokens": outcome.input_tokens,
                "output_tokens": outcome.output_tokens,
                "total_tokens": outcome.input_tokens + outcome.output_tokens,
            }
        }
        if model is not None:
            attributes["model"] = model
        span = mlflow.start_span_no_context(
            name=name,
            span_type=SpanType.LLM if prompt is not None else SpanType.CHAIN,
            inputs=inputs,
            attributes=attributes,
            tags={"example_id": outcome.example_id},
            metadata={TraceMetadataKey.SOURCE_RUN: run_id},
            experiment_id=experiment_id,
            start_time_ns=now_ns - latency_ns,
        )
        with manager.get_trace(span.trace_id) as trace:
            if trace is not None:
                trace.info.assessments.extend(assessments(outcome))
        if outcome.status != "ok":
            span.set_status("ERROR")
        span.end(
            outputs={
                "answer": outcome.answer,
                "prediction": {
                    "categories": list(outcome.predicted_categories),
                    "grade": outcome.predicted_grade,
                },
                "status": outcome.status,
            },
            end_time_ns=now_ns,
        )
        trace_ids.append(span.trace_id)
    flush()
    link(client, trace_ids, run_id)
    verify(experiment_id, run_id, trace_ids)
    return trace_ids


def verify(experiment_id: str, run_id: str, trace_ids: list[str]) -> None:
    """MLflow's exporter logs a failed write at debug level and drops the trace: count them back."""
    written = {
        t.info.trace_id
        for t in mlflow.search_traces(
            locations=[experiment_id], run_id=run_id, include_spans=False, return_type="list"
        )
    }
    lost = [t for t in trace_ids if t not in written]
    if lost:
        raise TrackingError(
            f"{len(lost)} of {len(trace_ids)} example traces of run {run_id} were not written to MLflow "
            "(its trace export failed; set trace_examples: false to sweep without them)"
        )


def flush() -> None:
    """Wait for MLflow's async export queue, so the traces exist before anything refers to them.

    The queue restarts after a flush, and at exit MLflow logs "Flushing the async trace logging queue
    ... This may take a while" even when, as here, nothing is left in it: that line is silenced.
    """
    mlflow.flush_trace_async_logging(terminate=False)
    logging.getLogger("mlflow.tracing.export.async_export_queue").setLevel(logging.WARNING)


def link(client: MlflowClient, trace_ids: Iterable[str], run_id: str) -> None:
    pending = list(trace_ids)
    try:
        for start in range(0, len(pending), LINK_BATCH):
            client.link_traces_to_run(pending[start : start + LINK_BATCH], run_id)
    except MlflowException as exc:
        raise TrackingError(f"could not link the example traces to run {run_id}: {exc.message}") from None
