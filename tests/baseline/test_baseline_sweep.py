"""The trained baseline in the same experiment as the prompts: same evaluator, same metrics, a real model."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from typer.testing import CliRunner

from helpers.sweeps import ACCURACY_METRICS, candidate_runs
from promptgrade.cli import app
from promptgrade.testing.gemini_server import FakeGemini

ROOT = Path(__file__).resolve().parents[2]
RUNNER = CliRunner(env={"COLUMNS": "200"})
SHARED_METRICS = set(ACCURACY_METRICS) - {"input_tokens", "output_tokens"}  # a baseline reads no tokens
EXPERIMENT = """\
name: with-baseline
task: {root}/experiments/tasks/meal_tray.yaml
prompts_dir: {root}/prompts
prices: {root}/experiments/prices.yaml
base_url: {base_url}
dataset: {{kind: folder, path: {root}/data/sample, split: test, train_split: train, limit: 24, image_max_side: 128}}
prompts: [meal_tray_json@1]
models:
  - model: gemini-2.5-flash
baselines:
  - kind: classical
    seed: 3
"""


def test_baseline_lands_beside_prompt_runs_and_its_model_loads_and_predicts(
    tmp_path: Path, gemini_server: FakeGemini, fake_api_key: str, tracking: str
) -> None:
    gemini_server.default_answer = lambda r: json.dumps({"categories": ["soup"], "food_remaining_pct": 50})
    path = tmp_path / "exp.yaml"
    path.write_text(EXPERIMENT.format(root=ROOT, base_url=gemini_server.base_url), encoding="utf-8")
    result = RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", tracking])
    assert result.exit_code == 0, result.output
    assert "classical" in result.output

    runs = {r.data.params["provider"]: r for r in candidate_runs(tracking, "with-baseline")}
    assert set(runs) == {"gemini", "baseline"}
    prompt_run, baseline_run = runs["gemini"], runs["baseline"]
    assert prompt_run.data.tags["mlflow.parentRunId"] == baseline_run.data.tags["mlflow.parentRunId"]
    assert prompt_run.data.metrics.keys() >= SHARED_METRICS
    assert baseline_run.data.metrics.keys() >= SHARED_METRICS  # same names: one comparison table
    params = baseline_run.data.params
    assert params["model"] == "classical" and params["seed"] == "3"
    assert params["split"] == "test" and params["train_split"] == "train"  # no leakage: logged, and disjoint
    assert params["dataset_sha256"] != params["train_dataset_sha256"]
    assert baseline_run.data.metrics["n_examples"] == 24 and baseline_run.data.metrics["n_train"] == 24
    assert baseline_run.data.metrics["cost_usd"] == 0
    assert 0 <= baseline_run.data.metrics["category_accuracy"] <= 1

    # The logged model is a real MLflow model with a signature: load it back and grade new images.
    mlflow.set_tracking_uri(tracking)
    model_uri = baseline_run.data.tags["model_uri"]
    info = mlflow.models.get_model_info(model_uri)
    assert info.signature is not None
    model = mlflow.pyfunc.load_model(model_uri)
    images = sorted((ROOT / "data/sample/images").glob("*.jpg"))[-3:]
    frame = pd.DataFrame({"image": [base64.b64encode(p.read_bytes()).decode() for p in images]})
    predicted = model.predict(frame)
    assert len(predicted) == 3
    for categories, grade in zip(predicted["categories"], predicted["food_remaining_pct"], strict=True):
        assert categories and all(c.strip() for c in categories.split(";"))
        assert 0 <= grade <= 100


def test_quickstart_runs_offline_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tracking: str
) -> None:
    """No credentials, no network: the baseline gives real results, Gemini is listed as skipped."""
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GEMINI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    result = RUNNER.invoke(
        app, ["sweep", str(ROOT / "experiments/quickstart.yaml"), "--limit", "16", "--tracking-uri", tracking]
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "skipped gemini-3-flash-preview: No Gemini credentials: set GEMINI_API_KEY" in text
    best = re.search(r"best by category_accuracy: baseline · (\w+) \(run ([0-9a-f]{32})\)", text)
    assert best is not None, result.output
    runs = candidate_runs(tracking, "meal-tray-quickstart")
    assert {r.data.params["model"] for r in runs} >= {"classical"}
    assert all(r.data.params["provider"] == "baseline" for r in runs)  # nothing was sent anywhere
    # The line names the run MLflow holds with the highest category_accuracy, and that run's model.
    named = {r.info.run_id: r for r in runs}.get(best[2])
    assert named is not None and named.data.params["model"] == best[1]
    assert named.data.metrics["category_accuracy"] == max(r.data.metrics["category_accuracy"] for r in runs)
    classical = next(r for r in runs if r.data.params["model"] == "classical")
    assert classical.data.metrics["n_examples"] == 16 and classical.info.status == "FINISHED"
