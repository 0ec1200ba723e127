"""Given a finished sweep, when I open a candidate run in MLflow, then each example is a trace with
what the model saw and said, the truth as expectations and the scores as feedback — read back
through MLflow's own API, as the UI does — and the evaluated split is the run's dataset input.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import urllib.parse
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from helpers.scripted_sweeps import planted_answers, write_experiment
from promptgrade.cli import app
from promptgrade.data.examples import Example
from promptgrade.testing.gemini_server import FakeGemini

ROOT = Path(__file__).resolve().parents[2]
RUNNER = CliRunner(env={"COLUMNS": "240"})
N = 8

pytestmark = pytest.mark.traces


def sweep(
    tmp_path: Path, tracking: str, server: FakeGemini, extra: str = ""
) -> tuple[MlflowClient, Any, str]:
    """The first tray gets an unparseable answer, the second a wrong category; the rest are right."""
    path = tmp_path / "exp.yaml"
    examples = write_experiment(
        path, name="traced", base_url=server.base_url, n=N, prompts="meal_tray_json@1", extra=extra
    )
    broken, wrong = examples[0].id, examples[1].id

    def script(example: Example, is_json: bool) -> str | None:
        return "I cannot tell what is on this tray." if example.id == broken else None

    everyone_but_wrong = {e.id for e in examples} - {wrong}
    server.default_answer = planted_answers(examples, everyone_but_wrong, set(), script)
    client, run = swept(path, tracking, "traced")
    return client, run, broken


def swept(path: Path, tracking: str, name: str) -> tuple[MlflowClient, Any]:
    """`promptgrade sweep` as a user runs it; the MLflow client and the (one) candidate run."""
    result = RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", tracking])
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri=tracking)
    mlflow.set_tracking_uri(tracking)
    experiment = client.get_experiment_by_name(name)
    [run] = client.search_runs([experiment.experiment_id], "tags.`promptgrade.kind` = 'candidate'")
    return client, run


def predictions(client: MlflowClient, run_id: str) -> dict[str, dict[str, Any]]:
    table = json.loads(Path(client.download_artifacts(run_id, "predictions.json")).read_text())
    return {row[0]: dict(zip(table["columns"], row, strict=True)) for row in table["data"]}


def test_each_example_is_a_trace_with_expectations_and_feedback(
    tmp_path: Path, tracking: str, gemini_server: FakeGemini, fake_api_key: str
) -> None:
    client, run, broken = sweep(tmp_path, tracking, gemini_server)
    rows = predictions(client, run.info.run_id)
    traces = mlflow.search_traces(
        locations=[run.info.experiment_id], run_id=run.info.run_id, return_type="list"
    )
    assert len(traces) == N
    rendered = Path(client.download_artifacts(run.info.run_id, "prompt/rendered.txt")).read_text()
    with (ROOT / "data" / "sample" / "labels.csv").open(encoding="utf-8") as handle:
        files = {row["id"]: row["file"] for row in csv.DictReader(handle)}
    seen = set()
    for trace in traces:
        request = json.loads(trace.info.request_preview or "{}")
        example_id = trace.info.tags["example_id"]
        seen.add(example_id)
        row = rows[example_id]
        assert trace.info.trace_metadata["mlflow.sourceRun"] == run.info.run_id
        root = trace.data.spans[0]
        response = root.outputs
        assert root.inputs["example_id"] == example_id == request["example_id"]
        assert root.inputs["prompt"] == rendered
        assert root.inputs["image"] == str(ROOT / "data" / "sample" / files[example_id])
        assert len(root.inputs["image_sha256"]) == 64
        assert response["answer"] == row["answer"]
        assert response["prediction"]["categories"] == [
            c for c in row["predicted_categories"].split("; ") if c
        ]
        by_name = {a.name: a for a in trace.info.assessments}
        assert by_name["categories"].expectation.value == row["true_categories"].split("; ")
        assert by_name["grade"].expectation.value == row["true_grade"]
        assert by_name["category_correct"].feedback.value is row["category_correct"]
        assert by_name["category_top1_correct"].feedback.value is row["category_top1_correct"]
        assert by_name["grade_abs_error"].feedback.value == pytest.approx(row["grade_abs_error"])
        assert by_name["category_correct"].source.source_id == "promptgrade"
        if example_id == broken:
            assert row["status"] != "ok"
            assert by_name["error_kind"].feedback.value == row["error_kind"]
            assert trace.info.state.value == "ERROR"
        else:
            assert "error_kind" not in by_name
    assert seen == set(rows)
    assert sum(not r["category_correct"] for r in rows.values()) == 2  # the broken and the wrong tray


def test_the_dataset_is_each_runs_input(
    tmp_path: Path, tracking: str, gemini_server: FakeGemini, fake_api_key: str
) -> None:
    client, run, _ = sweep(tmp_path, tracking, gemini_server)
    for run_id in (run.info.run_id, run.data.tags["mlflow.parentRunId"]):
        [given] = client.get_run(run_id).inputs.dataset_inputs
        assert given.dataset.name == "sample:test"
        assert given.dataset.digest == run.data.params["dataset_sha256"][:16]
        assert str(ROOT / "data" / "sample") in given.dataset.source
        assert {t.key: t.value for t in given.tags}["mlflow.data.context"] == "test"


def test_trace_examples_false_writes_no_traces(
    tmp_path: Path, tracking: str, gemini_server: FakeGemini, fake_api_key: str
) -> None:
    client, run, _ = sweep(tmp_path, tracking, gemini_server, extra="trace_examples: false\n")
    assert mlflow.search_traces(locations=[run.info.experiment_id], return_type="list") == []
    assert client.get_run(run.data.tags["mlflow.parentRunId"]).data.params["trace_examples"] == "False"
    assert len(predictions(client, run.info.run_id)) == N  # the per-example table is still there


def test_the_reference_trays_are_in_every_trace_and_stored_once(
    tmp_path: Path, tracking: str, gemini_server: FakeGemini, fake_api_key: str
) -> None:
    """A prompt that shows graded reference trays: each trace names them in order, with their grades,
    as attachments the trace view renders — one stored copy per run, not one per trace."""
    from mlflow.tracing.attachments import Attachment
    from mlflow.tracing.utils.artifact_utils import get_artifact_uri_for_trace

    from promptgrade.sweep import Sweep

    path = tmp_path / "exp.yaml"
    write_experiment(path, name="shown", base_url=gemini_server.base_url, n=N, prompts="meal_tray_anchors@2")
    [candidate] = Sweep(path).prompt_candidates
    _, run = swept(path, tracking, "shown")
    traces = mlflow.search_traces(
        locations=[run.info.experiment_id], run_id=run.info.run_id, return_type="list"
    )
    assert len(traces) == N

    shown = [trace.data.spans[0].inputs["references"] for trace in traces]
    assert all(each == shown[0] for each in shown)  # the same references, named the same way, everywhere
    assert [(r["id"], r["grade"]) for r in shown[0]] == [(r.id, r.grade) for r in candidate.references]
    refs = [Attachment.parse_ref(r["image"]) for r in shown[0]]
    assert all(ref is not None and ref["content_type"] == "image/jpeg" for ref in refs)
    [holder] = {ref["trace_id"] for ref in refs if ref is not None}
    assert holder in {trace.info.trace_id for trace in traces}  # stored under one of the run's traces

    def attachments(trace_id: str) -> dict[str, bytes]:
        folder = Path(urllib.parse.urlparse(get_artifact_uri_for_trace(mlflow.get_trace(trace_id).info)).path)
        return {f.name: f.read_bytes() for f in (folder / "attachments").iterdir()}

    stored = attachments(holder)
    for ref in refs:
        assert ref is not None
        image = stored[str(ref["attachment_id"])]
        assert image.startswith(b"\xff\xd8\xff") and len(image) == ref["size"] <= 40_000
    # every other trace stores its tray only; the holder its tray and the five references
    counts = sorted(len(attachments(trace.info.trace_id)) for trace in traces)
    assert counts == [1] * (N - 1) + [1 + len(refs)]


def _three_trays(tracking: str, name: str, artifacts: Path) -> tuple[Any, Any, list[Any]]:
    """A client, the context of a run in its own experiment (artifacts under ``artifacts``), and three
    traced trays."""
    return _three_trays_at(tracking, name, artifacts.as_uri())


def _three_trays_at(tracking: str, name: str, location: str) -> tuple[Any, Any, list[Any]]:
    """``_three_trays`` with the experiment's artifact location as a URI of any scheme."""
    import time
    from io import BytesIO

    from PIL import Image

    from promptgrade.scoring import Outcome
    from promptgrade.tracking.payloads import ExampleTrace
    from promptgrade.tracking.traces import TraceContext

    client = MlflowClient(tracking_uri=tracking)
    experiment_id = client.create_experiment(name, artifact_location=location)
    run_id = client.create_run(experiment_id).info.run_id
    buffer = BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(buffer, format="JPEG")
    items = [
        ExampleTrace(
            Outcome(example_id=f"tray-{i}", status="ok", true_categories=("soup",), true_grade=40.0),
            ended_ns=time.time_ns(),
            image=buffer.getvalue(),
            image_mime="image/jpeg",
        )
        for i in range(3)
    ]
    context = TraceContext(experiment_id, run_id, "candidate", "prompt", "model", {}, {})
    return client, context, items


