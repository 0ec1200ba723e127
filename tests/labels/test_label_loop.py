"""Given a finished sweep on trays with planted problems — a tray without a grade, trays where the
candidates disagree, a parse failure, a wrong category and a wrong grade in labels.csv — when I export
Label Studio tasks, label them, export from Label Studio and import, then the queue, the files and the
suspects are exactly those the plants call for.

One scripted sweep (four candidates against the local Gemini server) serves the whole module; every
test that writes labels works on its own copy of the labels file.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from label_studio_sdk.label_interface import LabelInterface
from typer.testing import CliRunner

from helpers.label_studio import REAL_EXPORT, ls_export
from helpers.sweeps import module_lab
from promptgrade.cli import app
from promptgrade.config import load_experiment
from promptgrade.data.loaders import load_dataset_split
from promptgrade.task import load_task
from promptgrade.testing.gemini_server import RequestInfo

ROOT = Path(__file__).resolve().parents[2]
RUNNER = CliRunner(env={"COLUMNS": "240"})
N = 12
EXPERIMENT = """\
name: label-loop
task: {root}/experiments/tasks/meal_tray.yaml
prompts_dir: {root}/prompts
prices: {root}/experiments/prices.yaml
base_url: {base_url}
dataset: {{kind: folder, path: {data}, split: test, limit: {n}, image_max_side: 256}}
prompts: [meal_tray_freetext@1, meal_tray_json@1]
models: [{{model: gemini-2.5-flash}}, {{model: gemini-2.5-flash-lite}}]
concurrency: 4
"""


@dataclass
class Loop:
    """The swept module's world: the experiment, its tracking store and which tray got which plant."""

    root: Path
    experiment: Path
    tracking: str
    ids: list[str]  # the 12 test trays, by id: E[0] … E[11]
    truth: dict[str, tuple[list[str], float]]  # what the images really show (the candidates' answers)
    wrong: dict[str, str]  # a category that is not the tray's
    labels_before: bytes  # labels.csv as planted, before any import
    best: str  # the best candidate's run name

    def E(self, i: int) -> str:
        return self.ids[i]

    def copy(self, where: Path) -> tuple[Path, Path]:
        """A private copy of the dataset (labels.csv copied, images linked) and an experiment on it."""
        data = where / "data"
        data.mkdir()
        (data / "images").symlink_to(self.root / "data" / "images")
        shutil.copy(self.root / "data" / "labels.csv", data / "labels.csv")
        experiment = where / "exp.yaml"
        experiment.write_text(
            self.experiment.read_text().replace(str(self.root / "data"), str(data)), encoding="utf-8"
        )
        return experiment, data / "labels.csv"


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory, _migrated_mlflow_db: Path) -> Iterator[Loop]:
    with module_lab(tmp_path_factory, _migrated_mlflow_db, "label-loop") as lab:
        root, server, tracking = lab.folder, lab.server, lab.tracking
        data = root / "data"
        shutil.copytree(ROOT / "data" / "sample", data)
        path = root / "exp.yaml"
        path.write_text(
            EXPERIMENT.format(root=ROOT, base_url=server.base_url, data=data, n=N), encoding="utf-8"
        )
        experiment = load_experiment(path)
        task = load_task(experiment.resolve(experiment.task))
        examples = sorted(
            load_dataset_split(experiment.dataset, task, experiment.base_dir).examples, key=lambda e: e.id
        )
        ids = [e.id for e in examples]
        truth = {e.id: (list(e.labels.categories), e.labels.grade or 0.0) for e in examples}
        wrong = {e.id: next(c for c in task.categories if c not in e.labels.categories) for e in examples}
        by_sha = {e.image.sha256: e.id for e in examples}
        E = ids

        def answer(request: RequestInfo) -> str:
            example = by_sha[request.image_sha256 or ""]
            categories, grade = truth[example]
            lite, structured = request.model.endswith("lite"), request.has_response_schema
            if example == E[5] and lite:  # E5: the lite model's two prompts name another dish
                categories = [wrong[example]]
            if example == E[8] and not lite and not structured:  # E8: one candidate disagrees
                categories = [wrong[example]]
            if lite and not structured:
                if example == E[6]:  # E6: one grade far from the others
                    grade = grade + 50 if grade <= 50 else grade - 50
                if example == E[7]:
                    return "I cannot tell what is on this tray."  # E7: a parse failure
            if structured:
                return json.dumps({"categories": categories, "food_remaining_pct": grade})
            return f"Category: {', '.join(categories)}\nFood %: {grade:g}%"

        server.default_answer = answer
        # the plants in labels.csv: E1's category and E2's grade are wrong, E3 has no grade yet
        labels = data / "labels.csv"
        rows = _rows(labels.read_text())
        for row in rows:
            if row["id"] == E[1]:
                row["categories"] = wrong[E[1]]
            if row["id"] == E[2]:
                grade = truth[E[2]][1]
                row["food_remaining_pct"] = f"{grade + 60 if grade < 40 else grade - 60:g}"
            if row["id"] == E[3]:
                row["food_remaining_pct"] = ""
        out = io.StringIO(newline="")
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        labels.write_text(out.getvalue(), encoding="utf-8")

        result = RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", tracking])
        assert result.exit_code == 0, result.output
        best = next(
            line.split("best by category_accuracy: ")[1].split(" (run")[0]
            for line in result.output.splitlines()
            if "best by" in line
        )
        yield Loop(root, path, tracking, ids, truth, wrong, labels.read_bytes(), best)


