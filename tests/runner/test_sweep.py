"""The user's story: given prompts and a labelled dataset, when I sweep, then MLflow shows each candidate.

Everything real except the model: the real google-genai client talks HTTP to the local Gemini-REST
server, and runs land in a real MLflow store in a temp dir.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from helpers.e2e import EXPERIMENT, Truth, script_answers, truth_of, write_experiment
from helpers.sweeps import candidate_runs
from promptgrade.cli import app
from promptgrade.testing.gemini_server import FakeGemini, Fault, RequestInfo

ROOT = Path(__file__).resolve().parents[2]
RUNNER = CliRunner(env={"COLUMNS": "200"})  # wide enough that tables are not truncated
N = 10  # examples per candidate: enough to see every behaviour, small enough to be quick


@pytest.fixture
def experiment_file(tmp_path: Path, gemini_server: FakeGemini) -> Path:
    return write_experiment(tmp_path / "exp.yaml", gemini_server.base_url, n=N)


@pytest.fixture
def truth(experiment_file: Path) -> Truth:
    """image sha256 → (example id, true categories, true grade), as the sweep will send them."""
    return truth_of(experiment_file)


def test_sweep_logs_one_nested_run_per_candidate_with_metrics_params_and_artifacts(
    experiment_file: Path, tracking: str, gemini_server: FakeGemini, fake_api_key: str, truth: dict
) -> None:
    right_ids = script_answers(gemini_server, truth)
    result = RUNNER.invoke(app, ["sweep", str(experiment_file), "--tracking-uri", tracking])
    assert result.exit_code == 0, result.output
    assert "meal_tray_json@v1" in result.output and "★" in result.output
    assert gemini_server.calls == 2 * N

    client = MlflowClient(tracking_uri=tracking)
    exp = client.get_experiment_by_name("e2e-prompts")
    sweeps = client.search_runs([exp.experiment_id], "tags.`promptgrade.kind` = 'sweep'")
    assert len(sweeps) == 1
    runs = candidate_runs(tracking, "e2e-prompts")
    assert len(runs) == 2
    for run in runs:
        assert run.data.tags["mlflow.parentRunId"] == sweeps[0].info.run_id
        params = run.data.params
        assert params["model"] == "gemini-2.5-flash" and params["provider"] == "gemini"
        assert params["split"] == "test" and len(params["dataset_sha256"]) == 64
        assert params["prompt_name"] in {"meal_tray_freetext", "meal_tray_json"}
        assert params["prompt_version"] == "1" and len(params["prompt_sha256"]) == 64
        assert params["temperature"] == "0.0"
        metrics = run.data.metrics
        # Half the trays were answered right, in both answer formats: the parser read both.
        assert metrics["category_accuracy"] == pytest.approx(len(right_ids) / N)
        assert (
            metrics["category_accuracy_ci_low"]
            < metrics["category_accuracy"]
            < metrics["category_accuracy_ci_high"]
        )
        assert metrics["parse_failure_rate"] == 0 and metrics["error_rate"] == 0
        assert metrics["n_examples"] == N
        assert metrics["input_tokens"] > 258 * N
        assert metrics["cost_usd"] > 0
        for name in (
            "category_top1_accuracy",
            "grade_accuracy",
            "grade_mae",
            "latency_p50_ms",
            "latency_p95_ms",
        ):
            assert name in metrics

        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"predictions.json", "prompt", "metrics.json", "candidate.json"} <= artifacts
        table = json.loads(Path(client.download_artifacts(run.info.run_id, "predictions.json")).read_text())
        rows = dict(zip(table["columns"], zip(*table["data"], strict=True), strict=True))
        assert len(rows["example_id"]) == N
        assert {
            i for i, ok in zip(rows["example_id"], rows["category_correct"], strict=True) if ok
        } == right_ids
        rendered = Path(client.download_artifacts(run.info.run_id, "prompt/rendered.txt")).read_text()
        assert rendered in {r.prompt for r in gemini_server.requests}

        # The prompt version is in the registry, tagged with its sha256, and linked to this run.
        uri = run.data.tags["registry_prompt_uri"]
        name, version = uri.removeprefix("prompts:/").split("/")
        registered = client.get_prompt_version(name, version)
        assert registered.tags["promptgrade.sha256"] == params["prompt_sha256"]
        # MLflow records the link on the run (what its UI's "Prompts" column reads).
        linked = json.loads(run.data.tags.get("mlflow.linkedPrompts", "[]"))
        assert linked == [{"name": name, "version": version}]


def test_structured_output_sends_the_task_schema(
    experiment_file: Path, tracking: str, gemini_server: FakeGemini, fake_api_key: str, truth: dict
) -> None:
    script_answers(gemini_server, truth)
    assert RUNNER.invoke(app, ["sweep", str(experiment_file), "--tracking-uri", tracking]).exit_code == 0
    by_json = [r for r in gemini_server.requests if r.has_response_schema]
    assert len(by_json) == N  # only the JSON prompt asks for structured output
    schema = by_json[0].response_schema or {}
    assert "snack" in json.dumps(schema) and "food_remaining_pct" in json.dumps(schema)
    assert all(r.generation_config.get("temperature") == 0.0 for r in gemini_server.requests)


def test_per_example_faults_are_recorded_and_the_sweep_continues(
    experiment_file: Path, tracking: str, gemini_server: FakeGemini, fake_api_key: str, truth: dict
) -> None:
    script_answers(gemini_server, truth)
    broken_sha, (broken_id, _, _) = sorted(truth.items(), key=lambda kv: kv[1][0])[0]
    garbled_sha, (garbled_id, _, _) = sorted(truth.items(), key=lambda kv: kv[1][0])[1]
    gemini_server.enqueue_fault(Fault.server_error(503), image_sha256=broken_sha, times=100)
    gemini_server.answer_for_image(garbled_sha, "I am not sure what this is.")
    gemini_server.enqueue_fault(Fault.rate_limited(retry_delay="0.1s"), times=1)
    result = RUNNER.invoke(app, ["sweep", str(experiment_file), "--tracking-uri", tracking])
    assert result.exit_code == 0, result.output
    for run in candidate_runs(tracking, "e2e-prompts"):
        metrics = run.data.metrics
        assert metrics["n_examples"] == N
        assert metrics["error_rate"] == pytest.approx(1 / N)
        assert metrics["parse_failure_rate"] == pytest.approx(1 / N)
        table = json.loads(
            Path(
                MlflowClient(tracking_uri=tracking).download_artifacts(run.info.run_id, "predictions.json")
            ).read_text()
        )
        rows = {row[0]: dict(zip(table["columns"], row, strict=True)) for row in table["data"]}
        assert rows[broken_id]["status"] == "error" and rows[broken_id]["error_kind"] == "server_error"
        assert rows[garbled_id]["status"] == "parse_failure"
        assert rows[broken_id]["category_correct"] is False
    # 503 retried (max_retries=2 → 3 attempts per candidate); the 429 retried after its RetryInfo delay.
    broken_calls = [r for r in gemini_server.requests if r.image_sha256 == broken_sha]
    assert len(broken_calls) == 2 * 3


def test_dry_run_validates_and_estimates_without_calling_the_model(
    experiment_file: Path, tracking: str, gemini_server: FakeGemini, fake_api_key: str
) -> None:
    result = RUNNER.invoke(app, ["sweep", str(experiment_file), "--dry-run", "--tracking-uri", tracking])
    assert result.exit_code == 0, result.output
    assert f"{2 * N} calls" in result.output
    assert "input tokens" in result.output and "$" in result.output
    assert gemini_server.calls == 0
    runs = MlflowClient(tracking_uri=tracking).search_runs(
        [e.experiment_id for e in MlflowClient(tracking_uri=tracking).search_experiments()]
    )
    assert runs == []


def test_missing_credentials_is_one_clear_line(
    experiment_file: Path, tracking: str, monkeypatch: pytest.MonkeyPatch, gemini_server: FakeGemini
) -> None:
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"):
        monkeypatch.delenv(name, raising=False)
    result = RUNNER.invoke(app, ["sweep", str(experiment_file), "--tracking-uri", tracking])
    assert result.exit_code == 2
    assert "GEMINI_API_KEY" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert gemini_server.calls == 0


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("concurrency: 4", "concurency: 4"), r"exp\.yaml:\d+: concurency: unknown field"),
        (("meal_tray_json@1", "meal_tray_json@7"), r"exp\.yaml:\d+: prompts\[1\]: .*no version v7"),
        (("path: {root}/data/sample", "path: {root}/data/nowhere"), r"nowhere"),
    ],
)
def test_bad_experiment_is_one_line_with_location_and_no_call(
    tmp_path: Path, gemini_server: FakeGemini, fake_api_key: str, edit: tuple[str, str], expected: str
) -> None:
    text = EXPERIMENT.replace(*edit).format(root=ROOT, base_url=gemini_server.base_url, n=N)
    path = tmp_path / "exp.yaml"
    path.write_text(text, encoding="utf-8")
    result = RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    import re

    assert re.search(expected, " ".join(result.output.split())), result.output
    assert gemini_server.calls == 0


def test_compare_shows_the_latest_sweep_best_first(
    experiment_file: Path, tracking: str, gemini_server: FakeGemini, fake_api_key: str, truth: dict
) -> None:
    script_answers(gemini_server, truth)
    # Make the free-text prompt worse: every text answer for the right half turns unparseable.
    original = gemini_server.default_answer

    def worse(request: RequestInfo) -> str:
        return original(request) if request.has_response_schema else "no idea"

    gemini_server.default_answer = worse
    assert RUNNER.invoke(app, ["sweep", str(experiment_file), "--tracking-uri", tracking]).exit_code == 0
    result = RUNNER.invoke(app, ["compare", str(experiment_file), "--tracking-uri", tracking])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "meal_tray" in line]
    assert "★" in lines[0] and "meal_tray_json" in lines[0]
    assert "meal_tray_freetext" in lines[1]


def test_sample_experiment_copy_runs_from_another_directory(
    tmp_path: Path, gemini_server: FakeGemini, fake_api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative paths resolve against the experiment file, not the working directory."""
    shutil.copytree(ROOT / "experiments", tmp_path / "experiments")
    shutil.copytree(ROOT / "prompts", tmp_path / "prompts")
    (tmp_path / "data").mkdir()
    shutil.copytree(ROOT / "data/sample", tmp_path / "data/sample")
    monkeypatch.chdir(tmp_path / "data")
    result = RUNNER.invoke(app, ["sweep", "../experiments/meal_tray.yaml", "--dry-run", "--limit", "5"])
    assert result.exit_code == 0, result.output
    assert "15 calls" in result.output