def test_a_resumed_run_stores_its_reference_trays_under_a_trace_written_before(
    tracking: str, tmp_path: Path
) -> None:
    """A sweep resumed after its run's traces were written: the first batch's holder already exists,
    complete, so its traces are left alone and the reference trays are stored under it all the same."""
    from io import BytesIO

    from mlflow.tracing.attachments import Attachment
    from mlflow.tracing.utils.artifact_utils import get_artifact_uri_for_trace
    from PIL import Image

    from promptgrade.tracking.traces import TraceWriter, reference_images

    mlflow.set_tracking_uri(tracking)
    _, context, items = _three_trays(tracking, "resumed", tmp_path / "artifacts")
    context = dataclasses.replace(context, references=("ref-a",))
    experiment_id, run_id = context.experiment_id, context.run_id
    buffer = BytesIO()
    Image.new("RGB", (600, 400), (200, 120, 40)).save(buffer, format="PNG")
    png = buffer.getvalue()
    writer = TraceWriter(tracking)
    assert len(writer.write(context, items)) == 3  # the first sweep: traces without references

    images = reference_images(run_id, "tray-0", [("ref-a", 25.0, png, "image/png")])
    resumed = dataclasses.replace(context, reference_images=images)
    assert len(writer.write(resumed, items)) == 3  # every trace exists: none written twice
    assert len(mlflow.search_traces(locations=[experiment_id], run_id=run_id, return_type="list")) == 3
    [(reference_id, grade, ref)] = images.shown
    assert (reference_id, grade) == ("ref-a", 25.0)
    parsed = Attachment.parse_ref(ref)
    assert parsed is not None and parsed["trace_id"] == images.holder
    folder = Path(
        urllib.parse.urlparse(get_artifact_uri_for_trace(mlflow.get_trace(images.holder).info)).path
    )
    stored = (folder / "attachments" / str(parsed["attachment_id"])).read_bytes()
    assert (
        stored.startswith(b"\xff\xd8\xff") and max(Image.open(BytesIO(stored)).size) <= 384
    )  # a JPEG thumbnail


