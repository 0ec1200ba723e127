"""Given a sweep whose answers are scripted so that each prompt is right on known trays, when I compare
the two candidates example by example, then the flips, the paired test and the JSON are exactly those.

Everything is read back from MLflow (predictions artifacts), as it would be for any finished sweep.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from helpers.scripted_sweeps import planted_answers, write_experiment
from helpers.sweeps import module_lab
from promptgrade.cli import app
from promptgrade.stats import mcnemar
from promptgrade.testing.gemini_server import FakeGemini

RUNNER = CliRunner(env={"COLUMNS": "240"})
N = 12


def sweep_flips(folder: Path, server: FakeGemini, tracking: str) -> dict[str, Any]:
    """JSON is right on the first 8 trays, free text on the last 8: 4 flips each way, 4 agreements."""
    path = folder / "exp.yaml"
    examples = write_experiment(path, name="flips", base_url=server.base_url, n=N)
    json_right = {e.id for e in examples[:8]}
    text_right = {e.id for e in examples[4:]}
    server.default_answer = planted_answers(examples, json_right, text_right)
    result = RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", tracking])
    assert result.exit_code == 0, result.output
    return {"json": json_right, "text": text_right, "path": str(path), "tracking": tracking}


@pytest.fixture(scope="module")
def flips(tmp_path_factory: pytest.TempPathFactory, _migrated_mlflow_db: Path) -> Iterator[dict[str, Any]]:
    """One sweep for the tests that only read it."""
    with module_lab(tmp_path_factory, _migrated_mlflow_db, "flips") as lab:
        yield sweep_flips(lab.folder, lab.server, lab.tracking)


def test_compare_two_prompts_lists_the_flips_with_the_exact_paired_test(
    flips: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "flips.json"
    experiment_file, tracking = flips["path"], flips["tracking"]
    result = RUNNER.invoke(
        app,
        [
            "compare",
            experiment_file,
            "--runs",
            "meal_tray_json@1",
            "meal_tray_freetext@v1",
            "--json",
            str(out),
            "--tracking-uri",
            tracking,
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    a_only, b_only = flips["json"] - flips["text"], flips["text"] - flips["json"]
    assert set(data["category"]["a_only"]) == a_only and set(data["category"]["b_only"]) == b_only
    assert set(data["grade"]["a_only"]) == a_only and set(data["grade"]["b_only"]) == b_only
    ids = sorted(flips["json"] | flips["text"])
    expected = mcnemar([i in flips["json"] for i in ids], [i in flips["text"] for i in ids]).p_value
    assert data["category"]["p_value"] == pytest.approx(expected) and data["examples"] == N
    # every tray has a grade, so the paired mean difference is the difference of the runs' grade_mae
    client = MlflowClient(tracking_uri=tracking)
    mae = {run_id: client.get_run(run_id).data.metrics["grade_mae"] for run_id in (data["a"], data["b"])}
    assert data["grade"]["mae_difference_b_minus_a"] == pytest.approx(mae[data["b"]] - mae[data["a"]])
    assert client.get_run(data["a"]).data.params["prompt_name"] == "meal_tray_json"
    text = " ".join(result.output.split())
    assert f"category: A right, B wrong on {len(a_only)}; B right, A wrong on {len(b_only)}" in text
    assert all(example_id in result.output for example_id in a_only | b_only)
    assert "Category: snack" in text  # the free-text answer, side by side with the JSON one


@pytest.mark.parametrize(
    ("refs", "message"),
    [
        (["deadbeef" * 4, "meal_tray_json@1"], "no MLflow run"),
        (["meal_tray_json@7", "meal_tray_json@1"], "no candidate meal_tray_json@v7"),
        (["meal_tray_json@1", "meal_tray_json@1"], "two different runs"),
    ],
)
def test_bad_references_are_one_line(flips: dict[str, Any], refs: list[str], message: str) -> None:
    result = RUNNER.invoke(
        app, ["compare", flips["path"], "--runs", *refs, "--tracking-uri", flips["tracking"]]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_runs_on_different_data_are_refused_unless_unpaired(
    tmp_path: Path, tracking: str, gemini_server: FakeGemini, fake_api_key: str
) -> None:
    """A sweep of its own: a second sweep on fewer trays would change what the other tests read."""
    experiment_file = sweep_flips(tmp_path, gemini_server, tracking)["path"]
    assert (
        RUNNER.invoke(app, ["sweep", experiment_file, "--limit", "6", "--tracking-uri", tracking]).exit_code
        == 0
    )
    client = MlflowClient(tracking_uri=tracking)
    runs = client.search_runs(
        [client.get_experiment_by_name("flips").experiment_id],
        "tags.`promptgrade.kind` = 'candidate' and params.prompt_name = 'meal_tray_json'",
    )
    assert len(runs) == 2 and len({r.data.params["dataset_sha256"] for r in runs}) == 2
    ids = [r.info.run_id for r in runs]
    refused = RUNNER.invoke(app, ["compare", experiment_file, "--runs", *ids, "--tracking-uri", tracking])
    assert refused.exit_code == 2 and "scored on different data" in " ".join(refused.output.split())
    out = tmp_path / "unpaired.json"
    allowed = RUNNER.invoke(
        app,
        [
            "compare",
            experiment_file,
            "--runs",
            *ids,
            "--unpaired",
            "--json",
            str(out),
            "--tracking-uri",
            tracking,
        ],
    )
    assert allowed.exit_code == 0, allowed.output
    data = json.loads(out.read_text())
    assert data["paired"] is False and data["examples"] == 6  # only the shared trays
