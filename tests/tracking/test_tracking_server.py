"""Given a team's ``mlflow server`` (a real process, sqlite backend), when I sweep with traces on (the
default), then runs, tables and traces — each with the tray attached as an image — land on the server;
and when the server is lost mid-sweep (SIGKILL), the sweep says so in one line and exits 3, the
answers it bought stay in the cache, and once the server is back the same command finishes the
sweep without buying any answer twice and without a second run or trace of anything.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from helpers import sweeps
from helpers.mlflow_server import MlflowServer
from helpers.scripted_sweeps import TWO_PROMPTS, planted_answers, write_experiment
from promptgrade.testing.gemini_server import FakeGemini
from promptgrade.tracking import writer

N = 24

pytestmark = pytest.mark.traces


def sweep(path: Path, uri: str) -> Any:
    return sweeps.sweep(path, uri, columns=240)


def candidate_runs(client: MlflowClient, name: str) -> list[Any]:
    experiment = client.get_experiment_by_name(name)
    return client.search_runs([experiment.experiment_id], "tags.`promptgrade.kind` = 'candidate'")


def predictions(client: MlflowClient, run_id: str) -> list[list[Any]]:
    table = json.loads(Path(client.download_artifacts(run_id, "predictions.json")).read_text())
    return list(table["data"])


def traces_of(run: Any) -> list[Any]:
    return mlflow.search_traces(
        locations=[run.info.experiment_id], run_id=run.info.run_id, return_type="list"
    )


@pytest.fixture
def trace_workers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The writer hands trace batches to its worker processes after its first batch, as it does in a
    sweep of 512 trays or more: a writer started with the variable set, ended after the test so that no
    other test's sweep inherits it."""
    monkeypatch.setenv("PROMPTGRADE_TRACE_WORKERS_AFTER", "1")
    writer.shutdown()
    yield
    writer.shutdown()


def test_a_sweep_on_a_tracking_server_then_the_server_lost_and_back(
    trace_workers: None,
    tmp_path: Path,
    mlflow_server: MlflowServer,
    gemini_server: FakeGemini,
    fake_api_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uri = mlflow_server.uri
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)

    # -- a healthy server: everything a sqlite store gets, over HTTP ------------------------------
    path = tmp_path / "ok.yaml"
    # a third candidate shows five reference trays (the writer hands every batch after its first to its
    # trace workers, so at least two of the three runs' traces, references and all, are theirs)
    examples = write_experiment(
        path,
        name="on-a-server",
        base_url=gemini_server.base_url,
        n=N,
        prompts=f"{TWO_PROMPTS}, meal_tray_anchors@2",
    )
    gemini_server.default_answer = planted_answers(examples, {e.id for e in examples}, set())
    result = sweep(path, uri)
    assert result.exit_code == 0, result.output
    runs = candidate_runs(client, "on-a-server")
    assert len(runs) == 3
    for run in runs:
        assert run.info.status == "FINISHED"
        assert len(predictions(client, run.info.run_id)) == N
        traces = traces_of(run)
        assert len(traces) == N
    trace = mlflow.get_trace(traces[0].info.trace_id)
    root = trace.data.spans[0]
    tray = root.inputs["tray"]
    assert tray.startswith("mlflow-attachment://")
    attachment = urllib.parse.urlparse(tray)
    query = urllib.parse.urlencode({"request_id": trace.info.trace_id, "path": attachment.hostname})
    with urllib.request.urlopen(f"{uri}/ajax-api/3.0/mlflow/get-trace-artifact?{query}") as response:
        image = response.read()
    assert image.startswith(b"\xff\xd8\xff") and len(image) <= 40_000  # the tray, as a small JPEG
    # the reference trays, fetched as the trace view fetches them: from the trace their refs name
    [shown] = [r for r in runs if r.data.params["prompt_name"] == "meal_tray_anchors"]
    references = traces_of(shown)[0].data.spans[0].inputs["references"]
    assert [r["grade"] for r in references] == [0, 25, 50, 75, 100]
    for reference in references:
        ref = urllib.parse.urlparse(reference["image"])
        holder = urllib.parse.parse_qs(ref.query)["trace_id"][0]
        query = urllib.parse.urlencode({"request_id": holder, "path": ref.hostname})
        with urllib.request.urlopen(f"{uri}/ajax-api/3.0/mlflow/get-trace-artifact?{query}") as response:
            assert response.read().startswith(b"\xff\xd8\xff")
    # the span lasts as long as the model call, not as long as the logging
    table = json.loads(Path(client.download_artifacts(runs[-1].info.run_id, "predictions.json")).read_text())
    rows = {row[0]: dict(zip(table["columns"], row, strict=True)) for row in table["data"]}
    latency_ms = rows[trace.info.tags["example_id"]]["latency_ms"]
    assert (root.end_time_ns - root.start_time_ns) / 1e6 == pytest.approx(latency_ms, abs=1.0)

    # -- the server killed mid-sweep ----------------------------------------------------------------
    monkeypatch.setenv("PROMPTGRADE_CACHE", str(tmp_path / "second-cache.sqlite"))  # buy them all again
    path = tmp_path / "lost.yaml"
    examples = write_experiment(path, name="server-lost", base_url=gemini_server.base_url, n=N)
    gemini_server.default_answer = planted_answers(examples, {e.id for e in examples}, set())
    gemini_server.latency_s = 0.15
    calls_before = gemini_server.calls
    killed = threading.Event()

    def kill_after_some_calls() -> None:
        deadline = time.monotonic() + 60
        while gemini_server.calls - calls_before < N // 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        mlflow_server.kill()
        killed.set()

    killer = threading.Thread(target=kill_after_some_calls, daemon=True)
    killer.start()
    started = time.monotonic()
    lost = sweep(path, uri)
    killer.join(timeout=60)
    assert killed.is_set()
    assert lost.exit_code == 3, lost.output
    assert "Traceback" not in lost.output
    stopped = [line for line in lost.output.splitlines() if line.startswith("sweep stopped:")]
    assert len(stopped) == 1 and uri in " ".join(lost.output.split()), lost.output
    assert time.monotonic() - started < 120  # seconds, not MLflow's minutes of HTTP retries
    bought = gemini_server.calls - calls_before
    assert bought > N // 2

    # -- the server back: the same command finishes it ---------------------------------------------
    mlflow_server.start()
    gemini_server.latency_s = 0.0
    resumed = sweep(path, uri)
    assert resumed.exit_code == 0, resumed.output
    assert gemini_server.calls - calls_before == 2 * N  # each answer bought exactly once, in all
    runs = candidate_runs(client, "server-lost")
    assert len(runs) == 2  # the runs left RUNNING were reused, not duplicated
    experiment = client.get_experiment_by_name("server-lost")
    sweeps = client.search_runs([experiment.experiment_id], "tags.`promptgrade.kind` = 'sweep'")
    assert [s.info.status for s in sweeps] == ["FINISHED"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert len(predictions(client, run.info.run_id)) == N  # written whole, never appended to
        traces = traces_of(run)
        assert len(traces) == N  # one per example: nothing written twice
        assert {t.info.tags["example_id"] for t in traces} == {e.id for e in examples}
        for found in traces:
            names = [a.name for a in found.info.assessments]
            assert len(names) == len(set(names))  # no assessment twice on a trace
