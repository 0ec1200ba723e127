"""Promotion: the best eligible prompt, measurably better than production, aliased and bundled."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from typer.testing import CliRunner

from helpers.sweeps import examples_of
from promptgrade.bundle import load_bundle
from promptgrade.cli import app
from promptgrade.prompts import PromptLibrary
from promptgrade.testing.gemini_server import FakeGemini, RequestInfo

ROOT = Path(__file__).resolve().parents[1]
RUNNER = CliRunner(env={"COLUMNS": "200"})
N = 40
EXPERIMENT = """\
name: promo
task: {root}/experiments/tasks/meal_tray.yaml
prompts_dir: {root}/prompts
prices: {root}/experiments/prices.yaml
base_url: {base_url}
dataset: {{kind: folder, path: {root}/data/sample, split: test, limit: {n}, image_max_side: 128}}
prompts: [meal_tray_freetext@1, meal_tray_json@1, meal_tray_anchors@1]
models:
  - model: gemini-2.5-flash
    settings: {{temperature: 0.0}}
concurrency: 8
"""
# Which prompt a request came from, by a phrase only that template renders.
MARKERS = {
    "meal_tray_anchors": "Step 1",
    "meal_tray_json": "Return only the JSON object",
    "meal_tray_freetext": "Food %",
}


@pytest.fixture
def experiment_file(tmp_path: Path, gemini_server: FakeGemini) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(EXPERIMENT.format(root=ROOT, base_url=gemini_server.base_url, n=N), encoding="utf-8")
    return path


@pytest.fixture
def sweep(
    experiment_file: Path, gemini_server: FakeGemini, tracking: str, fake_api_key: str
) -> Callable[[dict], None]:
    """Run a sweep where prompt ``p`` answers the first ``right[p]`` trays (by id) correctly."""
    examples = examples_of(experiment_file)
    rank = {e.image.sha256: i for i, e in enumerate(examples)}
    truth = {e.image.sha256: e.labels for e in examples}

    def run(right: dict[str, int]) -> None:
        def answer(request: RequestInfo) -> str:
            prompt = next(name for name, marker in MARKERS.items() if marker in request.prompt)
            labels = truth[request.image_sha256 or ""]
            good = rank[request.image_sha256 or ""] < right[prompt]
            categories = list(labels.categories) if good else ["snack"]
            grade = labels.grade if good else (0.0 if (labels.grade or 0) > 50 else 100.0)
            return json.dumps({"categories": categories, "food_remaining_pct": grade})

        gemini_server.default_answer = answer
        # --no-cache: each call of this fixture scripts a different model; the cache would replay the first.
        result = RUNNER.invoke(app, ["sweep", str(experiment_file), "--tracking-uri", tracking, "--no-cache"])
        assert result.exit_code == 0, result.output

    return run


def promote(tracking: str, bundle: Path, *extra: str) -> object:
    return RUNNER.invoke(
        app,
        ["promote", "--experiment", "promo", "--tracking-uri", tracking, "--bundle-dir", str(bundle), *extra],
    )


def test_first_promotion_aliases_tags_and_writes_an_exact_bundle(
    sweep, tracking: str, tmp_path: Path
) -> None:
    sweep({"meal_tray_freetext": 20, "meal_tray_json": 36, "meal_tray_anchors": 30})
    bundle = tmp_path / "bundle"
    result = promote(tracking, bundle)
    assert result.exit_code == 0, result.output
    assert "meal_tray_json@v1" in result.output and "promoted" in result.output
    assert "McNemar" in result.output  # tested against the runner-up, and shown

    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    production = client.get_prompt_version_by_alias("meal_tray_json", "production")
    source = PromptLibrary(ROOT / "prompts").get("meal_tray_json", 1)
    assert production.template == source.text
    assert production.tags["promptgrade.sha256"] == source.sha256

    loaded = load_bundle(bundle)
    assert loaded.prompt.text == source.text  # what ships is exactly what was measured
    manifest = loaded.manifest
    assert (manifest.prompt.name, manifest.prompt.version, manifest.prompt.sha256) == (
        "meal_tray_json",
        1,
        source.sha256,
    )
    assert manifest.model == "gemini-2.5-flash" and manifest.settings.temperature == 0.0
    assert manifest.image_max_side == 128  # production prepares images exactly as they were measured
    assert manifest.settings.structured_output is True
    assert manifest.task.name == "meal_tray" and "soup" in manifest.task.categories
    assert manifest.provenance.metrics["category_accuracy"] == pytest.approx(36 / N)
    run = client.get_run(manifest.provenance.run_id or "")
    assert "promptgrade.promoted_at" in run.data.tags
    assert run.data.params["prompt_name"] == "meal_tray_json"
    record = json.loads(Path(client.download_artifacts(run.info.run_id, "promotion.json")).read_text())
    assert record["runner_up_run_id"] and record["tests"]


def test_a_challenger_not_measurably_better_is_refused_unless_forced(
    sweep, tracking: str, tmp_path: Path
) -> None:
    sweep({"meal_tray_freetext": 10, "meal_tray_json": 30, "meal_tray_anchors": 25})
    assert promote(tracking, tmp_path / "b1").exit_code == 0  # json becomes production
    sweep({"meal_tray_freetext": 10, "meal_tray_json": 30, "meal_tray_anchors": 32})  # anchors: +2 trays only
    refused = promote(tracking, tmp_path / "b2")
    assert refused.exit_code == 2
    text = " ".join(refused.output.split())
    assert "not measurably better than production" in text and "p=" in text and "--force" in text
    assert not (tmp_path / "b2").exists()
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    assert client.get_prompt_version_by_alias("meal_tray_json", "production") is not None

    forced = promote(tracking, tmp_path / "b3", "--force")
    assert forced.exit_code == 0, forced.output
    assert load_bundle(tmp_path / "b3").manifest.prompt.name == "meal_tray_anchors"
    assert client.get_prompt_version_by_alias("meal_tray_anchors", "production") is not None
    with pytest.raises(MlflowException):  # production is one prompt: the old alias is gone
        client.get_prompt_version_by_alias("meal_tray_json", "production")


def test_a_clearly_better_challenger_replaces_production(sweep, tracking: str, tmp_path: Path) -> None:
    sweep({"meal_tray_freetext": 5, "meal_tray_json": 20, "meal_tray_anchors": 10})
    assert promote(tracking, tmp_path / "b1").exit_code == 0
    sweep({"meal_tray_freetext": 5, "meal_tray_json": 20, "meal_tray_anchors": 38})
    result = promote(tracking, tmp_path / "b2")
    assert result.exit_code == 0, result.output
    assert "vs production" in result.output
    assert load_bundle(tmp_path / "b2").manifest.prompt.name == "meal_tray_anchors"


def test_too_few_examples_is_not_eligible(sweep, tracking: str, tmp_path: Path) -> None:
    sweep({"meal_tray_freetext": 5, "meal_tray_json": 20, "meal_tray_anchors": 10})
    result = promote(tracking, tmp_path / "b", "--min-examples", "100")
    assert result.exit_code == 2
    assert "no eligible candidate" in result.output and "minimum 100" in " ".join(result.output.split())


def test_unknown_experiment_is_one_line(tracking: str, tmp_path: Path) -> None:
    result = RUNNER.invoke(app, ["promote", "-e", "nope", "--tracking-uri", tracking])
    assert result.exit_code == 2
    assert "no MLflow experiment named 'nope'" in result.output