def _trays_stored(tracking: str, context: Any) -> dict[str, tuple[int, bool]]:
    """Each of the run's traces by example: (its assessments — two expectations, two feedbacks here —
    and whether its tray's file is stored)."""
    from mlflow.tracing.attachments import Attachment
    from mlflow.tracing.utils.artifact_utils import get_artifact_uri_for_trace

    mlflow.set_tracking_uri(tracking)
    found = {}
    for trace in mlflow.search_traces(
        locations=[context.experiment_id], run_id=context.run_id, return_type="list"
    ):
        parsed = Attachment.parse_ref(trace.data.spans[0].inputs["tray"])
        assert parsed is not None
        folder = Path(urllib.parse.urlparse(get_artifact_uri_for_trace(trace.info)).path)
        stored = (folder / "attachments" / str(parsed["attachment_id"])).is_file()
        found[trace.info.tags["example_id"]] = (len(trace.info.assessments), stored)
    return found


def test_a_batch_of_traces_is_stored_whole_or_not_at_all(tracking: str, tmp_path: Path) -> None:
    """A batch whose third tray cannot be stored (its trace's folder is taken by a file) leaves no trace
    behind — not two traces whose retry would find them complete and never store their trays — and the
    same batch written again once the folder is free stores all three, each with its tray."""
    from promptgrade.tracking.traces import TraceWriter, trace_id_for

    artifacts = tmp_path / "artifacts"
    _, context, items = _three_trays(tracking, "whole", artifacts)
    blocker = artifacts / "traces" / trace_id_for(context.run_id, "tray-2")
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")
    writer = TraceWriter(tracking)
    with pytest.raises(NotADirectoryError):
        writer.write(context, items)
    assert _trays_stored(tracking, context) == {}

    blocker.unlink()
    assert len(writer.write(context, items)) == 3
    assert _trays_stored(tracking, context) == {f"tray-{i}": (4, True) for i in range(3)}


