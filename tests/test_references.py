"""Prompts that show, not only tell: given a template with graded reference trays, when I sweep it beside
one without, then the model receives the references before the tray in the declared order, both
candidates are scored exactly, MLflow records which references were shown, and a reference that is an
evaluated tray — or a rule drawing from the evaluated split — is refused before any call.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from helpers.scripted_sweeps import ROOT, write_experiment
from promptgrade.cli import app
from promptgrade.data.examples import Example
from promptgrade.sweep import Sweep
from promptgrade.testing.gemini_server import FakeGemini, RequestInfo

RUNNER = CliRunner(env={"COLUMNS": "240"})
N = 8
PLAIN, SHOWN = "meal_tray_json@1", "meal_tray_anchors@2"


def answers(examples: list[Example], references: list[str]) -> object:
    """Right categories either way; the right grade only when the references came first, in order."""
    by_sha = {e.image.sha256: e for e in examples}

    def answer(request: RequestInfo) -> str:
        example = by_sha[request.image_sha256 or ""]
        truth = example.labels.grade or 0.0
        shown_in_order = list(request.image_sha256s[:-1]) == references
        grade = truth if shown_in_order else (100.0 if truth < 50 else 0.0)
        return json.dumps({"categories": list(example.labels.categories), "food_remaining_pct": grade})

    return answer


def test_a_prompt_with_references_is_swept_beside_one_without(
    tmp_path: Path, gemini_server: FakeGemini, fake_api_key: str, tracking: str
) -> None:
    path = tmp_path / "exp.yaml"
    examples = write_experiment(
        path, name="references", base_url=gemini_server.base_url, n=N, prompts=f"{PLAIN}, {SHOWN}"
    )
    sweep = Sweep(path)
    [shown] = [c for c in sweep.prompt_candidates if c.references]
    references = [r.image.sha256 for r in shown.references]
    assert [r.grade for r in shown.references] == [0, 25, 50, 75, 100]  # one per grade point, in order
    assert not {r.id for r in shown.references} & {e.id for e in examples}  # drawn from train, not test
    gemini_server.default_answer = answers(examples, references)

    result = RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", tracking])

    assert result.exit_code == 0, result.output
    counts = sorted(len(r.image_sha256s) for r in gemini_server.requests)
    assert counts == [1] * N + [6] * N  # the tray alone, or five references and the tray
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    experiment = client.get_experiment_by_name("references")
    runs = client.search_runs([experiment.experiment_id], "tags.`promptgrade.kind` = 'candidate'")
    by_prompt = {r.data.params["prompt_name"]: r for r in runs}
    plain, anchors = by_prompt["meal_tray_json"], by_prompt["meal_tray_anchors"]
    assert plain.data.metrics["grade_accuracy"] == 0.0 and anchors.data.metrics["grade_accuracy"] == 1.0
    assert plain.data.metrics["category_accuracy"] == anchors.data.metrics["category_accuracy"] == 1.0
    assert anchors.data.params["n_references"] == "5" and "n_references" not in plain.data.params
    assert anchors.data.tags["references"] == ",".join(r.id for r in shown.references)
    record = json.loads(
        Path(client.download_artifacts(anchors.info.run_id, "references/references.json")).read_text()
    )
    assert [r["sha256"] for r in record["references"]] == references
    for entry in record["references"]:  # the bytes sent, kept for promotion
        sent = Path(
            client.download_artifacts(anchors.info.run_id, f"references/{entry['file']}")
        ).read_bytes()
        assert sent == next(r.image.data for r in shown.references if r.id == entry["id"])
    assert Path(client.download_artifacts(anchors.info.run_id, "references/sheet.jpg")).stat().st_size > 0
    rendered = Path(client.download_artifacts(anchors.info.run_id, "prompt/rendered.txt")).read_text()
    assert "[image: reference tray-0107]" in rendered and "[image: the tray to grade]" in rendered
    # the prompt's sha256 covers its references: another set would be another candidate
    assert anchors.data.params["prompt_sha256"] == shown.prompt.sha256 != shown.prompt.text_sha256

    calls = gemini_server.calls
    again = RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", tracking])
    assert again.exit_code == 0, again.output
    assert gemini_server.calls == calls  # every answer, references and all, came from the cache


def test_the_dry_run_counts_every_image(tmp_path: Path, gemini_server: FakeGemini) -> None:
    path = tmp_path / "exp.yaml"
    write_experiment(
        path, name="references", base_url=gemini_server.base_url, n=N, prompts=f"{PLAIN}, {SHOWN}"
    )
    estimates = {e.candidate.prompt.ref: e for e in Sweep(path).estimate().estimates}
    plain, shown = estimates["meal_tray_json@v1"], estimates["meal_tray_anchors@v2"]
    image = 258  # gemini-2.5, a 256-px tray (the price table's tile rule)
    assert shown.input_tokens // N - plain.input_tokens // N >= 5 * image


def template(folder: Path, name: str, body: str, references: str = "") -> None:
    (folder / name).mkdir(parents=True, exist_ok=True)
    front = f"references: {references}\n" if references else ""
    (folder / name / "v1.jinja").write_text(
        f"{{#-\ndescription: test\nstructured_output: true\n{front}-#}}\n{body}", encoding="utf-8"
    )


LOOP = "{% for ref in references %}{{ ref.grade }} {{ ref.image }}\n{% endfor %}Grade: {{ image }}\n"


@pytest.mark.parametrize(
    ("body", "references", "message"),
    [
        (LOOP, "{split: test, per_grade: [0, 100]}", "draws from split 'test', the split being evaluated"),
        (LOOP, "[{file: missing.jpg, categories: [soup], food_remaining_pct: 0}]", "missing.jpg not found"),
        (LOOP, "[{file: tray.jpg, categories: [caviar], food_remaining_pct: 0}]", "category 'caviar' is not"),
        (LOOP, "[{file: tray.jpg, categories: [soup], food_remaining_pct: 140}]", "outside 0–100"),
        (LOOP, "{split: train, per_grade: [0, 200]}", "no tray of split 'train' is within 10"),
        ("{{ ref.image }} then {{ image }}", "", "outside a {% for ref in references %} loop"),
        ("{{ image }} and again {{ image }}", "", "the tray ({{ image }}) is placed twice"),
        ("{{ image }}", "[{file: tray.jpg, categories: [soup], food_remaining_pct: 0}]", "never placed"),
    ],
    ids=[
        "rule-on-evaluated-split",
        "missing",
        "vocabulary",
        "grade-scale",
        "unsatisfiable",
        "ref-outside",
        "two-trays",
        "unplaced",
    ],
)
def test_bad_references_are_one_line_before_any_call(
    tmp_path: Path, gemini_server: FakeGemini, body: str, references: str, message: str
) -> None:
    prompts = tmp_path / "prompts"
    template(prompts, "bad", body, references)
    shutil.copy(ROOT / "data/sample/images/tray-0001.jpg", prompts / "bad" / "tray.jpg")  # a train tray
    path = tmp_path / "exp.yaml"
    write_experiment(path, name="bad", base_url=gemini_server.base_url, n=N, prompts="bad@1")
    path.write_text(path.read_text().replace(f"{ROOT}/prompts", str(prompts)), encoding="utf-8")

    result = RUNNER.invoke(app, ["sweep", str(path), "--dry-run"])

    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert str(prompts / "bad" / "v1.jinja") in " ".join(result.output.split())
    assert len(result.output.strip().splitlines()) <= 3 and "Traceback" not in result.output
    assert gemini_server.calls == 0


def test_a_reference_that_is_an_evaluated_tray_is_refused(tmp_path: Path, gemini_server: FakeGemini) -> None:
    path = tmp_path / "exp.yaml"
    examples = write_experiment(path, name="leak", base_url=gemini_server.base_url, n=N, prompts="leak@1")
    prompts = tmp_path / "prompts"
    template(prompts, "leak", LOOP, "[{file: same.jpg, id: r1, categories: [soup], food_remaining_pct: 0}]")
    evaluated = examples[3]
    source = next((ROOT / "data/sample/images").glob(f"{evaluated.id}.*"))
    shutil.copy(source, prompts / "leak" / "same.jpg")  # the very tray being scored, renamed
    path.write_text(path.read_text().replace(f"{ROOT}/prompts", str(prompts)), encoding="utf-8")

    result = RUNNER.invoke(app, ["sweep", str(path), "--dry-run"])

    assert result.exit_code == 2, result.output
    assert f"reference r1 ({prompts / 'leak' / 'same.jpg'}) is the evaluated tray {evaluated.id}" in " ".join(
        result.output.split()
    )
    assert gemini_server.calls == 0


def test_releasing_a_version_freezes_its_references(tmp_path: Path, gemini_server: FakeGemini) -> None:
    prompts = tmp_path / "prompts"
    shutil.copytree(ROOT / "prompts", prompts)
    path = tmp_path / "exp.yaml"
    write_experiment(path, name="frozen", base_url=gemini_server.base_url, n=N, prompts=SHOWN)
    path.write_text(path.read_text().replace(f"{ROOT}/prompts", str(prompts)), encoding="utf-8")
    chosen = [r.id for r in Sweep(path).prompt_candidates[0].references]  # what the rule picks today

    refused = RUNNER.invoke(app, ["prompts", "release", SHOWN, "--dir", str(prompts)])
    assert refused.exit_code == 2 and "pass --experiment FILE" in " ".join(refused.output.split())
    released = RUNNER.invoke(
        app, ["prompts", "release", SHOWN, "--dir", str(prompts), "--experiment", str(path)]
    )

    assert released.exit_code == 0, released.output
    folder = prompts / "meal_tray_anchors" / "v2"
    record = json.loads((folder / "references.json").read_text())
    assert [r["id"] for r in record["references"]] == chosen
    assert len(list((folder / "refs").iterdir())) == 5
    lock = json.loads((prompts / "released.lock").read_text())
    frozen = Sweep(path).prompt_candidates[0]
    assert lock["meal_tray_anchors"]["2"] == frozen.prompt.sha256 != frozen.prompt.text_sha256
    assert [r.id for r in frozen.references] == chosen  # the sweep now shows the frozen trays
    task = str(ROOT / "experiments/tasks/meal_tray.yaml")
    checked = RUNNER.invoke(app, ["prompts", "check", "--dir", str(prompts), "--task", task])
    assert checked.exit_code == 0, checked.output

    image = folder / record["references"][0]["file"]
    image.write_bytes(image.read_bytes() + b"\0")  # one byte more: another image, as far as hashes go
    tampered = RUNNER.invoke(app, ["prompts", "check", "--dir", str(prompts), "--task", task])
    assert tampered.exit_code == 2
    assert f"frozen reference {chosen[0]} of meal_tray_anchors@v2 has changed" in " ".join(
        tampered.output.split()
    )
