"""Given a finished sweep, then each candidate run has its four plots and the sweep run its comparison,
as PNG image artifacts a person can open in the MLflow UI (valid PNGs of non-trivial size)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Run
from typer.testing import CliRunner

from promptgrade.cli import app
from promptgrade.testing.gemini_server import FakeGemini, RequestInfo

pytestmark = pytest.mark.plots

ROOT = Path(__file__).resolve().parents[2]
RUNNER = CliRunner(env={"COLUMNS": "200"})
EXPERIMENT = """\
name: plots
task: {root}/experiments/tasks/meal_tray.yaml
prompts_dir: {root}/prompts
base_url: {base_url}
dataset: {{kind: folder, path: {root}/data/sample, split: test, limit: 16, image_max_side: 256}}
prompts: [meal_tray_freetext@1, meal_tray_json@1]
models: [{{model: gemini-2.5-flash}}]
concurrency: 4
"""
CANDIDATE_PLOTS = {
    "plots/category_confusion.png",
    "plots/grade_predicted_vs_true.png",
    "plots/grade_error_distribution.png",
    "plots/failures.png",
}


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert len(data) > 5_000, f"{path.name} is suspiciously small ({len(data)} bytes)"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    return width, height


def sweep(tmp_path: Path, tracking: str, gemini_server: FakeGemini) -> tuple[MlflowClient, list[Run], Run]:
    """The experiment swept once: its candidate runs and its sweep run."""

    def answer(request: RequestInfo) -> str:  # a mix of right, wrong and unparseable answers
        digit = int((request.image_sha256 or "0")[0], 16)
        if digit < 3:
            return "no idea"
        grade = digit * 6
        if request.has_response_schema:
            return json.dumps({"categories": ["soup" if digit % 2 else "salad"], "food_remaining_pct": grade})
        return f"Category: {'soup' if digit % 2 else 'salad'}\nFood %: {grade}%"

    gemini_server.default_answer = answer
    path = tmp_path / "exp.yaml"
    path.write_text(EXPERIMENT.format(root=ROOT, base_url=gemini_server.base_url), encoding="utf-8")
    result = RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", tracking])
    assert result.exit_code == 0, result.output

    client = MlflowClient(tracking_uri=tracking)
    experiment_id = client.get_experiment_by_name("plots").experiment_id
    candidates = client.search_runs([experiment_id], "tags.`promptgrade.kind` = 'candidate'")
    assert len(candidates) == 2
    [sweep_run] = client.search_runs([experiment_id], "tags.`promptgrade.kind` = 'sweep'")
    return client, candidates, sweep_run


def test_every_candidate_and_the_sweep_get_their_plots(
    tmp_path: Path, tracking: str, gemini_server: FakeGemini, fake_api_key: str
) -> None:
    client, candidates, sweep_run = sweep(tmp_path, tracking, gemini_server)
    for run in candidates:
        listed = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        assert listed == CANDIDATE_PLOTS
        for artifact in sorted(listed):
            width, height = png_size(Path(client.download_artifacts(run.info.run_id, artifact)))
            assert width >= 400 and height >= 300
    assert {a.path for a in client.list_artifacts(sweep_run.info.run_id, "plots")} == {"plots/candidates.png"}
    png_size(Path(client.download_artifacts(sweep_run.info.run_id, "plots/candidates.png")))


def test_plots_off_logs_everything_else(
    tmp_path: Path,
    tracking: str,
    gemini_server: FakeGemini,
    fake_api_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PROMPTGRADE_PLOTS=0 (a CI that never looks at them): the same runs, tables and metrics, no plot."""
    monkeypatch.setenv("PROMPTGRADE_PLOTS", "0")
    client, candidates, sweep_run = sweep(tmp_path, tracking, gemini_server)
    for run in candidates:
        assert not client.list_artifacts(run.info.run_id, "plots")
        listed = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"predictions.json", "per_category.json", "metrics.json"} <= listed
        assert run.data.metrics["n_examples"] == 16
    assert not client.list_artifacts(sweep_run.info.run_id, "plots")
    assert "summary.json" in {a.path for a in client.list_artifacts(sweep_run.info.run_id)}