def test_a_trace_another_writer_stored_meanwhile_is_kept_once(tracking: str, tmp_path: Path) -> None:
    """Two writers on one store: the second stores tray-1's trace after the first looked for existing
    traces and before it wrote. The first writer's batch is written again, call by call, and every trace
    is there once — tray-1's kept as the other writer stored it, no assessment doubled, every tray stored."""
    from promptgrade.tracking.traces import TraceWriter

    _, context, items = _three_trays(tracking, "meanwhile", tmp_path / "artifacts")
    first, other = TraceWriter(tracking), TraceWriter(tracking)
    store = first.client.store
    looked = store.batch_get_trace_infos
    lookups = []

    def look_then_let_the_other_write(trace_ids: list[str]) -> Any:
        found = looked(trace_ids)
        lookups.append(len(found))
        if len(lookups) == 1:
            other.write(context, items[1:2])  # between the first writer's look and its write
        return found

    store.batch_get_trace_infos = look_then_let_the_other_write
    assert len(first.write(context, items)) == 3
    # the first look, the other writer's, then the first writer's again: its shared transaction was
    # abandoned whole and the batch looked up anew
    assert lookups == [0, 0, 1]
    assert _trays_stored(tracking, context) == {f"tray-{i}": (4, True) for i in range(3)}


def _written_with_statements(writer: Any, context: Any, items: list[Any]) -> tuple[list[str], list[Any]]:
    """``writer.write(context, items)``, and every SQL statement it sent: (text, whitespace folded; many)."""
    from sqlalchemy import event

    statements: list[tuple[str, bool]] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, _: Any, many: bool) -> None:
        statements.append((" ".join(statement.split()), many))

    engine = writer.client.store.engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        ids = writer.write(context, items)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    return ids, statements


def test_a_batch_sends_its_trace_infos_to_the_database_together(tracking: str, tmp_path: Path) -> None:
    """What keeps a trace's write cheap on a database store: the batch's infos, tags, metadata and
    assessments go out as one multi-row INSERT per table, not a flush per trace (what MLflow's
    ``start_trace`` does alone) — and the traces read back whole."""

    from promptgrade.tracking.traces import TraceWriter

    _, context, items = _three_trays(tracking, "together", tmp_path / "artifacts")
    _, statements = _written_with_statements(TraceWriter(tracking), context, items)
    inserts = [(s.split()[2], many) for s, many in statements if s.startswith("INSERT INTO")]
    # what start_trace makes, before log_spans writes the spans (and its own rows after them)
    infos = inserts[: inserts.index(("spans", False))]
    tables = ("trace_info", "trace_tags", "trace_request_metadata", "assessments")
    assert sorted(infos) == [(table, True) for table in sorted(tables)], inserts
    assert _trays_stored(tracking, context) == {f"tray-{i}": (4, True) for i in range(3)}