def _export(loop: Loop, where: Path, experiment: Path | None = None, *extra: str) -> tuple[list[dict], str]:
    out, config = where / "tasks.json", where / "label_config.xml"
    result = RUNNER.invoke(
        app,
        [
            "label",
            "export",
            str(experiment or loop.experiment),
            "--out",
            str(out),
            "--config",
            str(config),
            "--tracking-uri",
            loop.tracking,
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), config.read_text()


def test_export_is_accepted_by_label_studios_own_library(loop: Loop, tmp_path: Path) -> None:
    tasks, config = _export(loop, tmp_path)
    interface = LabelInterface(config)
    interface.validate()  # raises on an invalid config
    categories = interface.get_control("categories")
    task = load_task(ROOT / "experiments/tasks/meal_tray.yaml")
    assert list(categories.labels) == list(task.categories) and categories.is_multiple_choice
    grade = interface.get_control("food_remaining_pct")
    assert grade.to_json_schema()["minimum"] == 0 and grade.to_json_schema()["maximum"] == 100
    assert len(tasks) == N
    for item in tasks:
        for tag in interface.objects:  # every $variable of the config is in the task's data
            assert item["data"].get(tag.value_name) is not None, (tag.value_name, item["data"])
        for prediction in item.get("predictions", []):
            assert interface.validate_prediction(prediction, return_errors=True) == []
        assert item["data"]["image"].startswith("/data/local-files/?d=images/")
    assert sum(1 for t in tasks if t.get("predictions")) == N  # the best candidate answered every tray
    # the SDK's check is not vacuous: it refuses what the config does not allow
    bad = json.loads(json.dumps(tasks[0]["predictions"][0]))
    bad["result"][0]["value"]["choices"] = ["not a dish"]
    assert interface.validate_prediction(bad, return_errors=True)


def test_queue_puts_missing_labels_then_the_planted_disagreements_first(loop: Loop, tmp_path: Path) -> None:
    tasks, _ = _export(loop, tmp_path)
    order = [t["data"]["example_id"] for t in tasks]
    E = loop.E
    assert order[:7] == [E(3), E(5), E(6), E(8), E(7), E(1), E(2)]
    tiers = [t["data"]["priority"] for t in tasks]
    assert (
        tiers[:7]
        == ["unlabelled", "disagreement", "disagreement", "disagreement", "parse_failures"]
        + ["agreement"] * 2
    )
    assert order[7:] == sorted(set(loop.ids) - set(order[:7]))
    first_labelled = tasks[1]["data"]
    assert first_labelled["reason"].startswith("#2 disagreement: candidates disagree:")
    assert [t["data"]["rank"] for t in tasks] == list(range(1, N + 1))
    assert "against the label" in tasks[5]["data"]["reason"]
    e5 = tasks[1]["predictions"][0]
    assert e5["model_version"] == loop.best and e5["score"] == 0.5  # 2 of 4 candidates name its dish
    assert e5["result"][0]["value"]["choices"] == loop.truth[E(5)][0]
    limited, _ = _export(loop, tmp_path, None, "--limit", "2")
    assert [t["data"]["example_id"] for t in limited] == [E(3), E(5)]


def test_export_can_embed_images(loop: Loop, tmp_path: Path) -> None:
    tasks, _ = _export(loop, tmp_path, None, "--embed", "--limit", "1")
    assert tasks[0]["data"]["image"].startswith("data:image/jpeg;base64,")


def test_crafted_exports_have_the_real_exports_shape() -> None:
    [real] = json.loads(REAL_EXPORT.read_text(encoding="utf-8"))
    [crafted] = ls_export([{"data": real["data"], "predictions": [{}]}], {real["data"]["example_id"]: [{}]})
    assert set(crafted) == set(real)
    assert set(crafted["annotations"][0]) == set(real["annotations"][0])
    assert [set(r) for r in real["annotations"][0]["result"]] == [
        {"from_name", "to_name", "type", "value", "origin"}
    ] * 2


def _import(experiment: Path, export: list[dict[str, Any]], where: Path, *extra: str) -> Any:
    path = where / "export.json"
    path.write_text(json.dumps(export), encoding="utf-8")
    return RUNNER.invoke(app, ["label", "import", str(experiment), str(path), *extra])


def test_a_label_studio_export_imports_exactly_the_intended_changes(loop: Loop, tmp_path: Path) -> None:
    experiment, labels = loop.copy(tmp_path)
    tasks, config = _export(loop, tmp_path, experiment)
    E, truth = loop.E, loop.truth
    export = ls_export(
        tasks,
        {
            E(3): [{"categories": truth[E(3)][0], "grade": 35}],  # a grade added
            E(1): [{"categories": truth[E(1)][0]}],  # the wrong category corrected, grade left as is
            E(2): [{"categories": truth[E(2)][0], "grade": truth[E(2)][1]}],  # the wrong grade corrected
            E(5): [{"categories": truth[E(5)][0], "grade": truth[E(5)][1]}],  # confirmed: unchanged
            E(9): [{"categories": [loop.wrong[E(9)]], "grade": 5, "cancelled": True}],  # skipped: ignored
        },
    )
    interface = LabelInterface(config)
    for item in export:  # the crafted annotations are valid for the exported config, by the SDK's rules
        for annotation in item["annotations"]:
            assert interface.validate_annotation(annotation)
    before = labels.read_bytes()
    dry = _import(experiment, export, tmp_path, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "dry run: 1 added, 2 changed, 1 unchanged; nothing written" in " ".join(dry.output.split())
    assert labels.read_bytes() == before and not labels.with_name("labels.csv.bak").exists()

    done = _import(experiment, export, tmp_path)
    assert done.exit_code == 0, done.output
    text = " ".join(done.output.split())
    assert "1 added, 2 changed, 1 unchanged" in text
    assert (
        f"task {1000 + [t['data']['example_id'] for t in tasks].index(E(9))} (example '{E(9)}'): no annotation"
        in text
    )
    assert labels.with_name("labels.csv.bak").read_bytes() == before  # the previous file, kept
    history = labels.with_name("labels.csv.history")
    assert [p.read_bytes() for p in history.glob("*.csv")] == [before]
    [record] = [json.loads(line) for line in (history / "imports.jsonl").read_text().splitlines()]
    assert {c["example_id"]: c["kind"] for c in record["changes"]} == {
        E(3): "added",
        E(1): "changed",
        E(2): "changed",
    }

    old, new = _rows(before.decode()), _rows(labels.read_text())
    assert [(r["id"], r["file"], r["split"]) for r in old] == [(r["id"], r["file"], r["split"]) for r in new]
    changed = {o["id"]: (o, n) for o, n in zip(old, new, strict=True) if o != n}
    assert set(changed) == {E(1), E(2), E(3)}
    assert changed[E(3)][1]["food_remaining_pct"] == "35"
    assert changed[E(1)][1]["categories"] == ";".join(truth[E(1)][0])
    assert changed[E(1)][1]["food_remaining_pct"] == changed[E(1)][0]["food_remaining_pct"]
    assert float(changed[E(2)][1]["food_remaining_pct"]) == truth[E(2)][1]
    # every other line is byte-identical
    assert (
        sum(
            a != b for a, b in zip(before.decode().splitlines(), labels.read_text().splitlines(), strict=True)
        )
        == 3
    )
    # importing the same export again changes nothing and writes nothing
    again = _import(experiment, export, tmp_path)
    assert again.exit_code == 0 and "nothing to write" in again.output
    assert len(list(history.glob("*.csv"))) == 1


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("from_name", "unknown from_name 'label'"),
        ("category", "category 'pizza' is not in task 'meal_tray'"),
        ("too_many", "3 categories chosen; task 'meal_tray' allows at most 2"),
        ("grade", "food_remaining_pct 140 is outside the task's scale [0, 100]"),
        ("not_a_number", "food_remaining_pct 'lots' is not a number"),
        ("annotators", "annotators disagree (user 1: "),
        ("changed_on_disk", "labels.csv changed on disk since the export"),
    ],
)
def test_bad_input_is_one_line_with_task_and_example_and_nothing_is_written(
    loop: Loop, tmp_path: Path, case: str, message: str
) -> None:
    experiment, labels = loop.copy(tmp_path)
    tasks, _ = _export(loop, tmp_path, experiment)
    E = loop.E
    target = E(4)
    right = loop.truth[target][0]
    spec: list[dict[str, Any]] = {
        "from_name": [{"categories": right, "from_name": "label"}],
        "category": [{"categories": ["pizza"]}],
        "too_many": [
            {"categories": [*right, loop.wrong[target], "snack" if "snack" not in right else "soup"][:3]}
        ],
        "grade": [{"categories": right, "grade": 140}],
        "not_a_number": [{"categories": right, "grade": "lots"}],
        "annotators": [
            {"categories": right, "grade": 10, "by": 1, "at": "2026-12-02T01:30:00Z"},
            {"categories": right, "grade": 90, "by": 2, "at": "2026-12-02T01:40:00Z"},
        ],
        "changed_on_disk": [{"categories": right, "grade": 50}],
    }[case]
    if case == "too_many" and len(set(spec[0]["categories"])) < 3:
        spec[0]["categories"] = [c for c in ("soup", "stew", "curry", "snack") if c not in right][:3]
    export = ls_export(tasks, {target: spec, E(6): [{"categories": loop.truth[E(6)][0], "grade": 1}]})
    if case == "changed_on_disk":  # someone edits the same row after the export: grade 77
        lines = labels.read_text().splitlines(keepends=True)
        row = next(i for i, line in enumerate(lines) if line.startswith(f"{target},"))
        lines[row] = lines[row].rsplit(",", 2)[0] + ",77,test\n"
        labels.write_text("".join(lines))
    before = labels.read_bytes()
    result = _import(experiment, export, tmp_path)
    assert result.exit_code == 2, result.output
    task_id = 1000 + [t["data"]["example_id"] for t in tasks].index(target)
    [line] = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: task {task_id} (example '{target}'): ") and message in line, line
    assert line.endswith("nothing written") and "Traceback" not in result.output
    assert labels.read_bytes() == before and not labels.with_name("labels.csv.bak").exists()


