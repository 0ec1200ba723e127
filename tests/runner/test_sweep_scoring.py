"""Metrics as a user reads them after a sweep: the whole path (real google-genai client → local Gemini
server → parser → scoring → MLflow and the CLI), not the parser or the scorer alone.

Top-1 is the model's own first choice: a parser that dropped unknown names before taking the first
would credit the model's second choice. Estimated input tokens sit beside the real ones, so a stale
image-token rule is visible after the first sweep instead of after the first invoice.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from helpers.sweeps import examples_of
from promptgrade.cli import app
from promptgrade.testing.gemini_server import FakeGemini, RequestInfo

ROOT = Path(__file__).resolve().parents[2]
RUNNER = CliRunner(env={"COLUMNS": "200"})
N = 6

EXPERIMENT = f"""\
name: top1
task: {ROOT}/experiments/tasks/meal_tray.yaml
prompts_dir: {ROOT}/prompts
prices: {ROOT}/experiments/prices.yaml
base_url: {{base_url}}
dataset: {{{{kind: folder, path: {ROOT}/data/sample, split: test, limit: {N}, image_max_side: 256}}}}
prompts: [meal_tray_json@1]
models: [{{{{model: {{model}}}}}}]
concurrency: 2
"""


def test_an_unknown_first_name_is_a_wrong_top1_but_a_right_category(
    tmp_path: Path, tracking: str, gemini_server: FakeGemini, fake_api_key: str
) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(
        EXPERIMENT.format(base_url=gemini_server.base_url, model="gemini-2.5-flash"), encoding="utf-8"
    )
    examples = examples_of(path)
    truth = {e.image.sha256: e.labels for e in examples}
    first_half = {e.image.sha256 for e in sorted(examples, key=lambda e: e.id)[: N // 2]}

    def answer(request: RequestInfo) -> str:
        labels = truth[request.image_sha256 or ""]
        lead = ["spaceship"] if request.image_sha256 in first_half else []
        return json.dumps({"categories": [*lead, labels.categories[0]], "food_remaining_pct": labels.grade})

    gemini_server.default_answer = answer
    result = RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", tracking])
    assert result.exit_code == 0, result.output

    client = MlflowClient(tracking_uri=tracking)
    experiment_id = client.get_experiment_by_name("top1").experiment_id
    [run] = client.search_runs([experiment_id], "tags.`promptgrade.kind` = 'candidate'")
    assert run.data.metrics["category_accuracy"] == 1.0
    assert run.data.metrics["category_top1_accuracy"] == pytest.approx(0.5)


def test_estimated_and_actual_input_tokens_are_printed_and_logged(
    tmp_path: Path, tracking: str, gemini_server: FakeGemini, fake_api_key: str
) -> None:
    """The local server bills every image as 258 tokens, like Gemini 2.x; a Gemini 3 id is estimated at
    1,120 per image from the price table: the drift must show, per call, in the CLI and in MLflow."""
    from promptgrade.testing.gemini_server import TOKENS_PER_IMAGE

    path = tmp_path / "exp.yaml"
    path.write_text(
        EXPERIMENT.format(base_url=gemini_server.base_url, model="gemini-3-flash-preview"), encoding="utf-8"
    )
    result = RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", tracking])
    assert result.exit_code == 0, result.output

    client = MlflowClient(tracking_uri=tracking)
    experiment_id = client.get_experiment_by_name("top1").experiment_id
    [run] = client.search_runs([experiment_id], "tags.`promptgrade.kind` = 'candidate'")
    metrics = run.data.metrics
    prompt_tokens = (metrics["input_tokens"] / N) - TOKENS_PER_IMAGE  # what the server counted as text
    assert metrics["estimated_input_tokens"] / N == pytest.approx(1120 + prompt_tokens, abs=1)
    estimated, actual = metrics["estimated_input_tokens"] / N, metrics["input_tokens"] / N
    lines = [" ".join(line.split()) for line in result.output.splitlines()]
    at = lines.index("input tokens per call, estimated vs actual:")
    drift = (actual - estimated) / estimated
    assert lines[at + 1 : at + 3] == [
        "meal_tray_json@v1 · gemini-3-flash-preview",
        f"estimated {estimated:,.0f}, actual {actual:,.0f} ({drift:+.0%})",
    ]