def test_log_spans_finds_the_tags_the_batch_sent_without_reading_them_back(
    tracking: str, tmp_path: Path
) -> None:
    """Within a batch's transaction ``start_trace`` already sends each trace's spans-location tag, and
    ``log_spans`` finds it in the session instead of reading trace_tags back once per trace; the traces
    read back with their spans and the tag, and a resumed write finds them complete (nothing doubled)."""
    from mlflow.tracing.constant import SpansLocation, TraceTagKey

    from promptgrade.tracking.traces import TraceWriter

    client, context, items = _three_trays(tracking, "tags-sent", tmp_path / "artifacts")
    writer = TraceWriter(tracking)
    ids, statements = _written_with_statements(writer, context, items)
    tag_reads = [s for s, _ in statements if s.startswith("SELECT") and "FROM trace_tags" in s]
    assert tag_reads == [], tag_reads
    for trace_id in ids:
        trace = client.get_trace(trace_id)
        assert trace.info.tags[TraceTagKey.SPANS_LOCATION] == SpansLocation.TRACKING_STORE.value
        assert [span.name for span in trace.data.spans] == [context.name]
    assert writer.write(context, items) == ids
    assert writer.count(context.experiment_id, context.run_id) == 3
    assert _trays_stored(tracking, context) == {f"tray-{i}": (4, True) for i in range(3)}


def test_the_traces_of_a_run_are_counted_in_the_store(tracking: str, tmp_path: Path) -> None:
    """The count a candidate is checked against is the store's own: per run, and a trace deleted from
    the store is no longer counted (what reading every trace back used to give, without the read)."""
    from promptgrade.tracking.traces import TraceWriter, trace_id_for

    client, context, items = _three_trays(tracking, "counted", tmp_path / "artifacts")
    other = dataclasses.replace(context, run_id=client.create_run(context.experiment_id).info.run_id)
    writer = TraceWriter(tracking)
    writer.write(context, items)
    writer.write(other, items[:2])
    assert writer.count(context.experiment_id, context.run_id) == 3
    assert writer.count(context.experiment_id, other.run_id) == 2

    client.delete_traces(context.experiment_id, trace_ids=[trace_id_for(context.run_id, "tray-0")])
    assert writer.count(context.experiment_id, context.run_id) == 2
    assert writer.count(context.experiment_id, context.run_id) == writer._count_read_back(
        context.experiment_id, context.run_id
    )


def test_a_repository_with_its_own_attachment_upload_gets_it_called(
    tracking: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trays are staged per batch and handed to ``log_artifact`` only where a repository keeps MLflow's
    default upload; one with an upload of its own (as Databricks' has) is called through it, per tray."""
    from mlflow.store.artifact.artifact_repository_registry import _artifact_repository_registry
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    from promptgrade.tracking.traces import TraceWriter

    uploads: list[str] = []

    class OwnUpload(LocalArtifactRepository):
        def __init__(self, artifact_uri: str, *args: Any, **kwargs: Any) -> None:
            super().__init__(artifact_uri.replace("own-upload:", "file:", 1), *args, **kwargs)

        def upload_attachment(self, attachment_id: str, content_bytes: bytes) -> None:
            uploads.append(attachment_id)
            super().upload_attachment(attachment_id, content_bytes)

    # MLflow's plugin registry, as an artifact-repository plugin registers its scheme
    monkeypatch.setitem(_artifact_repository_registry._registry, "own-upload", OwnUpload)
    location = (tmp_path / "artifacts").as_uri().replace("file:", "own-upload:", 1)
    _, context, items = _three_trays_at(tracking, "own-upload", location)

    assert len(TraceWriter(tracking).write(context, items)) == 3

    assert len(uploads) == 3
    assert {example: stored for example, (_, stored) in _trays_stored(tracking, context).items()} == {
        "tray-0": True,
        "tray-1": True,
        "tray-2": True,
    }


def test_an_attachment_id_mlflow_refuses_is_refused_before_it_is_staged(
    tracking: str, tmp_path: Path
) -> None:
    """Staging writes a file named by the id: an id that is not MLflow's canonical UUID (a path that
    climbs out of the staging folder) still meets MLflow's own check, and nothing is written."""
    from mlflow.exceptions import MlflowException

    from promptgrade.tracking.traces import TraceWriter

    client, context, items = _three_trays(tracking, "refused-ids", tmp_path / "artifacts")
    writer = TraceWriter(tracking)
    [trace_id, *_] = writer.write(context, items)
    info = client.get_trace(trace_id).info
    staging = tmp_path / "staging" / "batch"
    staging.mkdir(parents=True)

    for refused in ("../escaped", "..", "not-a-uuid"):
        with pytest.raises(MlflowException, match="must be a valid UUID"):
            writer._store_files(info, [(refused, b"tray")], staging)

    assert not (tmp_path / "staging" / "escaped").exists()
    assert list(staging.iterdir()) == []