def test_a_task_not_made_by_label_export_is_refused(loop: Loop, tmp_path: Path) -> None:
    experiment, labels = loop.copy(tmp_path)
    tasks, _ = _export(loop, tmp_path, experiment)
    export = ls_export(tasks[:1], {tasks[0]["data"]["example_id"]: [{"grade": 5}]})
    del export[0]["data"]["example_id"]
    result = _import(experiment, export, tmp_path)
    assert result.exit_code == 2
    assert "error: task 1000: no data.example_id: this task was not made by `promptgrade label export`" in (
        " ".join(result.output.split())
    )
    assert labels.read_bytes() == loop.labels_before


def test_annotators_disagreeing_latest_wins_only_when_asked(loop: Loop, tmp_path: Path) -> None:
    experiment, labels = loop.copy(tmp_path)
    tasks, _ = _export(loop, tmp_path, experiment)
    target = loop.E(4)
    right = loop.truth[target][0]
    export = ls_export(
        tasks,
        {
            target: [
                {"categories": right, "grade": 90, "by": 2, "at": "2026-12-02T01:40:00Z"},
                {"categories": right, "grade": 10, "by": 1, "at": "2026-12-02T01:30:00Z"},
            ]
        },
    )
    result = _import(experiment, export, tmp_path, "--prefer", "latest")
    assert result.exit_code == 0, result.output
    assert "latest wins: user 2" in " ".join(result.output.split())
    row = next(r for r in _rows(labels.read_text()) if r["id"] == target)
    assert row["food_remaining_pct"] == "90"


