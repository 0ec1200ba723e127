"""Per-example results in MLflow's own GenAI views: one trace per example, truth and scores on it.

Why traces and not only the predictions table: MLflow 3's run page lists a run's traces with their
assessments and compares two runs example by example, so a person can see *which* trays a prompt
gets wrong — and, with the tray attached as an image, *what* the tray looked like — without
downloading JSON. Each trace holds what the model saw (example id, the tray, its file, the reference
trays shown, the rendered prompt) and what it said (raw answer, parsed prediction); the truth is
logged as expectations and our scores as feedback, all with source ``CODE:promptgrade``.

Why this route and not MLflow's fluent tracing: the fluent API writes each trace through its exporter
— trace info, spans, assessments, attachments and previews in about five store sessions per trace,
~50 ms on a sqlite store — and drops a failed write with a debug line. Here each trace is built as
MLflow's own entities (``TraceInfo`` with its assessments, one root ``Span``, the image as an
``Attachment``) and a batch is written with the store calls the exporter itself uses: one
``start_trace`` per trace (it carries the assessments in the same transaction), **one** ``log_spans``
for the whole batch, one link call per hundred traces. Every call raises on failure, so nothing is
lost silently. Trace ids are derived from (run, example), so a resumed run finds the traces it wrote
before and writes only the missing ones — never a second trace of the same example.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import io
import json
import tempfile
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import (
    AssessmentSource,
    AssessmentSourceType,
    Expectation,
    Feedback,
    SpanType,
    TraceInfo,
    TraceLocation,
    TraceState,
)
from mlflow.entities.span import Span
from mlflow.store.artifact.artifact_repo import ArtifactRepository, StreamUploadMixin
from mlflow.tracing.attachments import Attachment
from mlflow.tracing.client import TracingClient
from mlflow.tracing.constant import (
    TRACE_SCHEMA_VERSION,
    TRACE_SCHEMA_VERSION_KEY,
    SpanAttributeKey,
    SpansLocation,
    TraceMetadataKey,
    TraceMetricKey,
    TraceTagKey,
)

from promptgrade.errors import TrackingError
from promptgrade.scoring import Outcome
from promptgrade.tracking.payloads import ExampleTrace
from promptgrade.tracking.thumbnails import thumbnail

SOURCE_ID = "promptgrade"
LINK_BATCH = 100  # MLflow's MAX_TRACE_LINKS_PER_REQUEST
PREVIEW_CHARS = 1000  # MLflow's own preview length
# A batch widens the scope of the store's own calls by swapping attributes of the store object, which
# every client of the same URI in this process shares: one batch at a time per process.
_BATCH_LOCK = threading.Lock()
FEEDBACK = ("category_correct", "category_top1_correct", "grade_abs_error", "grade_correct")


@dataclass(frozen=True, slots=True)
class TraceContext:
    """What every trace of one candidate run shares: sent once per run, not once per example."""

    experiment_id: str
    run_id: str
    name: str  # the candidate's label: the trace name in MLflow's list
    prompt: str | None  # the rendered prompt (None: a trained baseline, no prompt)
    model: str | None
    image_refs: Mapping[str, str]  # example id -> where the image came from (file path, hub id…)
    image_sha256: Mapping[str, str]
    references: tuple[str, ...] = ()  # the ids of the reference images the prompt showed, in order
    reference_images: ReferenceImages | None = None  # the same images, as the trace view shows them


@dataclass(frozen=True, slots=True)
class ReferenceImages:
    """A run's reference trays as its traces show them: stored once, under one of the run's traces.

    Why once: every trace of a candidate shows the same references, and each stored attachment is a file
    write (about a millisecond on a local store, a request on a tracking server) — five of them per
    trace would double what tracing costs. MLflow's trace view fetches an attachment by the trace id its
    ``mlflow-attachment://`` ref carries, not by the trace being read, so the images are stored under
    one trace of the run (``holder``) and every trace names them with refs carrying that trace's id.
    ``files`` are the thumbnails still to be stored: the first batch of the run carries them.
    """

    holder: str  # the trace id the images are stored under
    shown: tuple[tuple[str, float | None, str], ...]  # (reference id, grade, attachment ref), in order
    files: tuple[tuple[str, bytes], ...] = ()  # (attachment id, JPEG) to store with this batch


def reference_images(
    run_id: str, holder_example: str, references: Sequence[tuple[str, float | None, bytes, str]]
) -> ReferenceImages:
    """Thumbnails of ``(id, grade, image bytes, mime type)`` to store under the trace of ``holder_example``
    (a reference whose bytes are not an image is named by id only, as before)."""
    holder = trace_id_for(run_id, holder_example)
    shown: list[tuple[str, float | None, str]] = []
    files: list[tuple[str, bytes]] = []
    for reference_id, grade, data, mime_type in references:
        small = thumbnail(data, mime_type)
        if small is None:
            shown.append((reference_id, grade, ""))
            continue
        attachment = Attachment(content_type=small[1], content_bytes=small[0])
        shown.append((reference_id, grade, attachment.ref(holder)))
        files.append((attachment.id, small[0]))
    return ReferenceImages(holder, tuple(shown), tuple(files))


def trace_id_for(run_id: str, example_id: str) -> str:
    """MLflow's v3 trace id (``tr-`` + 32 hex digits), derived so the same example of the same run is
    always the same trace: a resumed or retried write finds it instead of adding a second one."""
    return "tr-" + hashlib.sha256(f"{run_id}\0{example_id}".encode()).hexdigest()[:32]


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


@dataclass(frozen=True, slots=True)
class BuiltTrace:
    info: TraceInfo
    span: Span
    attachments: dict[str, Attachment]


def build_trace(
    context: TraceContext, item: ExampleTrace, tray: tuple[bytes, str] | None = None
) -> BuiltTrace:
    """One example as MLflow entities: the trace info (tags, metadata, previews, assessments) and its
    single root span, whose inputs hold the tray as an ``mlflow-attachment://`` reference that MLflow's
    trace view renders as the image."""
    outcome = item.outcome
    trace_id = trace_id_for(context.run_id, outcome.example_id)
    digest = bytes.fromhex(trace_id[3:])
    latency_ns = int((outcome.latency_ms or 0.0) * 1e6)
    end_ns = item.ended_ns
    start_ns = end_ns - latency_ns
    attachments: dict[str, Attachment] = {}
    inputs = _inputs(context, outcome, trace_id, tray, attachments)
    outputs = _outputs(outcome)
    usage = {
        "input_tokens": outcome.input_tokens,
        "output_tokens": outcome.output_tokens,
        "total_tokens": outcome.input_tokens + outcome.output_tokens,
    }
    span_type = SpanType.LLM if context.prompt is not None else SpanType.CHAIN
    attributes = {
        SpanAttributeKey.REQUEST_ID: trace_id,
        SpanAttributeKey.EXPERIMENT_ID: context.experiment_id,
        SpanAttributeKey.SPAN_TYPE: span_type,
        SpanAttributeKey.INPUTS: inputs,
        SpanAttributeKey.OUTPUTS: outputs,
        SpanAttributeKey.CHAT_USAGE: usage,
        **({"model": context.model} if context.model is not None else {}),
    }
    ok = outcome.status == "ok"
    span = Span.from_dict(
        {
            "trace_id": base64.b64encode(digest).decode(),
            "span_id": base64.b64encode(digest[:8]).decode(),
            "parent_span_id": None,
            "name": context.name,
            "start_time_unix_nano": start_ns,
            "end_time_unix_nano": end_ns,
            "events": [],
            "status": {"code": "STATUS_CODE_OK" if ok else "STATUS_CODE_ERROR", "message": ""},
            "attributes": {key: json.dumps(value) for key, value in attributes.items()},
            "links": [],
        }
    )
    info = TraceInfo(
        trace_id=trace_id,
        trace_location=TraceLocation.from_experiment_id(context.experiment_id),
        request_time=start_ns // 1_000_000,
        state=TraceState.OK if ok else TraceState.ERROR,
        execution_duration=latency_ns // 1_000_000,
        request_preview=_preview(inputs),
        response_preview=_preview(outputs),
        trace_metadata={
            TraceMetadataKey.SOURCE_RUN: context.run_id,
            TRACE_SCHEMA_VERSION_KEY: str(TRACE_SCHEMA_VERSION),
            TraceMetadataKey.TOKEN_USAGE: json.dumps(usage),
        },
        tags={TraceTagKey.TRACE_NAME: context.name, "example_id": outcome.example_id},
        assessments=list(assessments(outcome)),
    )
    return BuiltTrace(info, span, attachments)


@contextmanager
def _experiment_read_once(store: Any) -> Iterator[None]:
    """Within one batch, the store reads the experiment once, not once per trace.

    A sqlite store's ``start_trace`` looks the experiment up (to check it is active) on every call:
    a third of each trace's write. Every trace of a batch is in the same experiment, so for the
    batch's duration the first answer stands (a store without ``get_experiment`` — a tracking
    server's REST store does not call it — is left alone).
    """
    original = getattr(store, "get_experiment", None)
    if original is None or "get_experiment" in vars(store):
        yield
        return
    cached: dict[str, Any] = {}

    def get_experiment(experiment_id: str) -> Any:
        if experiment_id not in cached:
            cached[experiment_id] = original(experiment_id)
        return cached[experiment_id]

    store.get_experiment = get_experiment
    try:
        yield
    finally:
        del store.get_experiment


class _SharedRollback(Exception):
    """A batch's shared transaction cannot stand: a store call in it wanted to roll back, or its trace
    infos collided with rows another writer stored meanwhile (``_one_transaction``, ``_flushes_deferred``)."""


@contextmanager
def _one_transaction(store: Any) -> Iterator[Any]:
    """Within one batch, the store's calls share one database transaction: one commit per batch.

    Why: a database store opens a session for every call — on sqlite three PRAGMAs — and commits it,
    which on a disk is a sync. One ``start_trace`` per example made that two thirds of a trace's
    write (measured on sqlite: 8.2 ms per trace with a transaction per call, 4.4 ms with one per
    batch of 64). The store's own calls run unchanged, with their own SQL; only the scope of their
    transaction is wider, through the store's ``ManagedSessionMaker``, the one place it opens
    sessions. A store without it (a tracking server's REST store) is left alone.

    An error inside the batch rolls all of it back and is raised as it was (a bug of ours stays a
    bug, not a store failure). A call that rolls back and carries on (MLflow does so when another
    writer inserted the same trace first) would, in a shared session, silently undo the calls before
    it in the batch. So in the shared session a rollback raises ``_SharedRollback`` instead: the
    whole batch is rolled back, and the caller writes it again with one transaction per call.

    Autoflush is off in the shared session: the batch's rows go out in ``_flushes_deferred``'s flush
    and at the commit. ``log_spans`` reads only rows already sent (the trace infos, which its first
    query locks); with autoflush on, each of its per-trace ``merge`` calls flushed the session first —
    a unit of work per trace that found nothing to write.

    Yields the shared session (None where the store is left alone).
    """
    original = getattr(store, "ManagedSessionMaker", None)
    if original is None or "ManagedSessionMaker" not in vars(store):
        yield None
        return
    refused: list[bool] = []

    def refuse_rollback(*args: Any, **kwargs: Any) -> None:
        refused.append(True)
        raise _SharedRollback

    @contextmanager
    def shared(read_only: bool = True) -> Iterator[Any]:
        yield session

    failed: list[BaseException] = []
    try:
        with original(read_only=False) as session:
            session.rollback = refuse_rollback
            session.autoflush = False
            store.ManagedSessionMaker = shared
            try:
                yield session
            except BaseException as exc:
                failed.append(exc)
                raise
            finally:  # before the session's own handler commits, or rolls back on an error
                store.ManagedSessionMaker = original
                del session.rollback
    except Exception:
        if refused:
            raise _SharedRollback from None
        if failed:  # rolled back; the error itself, not MLflow's INTERNAL_ERROR wrapping of it
            raise failed[0] from None
        raise


@contextmanager
def _flushes_deferred(session: Any) -> Iterator[None]:
    """Within the shared transaction, the trace infos of a batch are sent to the database together.

    Why: ``start_trace`` flushes its session for every trace, and each flush is a unit of work of its
    own — about fourteen single-row INSERTs (the info, its tags, metadata and assessments) planned and
    sent one statement at a time. Held back to the end of the batch, the same rows go out in one flush,
    as one multi-row INSERT per table: the store's own rows and SQL, 13–24 % less CPU per trace
    (benchmarks/README.md §9). ``start_trace`` reads nothing back after its flush; it builds the
    TraceInfo it returns from the rows it made. A trace another writer inserted meanwhile fails that
    one flush (IntegrityError) instead of its ``start_trace``: the batch is rolled back and written
    again call by call (``_SharedRollback``), as when ``start_trace`` itself finds it. Autoflushes are
    held back too: the queries ``start_trace`` makes read the experiment, not trace rows (with MLflow's
    opt-in trace rollups, a rebuild-queue row it then adds twice would fail the flush the same way).

    The rows it sends stay in the session for the rest of the batch, so ``log_spans`` finds each
    trace's spans-location tag — sent with ``start_trace``, see ``_spans_in_store`` — in the session's
    identity map, where its ``merge`` looks first, instead of reading the tag back with one SELECT per
    trace. With autoflush off as well: ``log_spans`` 1.03–1.27 → 0.68–0.72 s of CPU per 1,024 traces
    (benchmarks/README.md §9).
    """
    if session is None:
        yield
        return
    from sqlalchemy.exc import IntegrityError

    session.flush = _flush_later
    try:
        yield
    finally:
        del session.flush
    try:
        session.flush()
    except IntegrityError:
        raise _SharedRollback from None


def _spans_in_store(info: TraceInfo) -> TraceInfo:
    """The trace info as ``log_spans`` leaves it: its spans in the tracking store.

    Sent with ``start_trace`` only inside a batch's shared transaction, where a trace's info and spans
    are committed together, so a stored trace with this tag always has its spans (what ``_complete``
    relies on to resume). Elsewhere (a tracking server, a batch written call by call) ``log_spans``
    sets it, as MLflow does alone.
    """
    return dataclasses.replace(
        info, tags={**info.tags, TraceTagKey.SPANS_LOCATION: SpansLocation.TRACKING_STORE.value}
    )


def _flush_later(objects: Any = None) -> None:
    """A flush held back to the end of the batch (``_flushes_deferred``)."""


def _complete(info: TraceInfo | None) -> bool:
    """A trace already in the store with its spans: a write cut short has the info without them."""
    return (
        info is not None and info.tags.get(TraceTagKey.SPANS_LOCATION) == SpansLocation.TRACKING_STORE.value
    )


def _inputs(
    context: TraceContext,
    outcome: Outcome,
    trace_id: str,
    tray: tuple[bytes, str] | None,
    attachments: dict[str, Attachment],
) -> dict[str, Any]:
    """What the model saw: the example, the tray (as an attachment MLflow renders), its file, the
    references shown and the prompt."""
    inputs: dict[str, Any] = {"example_id": outcome.example_id}
    if tray is not None:
        attachment = Attachment(content_type=tray[1], content_bytes=tray[0])
        attachments[attachment.id] = attachment
        inputs["tray"] = attachment.ref(trace_id)
    inputs["image"] = context.image_refs.get(outcome.example_id, "")
    inputs["image_sha256"] = context.image_sha256.get(outcome.example_id, "")
    if context.reference_images is not None:
        inputs["references"] = [
            {"id": reference_id, "grade": grade, **({"image": ref} if ref else {})}
            for reference_id, grade, ref in context.reference_images.shown
        ]
    elif context.references:
        inputs["references"] = list(context.references)
    if context.prompt is not None:
        inputs["prompt"] = context.prompt
    return inputs


def _outputs(outcome: Outcome) -> dict[str, Any]:
    """What the model said, parsed; with samples, each sample and how far they agreed."""
    outputs: dict[str, Any] = {
        "answer": outcome.answer,
        "prediction": {"categories": list(outcome.predicted_categories), "grade": outcome.predicted_grade},
        "status": outcome.status,
    }
    if outcome.samples:
        outputs["samples"] = [
            {"status": s.status, "categories": list(s.categories), "grade": s.grade} for s in outcome.samples
        ]
        outputs["agreement"] = outcome.agreement
    if outcome.abstained:
        outputs["abstained"] = True
    return outputs


def _tray(item: ExampleTrace) -> tuple[bytes, str] | None:
    if item.image is None:
        return None
    return thumbnail(item.image, item.image_mime or "image/jpeg")


def _preview(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 3] + "..."


def _canonical_uuid(text: str) -> bool:
    """MLflow's rule for an attachment id: a UUID in its canonical form (so never a path)."""
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


class TraceWriter:
    """Writes batches of example traces to one MLflow store with the calls MLflow's exporter uses."""

    def __init__(self, tracking_uri: str) -> None:
        self.client = TracingClient(tracking_uri)

    def write(
        self, context: TraceContext, items: Sequence[ExampleTrace], *, one_transaction: bool = True
    ) -> list[str]:
        """Write (or complete) each item's trace and link them to the run; returns their trace ids.

        A trace whose info exists and whose spans are stored is left alone (a resumed run, a retried
        batch); one whose info exists without spans (a write cut short) gets its spans now. On a
        database store the whole batch — infos, spans, attachments, links — is one transaction
        (``_one_transaction``): it is written whole or not at all, so a retried batch never finds a
        trace without its tray.
        """
        built = [
            build_trace(context, item, _tray(item)) for item in items if item.outcome.status != "skipped"
        ]
        if not built:
            return []
        store = self.client.store
        known = {
            info.trace_id: info for info in store.batch_get_trace_infos([b.info.trace_id for b in built])
        }
        todo = [b for b in built if not _complete(known.get(b.info.trace_id))]
        ids = [b.info.trace_id for b in built]
        scope = _one_transaction(store) if one_transaction else contextlib.nullcontext()
        try:
            with (
                _BATCH_LOCK,
                scope as session,
                _experiment_read_once(store),
                tempfile.TemporaryDirectory(prefix="promptgrade-attachments-") as staging_dir,
            ):
                staging = Path(staging_dir)
                stored: dict[str, TraceInfo] = {}
                with _flushes_deferred(session):
                    for trace in todo:
                        trace_id = trace.info.trace_id
                        # the store's copy carries where this trace's artifacts (the tray) live
                        info = trace.info if session is None else _spans_in_store(trace.info)
                        stored[trace_id] = known.get(trace_id) or self.client.start_trace(info)
                if todo:
                    self.client.log_spans(context.experiment_id, [t.span for t in todo])
                for trace in todo:
                    if trace.attachments:
                        files = [
                            (key, attachment.content_bytes) for key, attachment in trace.attachments.items()
                        ]
                        self._store_files(stored[trace.info.trace_id], files, staging)
                references = context.reference_images
                if references is not None and references.files:
                    # the holder is one of this batch's traces: new (stored) or written by an earlier sweep (known)
                    holder = stored.get(references.holder) or known.get(references.holder)
                    if holder is None:
                        raise TrackingError(
                            f"trace {references.holder} for the reference images is not in its batch"
                        )
                    self._store_files(holder, references.files, staging)
                self.link(ids, context.run_id)
        except _SharedRollback:
            # another writer stored some of these traces meanwhile: nothing of this batch was kept, and
            # it is written again with one transaction per store call, as MLflow writes alone
            return self.write(context, items, one_transaction=False)
        return ids

    def _store_files(self, info: TraceInfo, files: Iterable[tuple[str, bytes]], staging: Path) -> None:
        """Attachments into the trace's artifact folder, where its ``mlflow-attachment://`` refs point.

        MLflow's own ``upload_attachment`` writes each file into a temporary folder made for it alone,
        then hands it to the repository's ``log_artifact``, which copies it. Each folder made and file
        created is kernel time on a disk (on the project's benchmark machine ~70 µs a folder, ~150 µs a
        file), and the tray was a fifth of a trace's write. So, for a repository that keeps MLflow's
        default upload:

        - one that takes a stream (MLflow's ``StreamUploadMixin``: the local store's) gets the bytes
          straight from memory, written to a temporary file beside the destination and renamed into
          place, as its ``log_artifact`` does — no folder, no copy (the writer's CPU for a tray 0.96–1.21 →
          0.60–0.73 ms per trace, benchmarks/README.md §9);
        - any other (a tracking server's, S3's) gets its ``log_artifact`` from one staging folder per
          batch, as ``upload_attachment`` would call it, without a folder per file.

        A repository with an upload of its own (Databricks'), or an id that is not a canonical UUID —
        the only ids MLflow's upload accepts — goes through ``upload_attachment`` as MLflow calls it,
        which refuses the id.
        """
        repo = self.client._get_artifact_repo_for_trace(info)
        default = type(repo).upload_attachment is ArtifactRepository.upload_attachment
        for attachment_id, data in files:
            if not default or not _canonical_uuid(attachment_id):
                repo.upload_attachment(attachment_id, data)
            elif isinstance(repo, StreamUploadMixin):
                repo.log_artifact_from_stream(io.BytesIO(data), attachment_id, artifact_path="attachments")
            else:
                path = staging / attachment_id
                path.write_bytes(data)
                try:
                    repo.log_artifact(str(path), artifact_path="attachments")
                finally:
                    path.unlink(missing_ok=True)

    def link(self, trace_ids: Iterable[str], run_id: str) -> None:
        pending = list(trace_ids)
        for start in range(0, len(pending), LINK_BATCH):
            self.client.store.link_traces_to_run(pending[start : start + LINK_BATCH], run_id)

    def count(self, experiment_id: str, run_id: str) -> int:
        """How many traces the store holds for the run: the count the candidate is checked against.

        Asked as one of MLflow's trace metrics (a COUNT over the run's traces, filtered the way
        ``search_traces(run_id=…)`` filters): reading every trace's info back to count them cost
        0.7 ms per trace on sqlite (461 ms for 640), the metric a few milliseconds in all. A store
        without trace metrics (an older tracking server) is read back page by page, as before.
        """
        from mlflow.entities.trace_metrics import AggregationType, MetricAggregation, MetricViewType
        from mlflow.exceptions import MlflowException

        try:
            points = self.client.store.query_trace_metrics(
                [experiment_id],
                MetricViewType.TRACES,
                TraceMetricKey.TRACE_COUNT,
                [MetricAggregation(AggregationType.COUNT)],
                filters=[f"trace.metadata.`{TraceMetadataKey.SOURCE_RUN}` = '{run_id}'"],
            )
        except MlflowException as exc:
            if exc.error_code not in ("NOT_IMPLEMENTED", "ENDPOINT_NOT_FOUND"):
                raise
            return self._count_read_back(experiment_id, run_id)
        return int(sum(point.values.get("COUNT", 0) for point in points))

    def _count_read_back(self, experiment_id: str, run_id: str) -> int:
        total, token = 0, None
        while True:
            page = self.client.search_traces(
                locations=[experiment_id],
                run_id=run_id,
                max_results=500,
                page_token=token,
                include_spans=False,
            )
            total += len(page)
            token = page.token
            if not token:
                return total


# -- trace workers -------------------------------------------------------------------------------------
# A sweep's traces are most of its MLflow writes (a store transaction per trace). Where there are cores
# to spare, the writer hands trace batches to worker processes of its own, so they are written side by
# side (a sqlite store serialises only the commits; a tracking server takes them in parallel).
_WRITERS: dict[str, TraceWriter] = {}
WORKER_ATTEMPTS = 3


def worker_start() -> None:
    """A trace worker: no Ctrl-C of its own, background priority, MLflow's INFO lines silenced."""
    import logging
    import os
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(5)
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def write_batch(uri: str, context: TraceContext, items: list[ExampleTrace]) -> int:
    """Write one batch in a trace worker (retried); a store that keeps failing is one TrackingError."""
    import time

    for attempt in range(WORKER_ATTEMPTS):
        try:
            writer = _WRITERS.get(uri)
            if writer is None:
                writer = _WRITERS[uri] = TraceWriter(uri)
            return len(writer.write(context, items))
        except Exception as exc:
            if attempt + 1 == WORKER_ATTEMPTS:
                message = str(getattr(exc, "message", None) or exc).strip().splitlines()
                raise TrackingError(
                    f"the MLflow store {uri} failed writing traces ({message[0][:300] if message else type(exc).__name__})"
                ) from None
            time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")
