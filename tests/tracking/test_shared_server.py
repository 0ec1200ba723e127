"""A team's tracking server, slow or lost: given a real ``mlflow server`` behind a proxy that delays
every answer, when I sweep, then each candidate's latency is the model's, not the store's; and given
the server lost at three points of a sweep — while a candidate's metrics are logged, while its traces
are written, between two candidates — the sweep stops after one write's retries (not a round of
retries per write still queued), and when it comes back and I run the same command, then every run
holds one row, one trace and one of each assessment per example, every run is finished, and no answer
was bought twice beyond the calls in flight.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from helpers.mlflow_server import MlflowServer
from helpers.scripted_sweeps import planted_answers, write_experiment
from helpers.store_proxy import StoreProxy, Trigger
from promptgrade.cli import app
from promptgrade.testing.gemini_server import FakeGemini
from promptgrade.tracking.writer import ATTEMPTS, MLFLOW_HTTP

RUNNER = CliRunner(env={"COLUMNS": "240"})
N = 8
CONCURRENCY = 4  # helpers.scripted_sweeps' experiments

pytestmark = pytest.mark.traces


def candidate_runs(uri: str, name: str) -> list[Any]:
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    return client.search_runs([experiment.experiment_id], "tags.`promptgrade.kind` = 'candidate'")


def test_a_slow_store_never_slows_the_requests(
    tmp_path: Path,
    shared_mlflow_server: MlflowServer,
    gemini_server: FakeGemini,
    fake_api_key: str,
) -> None:
    with StoreProxy(shared_mlflow_server.uri, delay_s=0.2) as proxy:
        path = tmp_path / "exp.yaml"
        examples = write_experiment(path, name="slow-store", base_url=gemini_server.base_url, n=N)
        gemini_server.default_answer = planted_answers(examples, {e.id for e in examples}, set())
        gemini_server.latency_s = 0.1

        result = RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", proxy.uri])

        assert result.exit_code == 0, result.output
        assert gemini_server.calls == 2 * N  # nothing bought twice
        runs = candidate_runs(proxy.uri, "slow-store")
        assert len(runs) == 2
        for run in runs:  # the model answers in 100 ms; every store request takes 200 ms more
            assert run.data.metrics["latency_p95_ms"] < 100 + 250, run.data.metrics


def lose_while_logging_metrics(method: str, path: str, body: bytes) -> bool:
    return path.endswith("/runs/log-batch") and b"category_accuracy" in body


def lose_while_writing_traces(method: str, path: str, body: bytes) -> bool:
    return method == "POST" and path.rstrip("/").endswith("/mlflow/traces")


def lose_between_candidates() -> Trigger:
    """The request after the first candidate run is closed."""
    closed: list[bool] = []

    def trigger(method: str, path: str, body: bytes) -> bool:
        if closed:
            return True
        if path.endswith("/runs/update") and b"FINISHED" in body:
            closed.append(True)
        return False

    return trigger


@pytest.mark.parametrize(
    "point",
    ["while-logging-metrics", "while-writing-traces", "between-candidates"],
)
def test_a_store_lost_and_back_resumes_without_a_duplicate(
    tmp_path: Path,
    shared_mlflow_server: MlflowServer,
    gemini_server: FakeGemini,
    fake_api_key: str,
    point: str,
) -> None:
    triggers: dict[str, Trigger] = {
        "while-logging-metrics": lose_while_logging_metrics,
        "while-writing-traces": lose_while_writing_traces,
        "between-candidates": lose_between_candidates(),
    }
    name = f"lost-{point}"
    with StoreProxy(shared_mlflow_server.uri) as proxy:
        path = tmp_path / "exp.yaml"
        examples = write_experiment(path, name=name, base_url=gemini_server.base_url, n=N)
        gemini_server.default_answer = planted_answers(examples, {e.id for e in examples}, set())
        proxy.lose_at = triggers[point]

        lost = RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", proxy.uri])

        assert proxy.lost.is_set(), "the fault never happened"
        assert lost.exit_code == 3, lost.output
        assert "Traceback" not in lost.output and proxy.uri in " ".join(lost.output.split())
        # one write's retries reached the lost store, not one round per write queued behind it
        assert proxy.refused <= ATTEMPTS * (1 + int(MLFLOW_HTTP["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])), (
            proxy.refused
        )
        proxy.back()
        resumed = RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", proxy.uri])

        assert resumed.exit_code == 0, resumed.output
        assert gemini_server.calls <= 2 * N + CONCURRENCY
        client = MlflowClient(tracking_uri=proxy.uri)
        experiment = client.get_experiment_by_name(name)
        sweeps = client.search_runs([experiment.experiment_id], "tags.`promptgrade.kind` = 'sweep'")
        assert [s.info.status for s in sweeps] == ["FINISHED"]
        runs = candidate_runs(proxy.uri, name)
        assert len(runs) == 2
        mlflow.set_tracking_uri(proxy.uri)
        for run in runs:
            assert run.info.status == "FINISHED"
            table = json.loads(
                Path(client.download_artifacts(run.info.run_id, "predictions.json")).read_text()
            )
            assert len(table["data"]) == N
            traces = mlflow.search_traces(
                locations=[experiment.experiment_id], run_id=run.info.run_id, return_type="list"
            )
            assert sorted(t.info.tags["example_id"] for t in traces) == sorted(e.id for e in examples)
            names = Counter(a.name for t in traces for a in t.info.assessments)
            assert names["category_correct"] == names["categories"] == N  # one of each, per example
