"""Given ``samples: 3`` and ``abstain_below``, when the server answers each tray three different ways,
then the vote, the agreement, the spread, the unvoted sample accuracy, coverage and the selective
accuracies in MLflow equal what is computed here by hand; a re-run makes no call; and k = 1 scores as a
single answer always has.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from helpers.scripted_sweeps import write_experiment
from promptgrade.cli import app
from promptgrade.data.examples import Example
from promptgrade.testing.gemini_server import FakeGemini, RequestInfo

RUNNER = CliRunner(env={"COLUMNS": "240"})
N = 6
WRONG = "snack"  # in the task's vocabulary, in none of the first trays' truths


def script(examples: list[Example]) -> Any:
    """Per tray (in id order), three answers by order of arrival (the sweep runs one call at a time):

    A: right ×3; B: right, right, a wrong category with a far grade; C: right, wrong, wrong;
    D: right, wrong, fruit (a three-way tie: the earliest sample wins); E: unparseable, right, right;
    F: unparseable ×3.
    """
    by_sha = {e.image.sha256: e for e in examples}
    arrivals: Counter[str] = Counter()

    def far(example: Example) -> float:
        truth = example.labels.grade or 0.0
        return 100.0 if truth < 50 else 0.0

    def answer(request: RequestInfo) -> str:
        example = by_sha[request.image_sha256 or ""]
        index = arrivals[example.id]
        arrivals[example.id] += 1
        row = sorted(by_sha.values(), key=lambda e: e.id).index(example)
        right = list(example.labels.categories)
        truth = example.labels.grade or 0.0
        plan = [
            [(right, truth)] * 3,
            [(right, truth), (right, truth), ([WRONG], far(example))],
            [(right, truth), ([WRONG], truth), ([WRONG], truth)],
            [(right, truth), ([WRONG], truth), (["fruit"], truth)],
            [None, (right, truth), (right, truth)],
            [None, None, None],
        ][row][index]
        if plan is None:
            return "I cannot tell."
        categories, grade = plan
        return json.dumps({"categories": categories, "food_remaining_pct": grade})

    return answer


def test_three_samples_vote_agree_and_abstain_exactly(
    tmp_path: Path, gemini_server: FakeGemini, fake_api_key: str, tracking: str
) -> None:
    path = tmp_path / "exp.yaml"
    examples = write_experiment(
        path, name="samples", base_url=gemini_server.base_url, n=N, prompts="meal_tray_json@1"
    )
    assert not any(WRONG in e.labels.categories or "fruit" in e.labels.categories for e in examples)
    text = path.read_text().replace(
        "models: [{model: gemini-2.5-flash}]",
        "models: [{model: gemini-2.5-flash, samples: 3, abstain_below: 0.6}]",
    )
    path.write_text(text.replace("concurrency: 4", "concurrency: 1"), encoding="utf-8")
    gemini_server.default_answer = script(examples)

    result = RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", tracking])

    assert result.exit_code == 0, result.output
    assert gemini_server.calls == 3 * N
    client = MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name("samples")
    [run] = client.search_runs([experiment.experiment_id], "tags.`promptgrade.kind` = 'candidate'")
    metrics, params = run.data.metrics, run.data.params
    assert params["samples"] == "3" and params["abstain_below"] == "0.6"
    # votes: A right, B right, C wrong, D right (the earliest of a tie), E right, F failed
    assert metrics["category_accuracy"] == pytest.approx(4 / 6)
    assert metrics["parse_failure_rate"] == pytest.approx(1 / 6)
    # grades: the median is the truth wherever someone answered (B: truth, truth, far)
    assert metrics["grade_accuracy"] == pytest.approx(5 / 6)
    assert metrics["agreement_mean"] == pytest.approx((1 + 2 / 3 + 2 / 3 + 1 / 3 + 1 + 0) / 6)
    spread_b = abs(examples[1].labels.grade - (100.0 if examples[1].labels.grade < 50 else 0.0))
    assert metrics["grade_spread_mean"] == pytest.approx(spread_b / 5)  # F has no grade to spread
    assert metrics["sample_category_accuracy"] == pytest.approx((3 + 2 + 1 + 1 + 2 + 0) / 18)
    # abstained below 0.6: D (1/3) and F (nobody answered)
    assert metrics["coverage"] == pytest.approx(4 / 6)
    assert metrics["selective_category_accuracy"] == pytest.approx(3 / 4)
    assert metrics["selective_grade_accuracy"] == pytest.approx(4 / 4)
    assert metrics["n_examples"] == N

    table = json.loads(Path(client.download_artifacts(run.info.run_id, "predictions.json")).read_text())
    rows = {row[0]: dict(zip(table["columns"], row, strict=True)) for row in table["data"]}
    d = rows[examples[3].id]
    assert d["abstained"] is True and d["agreement"] == pytest.approx(1 / 3)
    assert [s["categories"][0] for s in json.loads(d["samples"])] == [
        examples[3].labels.categories[0],
        WRONG,
        "fruit",
    ]
    assert d["predicted_categories"] == "; ".join(examples[3].labels.categories)

    again = RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", tracking])
    assert again.exit_code == 0, again.output
    assert gemini_server.calls == 3 * N  # each sample came from the cache under its own key


def test_one_sample_scores_as_a_single_answer_and_shares_its_cache(
    tmp_path: Path, gemini_server: FakeGemini, fake_api_key: str, tracking: str
) -> None:
    path = tmp_path / "exp.yaml"
    examples = write_experiment(
        path, name="one", base_url=gemini_server.base_url, n=N, prompts="meal_tray_json@1"
    )
    gemini_server.default_answer = script(examples)
    single = RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", tracking])
    assert single.exit_code == 0, single.output
    client = MlflowClient(tracking_uri=tracking)
    [run] = client.search_runs(
        [client.get_experiment_by_name("one").experiment_id], "tags.`promptgrade.kind` = 'candidate'"
    )
    assert "agreement_mean" not in run.data.metrics and "samples" not in run.data.params
    assert run.data.metrics["category_accuracy"] == pytest.approx(4 / 6)  # every first answer but E's, F's

    # k = 3 re-uses the k = 1 answers as its first samples: only the two others per tray are bought
    path.write_text(
        path.read_text().replace(
            "models: [{model: gemini-2.5-flash}]", "models: [{model: gemini-2.5-flash, samples: 3}]"
        ),
        encoding="utf-8",
    )
    calls = gemini_server.calls
    triple = RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", tracking])
    assert triple.exit_code == 0, triple.output
    assert gemini_server.calls - calls == 2 * N


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("samples: 0", "samples"),
        ("samples: 21", "samples"),
        ("abstain_below: 0", "abstain_below"),
        ("abstain_below: 1.5", "abstain_below"),
        ("grid: {samples: [1, 0]}", "every value must be a whole number from 1 to 20"),
    ],
)
def test_bad_sampling_settings_are_one_line(
    tmp_path: Path, gemini_server: FakeGemini, entry: str, message: str
) -> None:
    path = tmp_path / "exp.yaml"
    write_experiment(path, name="bad", base_url=gemini_server.base_url, n=N, prompts="meal_tray_json@1")
    path.write_text(
        path.read_text().replace(
            "models: [{model: gemini-2.5-flash}]", f"models: [{{model: gemini-2.5-flash, {entry}}}]"
        ),
        encoding="utf-8",
    )
    result = RUNNER.invoke(app, ["sweep", str(path), "--dry-run"])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert gemini_server.calls == 0