def test_unknown_ids_are_reported_not_added_and_other_rows_edited_since_export_are_fine(
    loop: Loop, tmp_path: Path
) -> None:
    experiment, labels = loop.copy(tmp_path)
    tasks, _ = _export(loop, tmp_path, experiment)
    E = loop.E
    stranger = json.loads(json.dumps(tasks[-1]))
    stranger["data"]["example_id"] = "tray-9999"
    export = ls_export(
        [*tasks, stranger],
        {
            E(4): [{"categories": loop.truth[E(4)][0], "grade": 3}],
            "tray-9999": [{"categories": ["soup"], "grade": 3}],
        },
    )
    # another row (not in this import) is edited after the export: the hash differs, the merge is safe
    lines = labels.read_text().splitlines(keepends=True)
    edited = next(i for i, line in enumerate(lines) if line.startswith(E(11) + ","))
    lines[edited] = lines[edited].rsplit(",", 2)[0] + ",1,test\n"
    labels.write_text("".join(lines))
    result = _import(experiment, export, tmp_path)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"task {1000 + N} (example 'tray-9999'): unknown example id: not in labels.csv, not added" in text
    assert "changed on disk since the export; the rows this import touches did not" in text
    ids = [r["id"] for r in _rows(labels.read_text())]
    assert "tray-9999" not in ids and len(ids) == len(_rows(loop.labels_before.decode()))
    assert next(r for r in _rows(labels.read_text()) if r["id"] == E(4))["food_remaining_pct"] == "3"


