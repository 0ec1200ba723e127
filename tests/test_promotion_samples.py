"""Given a candidate swept with ``samples: 3`` and ``abstain_below``, when I promote it, then its run's
``candidate.json`` and the bundle's manifest carry both, so the Lambda votes as the sweep measured;
promotion's table shows what a tray costs as the three calls it takes; and a run recorded before
samples existed ships a bundle that asks once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner, Result

from helpers.promoted_references import truthful
from helpers.scripted_sweeps import write_experiment
from helpers.sweeps import candidate_runs, sweep
from promptgrade.bundle import MANIFEST, load_bundle
from promptgrade.cli import app
from promptgrade.testing.gemini_server import FakeGemini

RUNNER = CliRunner(env={"COLUMNS": "240"})
N = 6


def promote(tracking: str, bundle: Path) -> Result:
    command = ["promote", "-e", "votes", "--tracking-uri", tracking, "--bundle-dir", str(bundle)]
    return RUNNER.invoke(app, [*command, "--min-examples", str(N)])


@pytest.fixture
def swept(tmp_path: Path, gemini_server: FakeGemini, fake_api_key: str, tracking: str) -> str:
    """The run id of a ``samples: 3, abstain_below: 0.6`` candidate, every sample answering the truth."""
    path = tmp_path / "exp.yaml"
    examples = write_experiment(
        path, name="votes", base_url=gemini_server.base_url, n=N, prompts="meal_tray_json@1"
    )
    text = path.read_text(encoding="utf-8").replace(
        "models: [{model: gemini-2.5-flash}]",
        "models: [{model: gemini-2.5-flash, settings: {temperature: 0.7}, samples: 3, abstain_below: 0.6}]",
    )
    path.write_text(text, encoding="utf-8")
    gemini_server.default_answer = truthful(examples)
    result = sweep(path, tracking)
    assert result.exit_code == 0, result.output
    assert gemini_server.calls == 3 * N
    [run] = candidate_runs(tracking, "votes")
    return str(run.info.run_id)


def test_the_promoted_bundle_votes_as_the_candidate_was_measured(
    swept: str, tracking: str, tmp_path: Path
) -> None:
    client = MlflowClient(tracking_uri=tracking)
    record = json.loads(Path(client.download_artifacts(swept, "candidate.json")).read_text())
    assert (record["samples"], record["abstain_below"]) == (3, 0.6)

    result = promote(tracking, tmp_path / "bundle")

    assert result.exit_code == 0, result.output
    manifest = load_bundle(tmp_path / "bundle").manifest
    assert (manifest.samples, manifest.abstain_below) == (3, 0.6)
    assert manifest.provenance.run_id == swept
    # a tray costs its three calls: the run's cost (every sample's tokens) over its trays
    metrics = client.get_run(swept).data.metrics
    per_image = metrics["cost_usd"] / metrics["n_examples"]
    assert per_image > 0
    output = " ".join(result.output.split())
    assert "$ / image" in output
    assert f"{per_image:,.6f} (3 × {per_image / 3:,.6f})" in output


def test_a_run_recorded_before_samples_ships_a_bundle_that_asks_once(
    swept: str, tracking: str, tmp_path: Path
) -> None:
    client = MlflowClient(tracking_uri=tracking)
    artifacts = Path(client.get_run(swept).info.artifact_uri.removeprefix("file://"))
    record = json.loads((artifacts / "candidate.json").read_text(encoding="utf-8"))
    for name in ("samples", "abstain_below"):
        del record[name]
    (artifacts / "candidate.json").write_text(json.dumps(record), encoding="utf-8")

    result = promote(tracking, tmp_path / "bundle")

    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "bundle" / MANIFEST).read_text(encoding="utf-8"))
    assert (manifest["samples"], manifest["abstain_below"]) == (1, None)
