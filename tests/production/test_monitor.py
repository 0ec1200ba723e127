"""Given production's results in S3, when a sample is labelled later, then `monitor score` says how
accurate production is (exact Wilson figures), compares it with what the experiment measured, logs a
monitoring run linked to the promoted prompt version, and exits 1 when production is worse.

The results are written by the real handler draining a moto queue (the local Gemini server answering);
the labels are a Label Studio export crafted in the real export's shape; MLflow is a local sqlite store
whose registry holds the promoted prompt.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import pytest
from label_studio_sdk.label_interface import LabelInterface
from mlflow import MlflowClient
from typer.testing import CliRunner

from helpers.bundles import promoted_bundle, released_prompt
from helpers.label_studio import ls_export
from helpers.lambda_events import make_jpeg
from helpers.sqs_events import grading_request_body, poll
from lambda_handler import app
from promptgrade.bundle import Provenance
from promptgrade.cli import app as cli
from promptgrade.images import prepare_image
from promptgrade.production.monitor import draw
from promptgrade.scoring import wilson
from promptgrade.testing.gemini_server import FakeGemini, RequestInfo
from promptgrade.tracking.registry import PromptRegistry

INPUT, OUTPUT = "trays-backlog", "trays-graded"
RESULTS = f"s3://{OUTPUT}/results/"
RUNNER = CliRunner()
RIGHT = {"categories": ["soup"], "grade": 40}  # production answered soup and bread, 40
WRONG = {"categories": ["pasta"], "grade": 90}


def grade_through_the_queue(queue_url: str, images: list[bytes]) -> None:
    sqs = boto3.client("sqs")
    for n, data in enumerate(images):
        boto3.client("s3").put_object(Bucket=INPUT, Key=f"in/{n:03}.jpg", Body=data)
        sqs.send_message(QueueUrl=queue_url, MessageBody=grading_request_body(f"s3://{INPUT}/in/{n:03}.jpg"))
    assert poll(queue_url, app.handler) == len(images)


def trays(count: int) -> list[bytes]:
    return [make_jpeg((n * 6 % 256, 255 - n * 6 % 256, n * 13 % 256)) for n in range(count)]


def sample(tmp_path: Path, bundle_dir: Path, *extra: str) -> list[dict[str, Any]]:
    arguments = ["monitor", "sample", "--results", RESULTS, "--bundle", str(bundle_dir)]
    arguments += ["--out", str(tmp_path / "tasks.json"), "--config", str(tmp_path / "config.xml")]
    result = RUNNER.invoke(cli, [*arguments, "--sample", str(tmp_path / "sample.json"), *extra])
    assert result.exit_code == 0, result.output
    tasks: list[dict[str, Any]] = json.loads((tmp_path / "tasks.json").read_text())
    return tasks


def score(tmp_path: Path, bundle_dir: Path, tracking: str, labels: dict[str, list[dict[str, Any]]]) -> Any:
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    (tmp_path / "export.json").write_text(json.dumps(ls_export(tasks, labels)))
    arguments = ["monitor", "score", "--labels", str(tmp_path / "export.json"), "--bundle", str(bundle_dir)]
    return RUNNER.invoke(
        cli, [*arguments, "--sample", str(tmp_path / "sample.json"), "--tracking-uri", tracking]
    )


@pytest.fixture
def registered(tracking: str) -> str:
    """The promoted prompt in the registry, as `promote` left it."""
    PromptRegistry(MlflowClient(tracking_uri=tracking, registry_uri=tracking)).register(released_prompt())
    return tracking


def test_a_labelled_sample_gives_exact_wilson_figures_and_a_linked_run_and_a_drop_exits_1(
    function: FakeGemini, queue_url: str, bundle_dir: Path, registered: str, tmp_path: Path
) -> None:
    grade_through_the_queue(queue_url, trays(40))

    tasks = sample(tmp_path, bundle_dir, "--n", "30", "--seed", "7")

    assert len(tasks) == 30 and {t["data"]["tier"] for t in tasks} == {"uniform"}
    config = LabelInterface((tmp_path / "config.xml").read_text())
    for task in tasks:  # production's answer is the pre-annotation, valid for the labelling config
        [prediction] = task["predictions"]
        assert prediction["model_version"] == "meal_tray_json@v1"
        assert config.validate_prediction(prediction, return_errors=True) == []
        assert task["data"]["image"].startswith(f"s3://{INPUT}/in/")
    ids = [t["data"]["example_id"] for t in tasks]
    again = tmp_path / "again"
    again.mkdir()
    assert [t["data"]["example_id"] for t in sample(again, bundle_dir, "--n", "30", "--seed", "7")] == ids
    labels = {sha: [RIGHT if n < 24 else WRONG] for n, sha in enumerate(ids[:28])}  # 2 left unlabelled

    kept = score(tmp_path, bundle_dir, registered, labels)

    assert kept.exit_code == 0, kept.output
    assert "not significantly worse" in kept.output
    client = MlflowClient(tracking_uri=registered)
    [run] = client.search_runs(
        [client.get_experiment_by_name("meal_tray").experiment_id], "tags.`promptgrade.kind` = 'monitor'"
    )
    expected = wilson(24, 28)
    metrics = run.data.metrics
    assert metrics["production_category_accuracy"] == expected.value
    assert metrics["production_category_accuracy_ci_low"] == expected.ci_low
    assert metrics["production_category_accuracy_ci_high"] == expected.ci_high
    assert metrics["production_category_accuracy_n"] == 28
    assert metrics["production_grade_accuracy"] == wilson(24, 28).value
    assert metrics["measured_category_accuracy"] == 0.8
    linked = json.loads(run.data.tags["mlflow.linkedPrompts"])
    assert linked == [{"name": "meal_tray_json", "version": "1"}]
    assert run.data.tags["promptgrade.monitor_verdict"] == "not worse"

    dropped = score(
        tmp_path,
        bundle_dir,
        registered,
        {sha: [RIGHT if n < 14 else WRONG] for n, sha in enumerate(ids[:28])},
    )

    assert dropped.exit_code == 1, dropped.output
    assert "significantly worse than measured" in dropped.output


def test_flagged_trays_come_first_least_agreed_first_and_the_rest_is_a_seeded_uniform_draw(
    function: FakeGemini, queue_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    provenance = Provenance(
        run_id="run-2", experiment="meal_tray", metrics={"category_accuracy": 0.8, "n_examples": 200}
    )
    voting = promoted_bundle(
        tmp_path / "voting", released_prompt(), samples=3, abstain_below=0.7, provenance=provenance
    )
    monkeypatch.setenv("PROMPTGRADE_BUNDLE_DIR", str(voting))
    images = trays(12)
    prepared = [prepare_image(data).sha256 for data in images]
    scripts = {
        prepared[3]: ["soup", "bread", "pasta"],  # agreement 1/3
        prepared[5]: ["soup", "soup", "pasta"],  # agreement 2/3
    }
    asked: Counter[str] = Counter()

    def answer(request: RequestInfo) -> str:
        sha = request.image_sha256 or ""
        asked[sha] += 1
        category = scripts.get(sha, ["soup"] * 3)[(asked[sha] - 1) % 3]
        return json.dumps({"categories": [category], "food_remaining_pct": 40})

    function.default_answer = answer
    grade_through_the_queue(queue_url, images)

    tasks = sample(tmp_path, voting, "--n", "6", "--seed", "3")

    raw = {prepare_image(data).sha256: hashlib.sha256(data).hexdigest() for data in images}
    assert [t["data"]["tier"] for t in tasks[:2]] == ["flagged", "flagged"]
    assert [t["data"]["example_id"] for t in tasks[:2]] == [raw[prepared[3]], raw[prepared[5]]]
    assert "needs review (agreement 0.33)" in tasks[0]["data"]["reason"]
    assert tasks[0]["predictions"][0]["score"] == pytest.approx(1 / 3, abs=1e-4)
    every = sorted(raw.values())
    expected = draw(every, [raw[prepared[3]], raw[prepared[5]]], 6, 3, 3)
    assert [(t["data"]["example_id"], t["data"]["tier"]) for t in tasks] == expected
    assert [tier for _, tier in expected].count("uniform") == 4


def test_bad_input_is_one_line_and_exit_2(
    function: FakeGemini, queue_url: str, bundle_dir: Path, tracking: str, tmp_path: Path
) -> None:
    nothing = RUNNER.invoke(cli, ["monitor", "sample", "--results", RESULTS, "--bundle", str(bundle_dir)])
    assert nothing.exit_code == 2 and "no results of the current bundle" in nothing.output
    assert len(nothing.output.strip().splitlines()) == 1, nothing.output

    grade_through_the_queue(queue_url, trays(3))
    tasks = sample(tmp_path, bundle_dir, "--n", "3")
    stranger = json.loads(json.dumps(tasks[0]))
    stranger["data"]["example_id"] = "f" * 64
    (tmp_path / "tasks.json").write_text(json.dumps([*tasks, stranger]))

    strangers = score(tmp_path, bundle_dir, tracking, {"f" * 64: [RIGHT]})

    assert strangers.exit_code == 2 and "not in the sample" in strangers.output
    assert len(strangers.output.strip().splitlines()) == 1, strangers.output