def test_suspects_finds_the_planted_wrong_labels(loop: Loop, tmp_path: Path) -> None:
    out = tmp_path / "suspects.json"
    result = RUNNER.invoke(
        app,
        ["label", "suspects", str(loop.experiment), "--json", str(out), "--tracking-uri", loop.tracking],
    )
    assert result.exit_code == 0, result.output
    found = json.loads(out.read_text())
    E = loop.E
    assert found[0]["example_id"] == E(1) and found[0]["field"] == "categories"
    assert found[0]["flagged_by"] == ["cleanlab", "unanimous"]
    assert found[0]["label"] == loop.wrong[E(1)]
    assert {(s["example_id"], s["field"]) for s in found if "unanimous" in s["flagged_by"]} == {
        (E(1), "categories"),
        (E(2), "food_remaining_pct"),
    }
    assert E(1) in result.output and E(2) in result.output


def test_run_and_latest_together_is_one_line(loop: Loop, tmp_path: Path) -> None:
    result = RUNNER.invoke(
        app,
        [
            "label",
            "export",
            str(loop.experiment),
            "--run",
            "x",
            "--latest",
            "--out",
            str(tmp_path / "t.json"),
        ],
    )
    assert result.exit_code == 2 and "pass --run or --latest, not both" in result.output


def test_grades_go_to_a_separate_grades_csv_for_known_examples_only(loop: Loop, tmp_path: Path) -> None:
    """A hub dataset's grades live in a CSV `id,<grade>` that need not have a row per example yet."""
    experiment, labels = loop.copy(tmp_path)
    tasks, _ = _export(loop, tmp_path, experiment)
    grades = tmp_path / "grades.csv"
    grades.write_text(f"id,food_remaining_pct\n{loop.E(0)},10\n", encoding="utf-8")
    stranger = json.loads(json.dumps(tasks[-1]))
    stranger["data"]["example_id"] = "tray-9999"
    E = loop.E
    export = ls_export(
        [*tasks, stranger],
        {
            E(0): [{"categories": [loop.wrong[E(0)]], "grade": 20}],
            E(4): [{"categories": loop.truth[E(4)][0], "grade": 3}],
            "tray-9999": [{"grade": 3}],
        },
    )
    result = _import(experiment, export, tmp_path, "--labels", str(grades))
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "grades.csv has no categories column: only grades are written" in text
    assert "unknown example id: not in grades.csv nor the dataset, not added" in text
    assert "1 added, 1 changed, 0 unchanged" in text
    assert _rows(grades.read_text()) == [
        {"id": E(0), "food_remaining_pct": "20"},
        {"id": E(4), "food_remaining_pct": "3"},
    ]
    assert labels.read_bytes() == loop.labels_before  # the dataset's own labels are not touched


def test_the_real_label_studio_export_imports_as_it_is(loop: Loop, tmp_path: Path) -> None:
    """The kept export, byte for byte as Label Studio wrote it, into a file where its tray has no grade."""
    experiment, labels = loop.copy(tmp_path)
    [real] = json.loads(REAL_EXPORT.read_text(encoding="utf-8"))
    example = real["data"]["example_id"]
    lines = labels.read_text().splitlines(keepends=True)
    row = next(i for i, line in enumerate(lines) if line.startswith(f"{example},"))
    fields = lines[row].rstrip("\n").split(",")
    assert fields[2] == ";".join(real["data"]["current_categories"])
    lines[row] = ",".join([*fields[:3], "", fields[4]]) + "\n"  # as in the labels file it was exported from
    labels.write_text("".join(lines))
    export = tmp_path / "real-export.json"
    shutil.copy(REAL_EXPORT, export)
    result = RUNNER.invoke(app, ["label", "import", str(experiment), str(export)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "1 added, 0 changed, 0 unchanged" in text
    assert "changed on disk since the export; the rows this import touches did not" in text
    assert next(r for r in _rows(labels.read_text()) if r["id"] == example)["food_remaining_pct"] == "85"
