"""The user's story: given a prompt that shows two graded reference trays (0 and 100) and grades badly,
when I run `promptgrade optimize --references 1`, then besides the reflection model's rewrites the
search tries other choices of training trays as references, finds the set the model needs (an anchor at
50 between the two), writes it as the next unreleased version with those trays frozen beside it, and
a sweep of that version sends exactly the references the search measured — never a tray of the
evaluation split.

The local Gemini server plays the task model (the grade right only when the trays shown before the
tray are graded 0, 50, 100, in that order) and the reflection model (one scripted rewrite).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner, Result

from helpers.provider_servers import serve
from helpers.scripted_sweeps import ROOT, write_experiment
from promptgrade.cli import app
from promptgrade.config import load_experiment
from promptgrade.data.examples import LoadedDataset
from promptgrade.data.loaders import load_dataset_split
from promptgrade.errors import DatasetError
from promptgrade.optimize.proposals import check_proposal
from promptgrade.optimize.reference_changes import ReferenceMoves
from promptgrade.optimize.search import Optimization, Options
from promptgrade.prompts import PromptLibrary
from promptgrade.task import load_task
from promptgrade.testing.gemini_server import FakeGemini, RequestInfo
from promptgrade.testing.planted import PlantedReferences, ScriptedProposals, Truth, fenced

RUNNER = CliRunner(env={"COLUMNS": "200"})
N = 8
REFLECTION_MODEL = "gemini-2.5-pro"
WANTED = (0.0, 50.0, 100.0)
TWO_ANCHORS = "{split: train, per_grade: [0, 100], seed: 7}"
FRONT = "{{#-\ndescription: {description}\nstructured_output: true\nreferences: {references}\n-#}}\n"
BODY = """\
You grade airline meal trays photographed after the meal.
{% for ref in references %}
Reference {{ loop.index }}: {{ ref.categories | join("; ") }}, {{ grade.name }} = {{ ref.grade | int }}
{{ ref.image }}
{% endfor %}
Now the tray to grade:
{{ image }}
Name up to {{ max_categories }} dish categories from: {{ categories | join("; ") }}.
Return only a JSON object: {"categories": [...], "{{ grade.name }}": <number>}.
"""
REWORDED = BODY.replace("photographed after the meal", "photographed once the passenger has left")
ARGS = ["--reflection-model", REFLECTION_MODEL, "--metric", "grade_accuracy", "--minibatch", str(N)]


def experiment_with(tmp: Path, server: FakeGemini, templates: dict[str, str]) -> Path:
    """The sample set's experiment (evaluated on 'test'), its prompts folder a copy holding ``templates``
    (name → rule or list of references) besides the shipped ones."""
    prompts = tmp / "prompts"
    if not prompts.exists():
        shutil.copytree(ROOT / "prompts", prompts)
    for name, references in templates.items():
        (prompts / name).mkdir(exist_ok=True)
        text = FRONT.format(description=f"{name} - graded anchors", references=references) + BODY
        (prompts / name / "v1.jinja").write_text(text, encoding="utf-8")
    path = tmp / "exp.yaml"
    write_experiment(path, name="optimize-references", base_url=server.base_url, n=N, prompts="anchors@1")
    path.write_text(path.read_text().replace(f"{ROOT}/prompts", str(prompts)), encoding="utf-8")
    return path


def full_split(experiment: Path, split: str) -> LoadedDataset:
    loaded = load_experiment(experiment)
    task = load_task(loaded.resolve(loaded.task))
    config = loaded.dataset.model_copy(update={"limit": None})
    return load_dataset_split(config, task, loaded.base_dir, split=split)


def split_truth(experiment: Path, split: str) -> Truth:
    examples = full_split(experiment, split).examples
    return {e.image.sha256: (e.labels.categories, e.labels.grade or 0.0) for e in examples}


def optimize(tmp: Path) -> Result:
    """The search under test, on the experiment in ``tmp`` with its MLflow store and answer cache there."""
    args = ["optimize", str(tmp / "exp.yaml"), "--prompt", "anchors@1", *ARGS, "--references", "1"]
    args += ["--candidates", "1", "--cache", str(tmp / "cache.sqlite")]
    return RUNNER.invoke(app, [*args, "--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}"])


@dataclass
class Searched:
    """What the module's one search left behind: its folder (prompts, MLflow store, answer cache)."""

    tmp: Path
    server: FakeGemini
    truth: dict[str, Truth]  # split → image sha256 → labels
    result: Result
    requests: list[RequestInfo]

    @property
    def experiment(self) -> Path:
        return self.tmp / "exp.yaml"

    @property
    def tracking(self) -> str:
        return f"sqlite:///{self.tmp / 'mlflow.db'}"


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, _migrated_mlflow_db: Path) -> Iterator[Searched]:
    """One search from two anchors (0, 100), end to end through the CLI."""
    tmp = tmp_path_factory.mktemp("optimize-references")
    shutil.copy(_migrated_mlflow_db, tmp / "mlflow.db")
    with pytest.MonkeyPatch.context() as env, serve("gemini", monkeypatch=env) as (gemini,):
        server = gemini.server
        assert isinstance(server, FakeGemini)
        experiment = experiment_with(tmp, server, {"anchors": TWO_ANCHORS})
        truth = {split: split_truth(experiment, split) for split in ("train", "validation", "test")}
        server.default_answer = PlantedReferences(
            truth["train"] | truth["validation"] | truth["test"], WANTED
        )
        server.model_answers[REFLECTION_MODEL] = ScriptedProposals([fenced(REWORDED)])
        result = optimize(tmp)
        yield Searched(tmp, server, truth, result, list(server.requests))


def shown_grades(searched: Searched, request: RequestInfo) -> list[float]:
    return [searched.truth["train"][sha][1] for sha in request.image_sha256s[:-1]]


def first_search(searched: Searched) -> dict[str, Any]:
    """The first search's runs (a re-run logs another): ``run`` and each proposal's, by proposal id."""
    client = MlflowClient(tracking_uri=searched.tracking)
    experiment = client.get_experiment_by_name("optimize-references").experiment_id
    query = "tags.`promptgrade.kind` = 'proposal'"
    proposals = client.search_runs([experiment], query, order_by=["attributes.start_time ASC"])
    parent = proposals[0].data.tags["mlflow.parentRunId"]
    first = [p for p in proposals if p.data.tags["mlflow.parentRunId"] == parent]
    return {"run": client.get_run(parent), **{p.data.tags["proposal"]: p for p in first}}


def test_the_search_finds_the_reference_set_and_writes_it_frozen(searched: Searched) -> None:
    assert searched.result.exit_code == 0, searched.result.output
    assert "wrote anchors@2" in searched.result.output, searched.result.output
    library = PromptLibrary(searched.tmp / "prompts")
    written = library.get("anchors", 2)
    assert not (searched.tmp / "prompts" / "anchors" / "v3.jinja").exists()
    assert [r.grade for r in written.references] == list(WANTED)
    train_ids = {e.id for e in full_split(searched.experiment, "train").examples}
    assert {r.id for r in written.references} <= train_ids
    frozen = json.loads((searched.tmp / "prompts/anchors/v2/references.json").read_text())
    assert [r["id"] for r in frozen["references"]] == [r.id for r in written.references]
    assert written.body == library.get("anchors", 1).body  # a reference change keeps the template
    meta = written._front_matter[0]
    assert meta["parent"] == "anchors@1" and meta["references_from"] == "train"
    [change] = meta["changes"]
    added = written.references[1]
    assert (
        change == f"p2: one more reference: {added.id} ({'; '.join(added.categories)}, food_remaining_pct 50)"
    )
    assert [r["file"] for r in meta["references"]] == [f"v2/{r['file']}" for r in frozen["references"]]
    assert "grade_accuracy 0.0% → 100.0% on 8 validation examples" in meta["description"]
    assert (
        "wrote anchors@2" in searched.result.output
        and "3 references frozen beside it" in searched.result.output
    )
    assert "anchors@v1 shows 2 references" in searched.result.output


def test_every_request_shows_references_from_the_training_split_and_no_test_tray(searched: Searched) -> None:
    task_requests = [r for r in searched.requests if r.model != REFLECTION_MODEL]
    test_images = set(searched.truth["test"])
    assert task_requests and not {s for r in task_requests for s in r.image_sha256s} & test_images
    for request in task_requests:  # a rewrite keeps its parent's references: none is sent without
        assert len(request.image_sha256s) >= 3
        assert set(request.image_sha256s[:-1]) <= set(searched.truth["train"])
        assert request.image_sha256 not in request.image_sha256s[:-1]  # a tray shown is not graded
    seen = {tuple(shown_grades(searched, r)) for r in task_requests}
    assert (0.0, 100.0) in seen and WANTED in seen


def test_mlflow_records_each_proposals_references_and_what_changed(searched: Searched) -> None:
    runs = first_search(searched)
    start, rewrite, change = runs["p0"], runs["p1"], runs["p2"]
    library = PromptLibrary(searched.tmp / "prompts")
    ids = ",".join(r.id for r in library.get("anchors", 2).references)
    assert change.data.tags["references"] == ids and change.data.params["n_references"] == "3"
    assert change.data.tags["change"].startswith("one more reference: ")
    assert change.data.tags["written_as"] == "anchors@2" and change.data.metrics["grade_accuracy"] == 1.0
    assert rewrite.data.tags["references"] == start.data.tags["references"]  # the rewrite kept them
    assert rewrite.data.tags["change"] == "instruction rewritten by the reflection model"
    assert rewrite.data.tags["proposal_status"] == "not_better"
    assert start.data.params["n_references"] == "2"
    run = runs["run"]
    assert run.data.params["start_references"] == start.data.tags["references"]
    assert run.data.params["reference_changes"] == "1"
    client = MlflowClient(tracking_uri=searched.tracking)
    lineage = json.loads(Path(client.download_artifacts(run.info.run_id, "lineage.json")).read_text())
    nodes = {n["id"]: n for n in lineage["nodes"]}
    assert ",".join(nodes["p2"]["references"]) == ids and nodes["p2"]["parent"] == "p0"


def test_the_same_command_again_buys_nothing_and_writes_nothing_new(searched: Searched) -> None:
    before = searched.server.calls
    again = optimize(searched.tmp)
    assert again.exit_code == 0, again.output
    assert searched.server.calls == before and "0 API calls" in again.output
    assert "p2 is anchors@2, written by an earlier run of this search" in again.output
    assert not (searched.tmp / "prompts" / "anchors" / "v3.jinja").exists()


def test_the_written_version_passes_check_and_a_sweep_sends_what_was_measured(
    searched: Searched, tracking: str
) -> None:
    prompts = searched.tmp / "prompts"
    task = ROOT / "experiments/tasks/meal_tray.yaml"
    checked = RUNNER.invoke(app, ["prompts", "check", "--dir", str(prompts), "--task", str(task)])
    assert checked.exit_code == 0, checked.output
    measured = {r.image_sha256s[:-1] for r in searched.requests if shown_grades(searched, r) == list(WANTED)}
    assert len(measured) == 1
    sweep = searched.tmp / "sweep.yaml"
    sweep.write_text(searched.experiment.read_text().replace("anchors@1", "anchors@2"), encoding="utf-8")
    calls = searched.server.calls
    swept = RUNNER.invoke(app, ["sweep", str(sweep), "--tracking-uri", tracking])
    assert swept.exit_code == 0, swept.output
    sent = searched.server.requests[calls:]
    assert len(sent) == N and {r.image_sha256s[:-1] for r in sent} == measured  # byte for byte
    assert {r.image_sha256 for r in sent} <= set(searched.truth["test"])
    client = MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name("optimize-references")
    [run] = client.search_runs([experiment.experiment_id], "tags.`promptgrade.kind` = 'candidate'")
    assert run.data.metrics["grade_accuracy"] == 1.0 and run.data.params["n_references"] == "3"


@pytest.fixture
def server(fake_api_key: str) -> Iterator[FakeGemini]:
    with FakeGemini() as started:
        yield started


def refused(experiment: Path, prompt: str) -> Result:
    args = ["optimize", str(experiment), "--prompt", prompt, *ARGS, "--references", "1", "--dry-run"]
    return RUNNER.invoke(app, args)


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("meal_tray_json@1", "--references: meal_tray_json@v1 places no reference images"),
        (
            "fromtest@1",
            "draws its references from split 'test'; optimize draws references only from the training",
        ),
        ("fromvalidation@1", "draws its references from split 'validation'; optimize draws references only"),
    ],
    ids=["no-placement", "rule-on-the-test-split", "rule-on-the-scored-split"],
)
def test_bad_input_is_one_line_before_any_call(
    tmp_path: Path, server: FakeGemini, prompt: str, message: str
) -> None:
    rules = {
        "anchors": TWO_ANCHORS,
        "fromtest": "{split: test, per_grade: [0, 100]}",
        "fromvalidation": "{split: validation, per_grade: [0]}",
    }
    experiment = experiment_with(tmp_path, server, rules)
    result = refused(experiment, prompt)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert len(result.output.strip().splitlines()) <= 3 and "Traceback" not in result.output
    assert server.calls == 0


def test_reference_changes_need_a_validation_split_to_score_on(tmp_path: Path, server: FakeGemini) -> None:
    experiment = experiment_with(tmp_path, server, {"anchors": TWO_ANCHORS})
    options = Options(
        prompt="anchors@1", reflection_model=REFLECTION_MODEL, references=1, validation_split=""
    )
    with pytest.raises(DatasetError, match="--references needs a validation split"):
        Optimization(experiment, options)
    assert server.calls == 0


def test_reference_changes_are_seeded_and_each_parent_takes_the_steps_in_turn(
    tmp_path: Path, server: FakeGemini
) -> None:
    experiment = experiment_with(tmp_path, server, {"anchors": TWO_ANCHORS})
    search = Optimization(
        experiment, Options(prompt="anchors@1", reflection_model=REFLECTION_MODEL, references=1)
    )
    start = search.start.references
    assert [r.grade for r in start] == [0, 100]

    train = full_split(experiment, "train")

    def draws(seed: int) -> list[tuple[str, ...]]:
        moves = ReferenceMoves(train, search.task, max_references=5, seed=seed)
        changes = [moves.propose("p0", start, set()) for _ in range(4)]
        return [tuple(r.id for r in change.references) for change in changes if change is not None]

    first = draws(0)
    assert first == draws(0) and any(draws(seed) != first for seed in range(1, 6))
    assert [len(ids) for ids in first] == [3, 2, 2, 1]  # one more, a swap, both re-drawn, one fewer
    assert not set(first[2]) & {r.id for r in start}
    assert search.bound().references_per_round == 1 and search.bound().reference_calls == 2 * N + N


def test_a_rewrite_may_place_the_images_and_is_checked_with_its_parents_references(
    tmp_path: Path, server: FakeGemini
) -> None:
    experiment = experiment_with(tmp_path, server, {"anchors": TWO_ANCHORS})
    parent = Optimization(experiment, Options(prompt="anchors@1", reflection_model=REFLECTION_MODEL)).start
    task = load_task(ROOT / "experiments/tasks/meal_tray.yaml")

    def check(body: str) -> str | None:
        options = {"forbidden": set(), "seen": {}, "max_chars": 4000}
        return check_proposal(fenced(body), parent, task, structured_output=True, **options).reason  # type: ignore[arg-type]

    assert len(parent.references) == 2 and check(REWORDED) is None  # `references` and `image` are known
    assert (check(REWORDED.replace("{{ ref.image }}\n", "")) or "").startswith("unrenderable: reference(s)")
    assert (check(REWORDED.replace("{{ image }}", "{{ image }} {{ image }}")) or "").startswith(
        "unrenderable: the tray ({{ image }}) is placed twice"
    )
    assert server.calls == 0


def test_the_categories_a_prompt_missed_are_counted_from_its_answered_trays() -> None:
    """Most often missed first, ties by name; a category the answer named is not missed, and an answer
    that did not parse says nothing about which dish the model could not see."""
    from promptgrade.optimize.reference_changes import missed_categories
    from promptgrade.scoring import Outcome

    def answered(true: tuple[str, ...], said: tuple[str, ...], status: str = "ok") -> Outcome:
        return Outcome(
            example_id="x", status=status, true_categories=true, true_grade=0.0, predicted_categories=said
        )

    outcomes = [
        answered(("soup", "salad"), ("salad",)),
        answered(("rice dish",), ("soup",)),
        answered(("soup",), ()),
        answered(("dessert",), (), status="parse_failure"),
        answered(("salad",), ("salad",)),
    ]
    assert missed_categories(outcomes) == ("soup", "rice dish")
    assert missed_categories([]) == ()


def test_a_category_the_parent_missed_is_shown_first_added_or_in_place_of_the_nearest_grade(
    tmp_path: Path, server: FakeGemini
) -> None:
    """The first reference change from a parent that missed a dish no reference shows is a training tray
    of that dish (seeded); with the references at their most, it takes the place of the reference
    nearest its grade; a missed dish a reference already shows leaves the step to the next one."""
    experiment = experiment_with(tmp_path, server, {"anchors": TWO_ANCHORS})
    search = Optimization(
        experiment, Options(prompt="anchors@1", reflection_model=REFLECTION_MODEL, references=1)
    )
    start = search.start.references
    train = full_split(experiment, "train")
    shown = {c for r in start for c in r.categories}
    unseen = sorted({c for e in train.examples for c in e.labels.categories} - shown)
    assert unseen, "the sample set's training split has dishes the two anchors do not show"
    missed = (unseen[0], *sorted(shown))

    def first(max_references: int, missed: tuple[str, ...], seed: int = 0) -> Any:
        moves = ReferenceMoves(train, search.task, max_references=max_references, seed=seed)
        return moves.propose("p0", start, set(), missed)

    added = first(5, missed)
    [new] = [r for r in added.references if r.id not in {s.id for s in start}]
    assert unseen[0] in new.categories and len(added.references) == 3
    assert [r.grade for r in added.references] == sorted(r.grade or 0.0 for r in added.references)
    assert added.change.startswith(f"one more reference, a tray of the missed category {unseen[0]}: {new.id}")
    assert first(5, missed).references == added.references  # seeded

    swapped = first(2, missed)
    assert len(swapped.references) == 2 and unseen[0] in {c for r in swapped.references for c in r.categories}
    [kept] = [r for r in start if r in swapped.references]
    [replaced] = [r for r in start if r is not kept]
    incoming = next(r for r in swapped.references if r is not kept)
    assert abs((replaced.grade or 0.0) - (incoming.grade or 0.0)) <= abs(
        (kept.grade or 0.0) - (incoming.grade or 0.0)
    )
    assert swapped.change.startswith(f"reference {replaced.id} → a tray of the missed category {unseen[0]}")

    already = first(5, tuple(sorted(shown)))
    assert already.change.startswith("one more reference: ")  # the grade gap's step, as with nothing missed


def test_a_search_shows_the_dish_its_prompt_missed_and_writes_that_version(
    tmp_path: Path, server: FakeGemini, _migrated_mlflow_db: Path
) -> None:
    """A task model that names only the dishes its reference trays show: from two anchors, the search's
    reference change adds a training tray of the dish the start missed most on its minibatch, which
    names more dishes right on the validation split, and is written with that tray frozen beside it."""
    shutil.copy(_migrated_mlflow_db, tmp_path / "mlflow.db")
    experiment = experiment_with(tmp_path, server, {"anchors": TWO_ANCHORS})
    truth = {split: split_truth(experiment, split) for split in ("train", "validation", "test")}
    everything = truth["train"] | truth["validation"] | truth["test"]
    server.default_answer = PlantedReferences(everything, (0.0, 100.0), dishes_from_references=True)
    server.model_answers[REFLECTION_MODEL] = ScriptedProposals([fenced(REWORDED)])
    args = ["optimize", str(experiment), "--prompt", "anchors@1", "--reflection-model", REFLECTION_MODEL]
    args += ["--metric", "category_accuracy", "--minibatch", str(N), "--references", "1", "--candidates", "1"]
    args += ["--max-rounds", "1", "--cache", str(tmp_path / "cache.sqlite")]
    result = RUNNER.invoke(app, [*args, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])

    assert result.exit_code == 0, result.output
    assert "wrote anchors@2" in result.output, result.output
    library = PromptLibrary(tmp_path / "prompts")
    start, written = library.get("anchors", 1), library.get("anchors", 2)
    [change] = written._front_matter[0]["changes"]
    assert change.startswith("p2: one more reference, a tray of the missed category "), change
    dish = change.split("missed category ", 1)[1].split(":", 1)[0]
    shown_before = {
        c
        for r in Optimization(experiment, Options(prompt="anchors@1")).start.references
        for c in r.categories
    }
    assert dish not in shown_before
    assert len(written.references) == 3 and dish in {c for r in written.references for c in r.categories}
    assert {r.id for r in written.references} <= {e.id for e in full_split(experiment, "train").examples}
    assert written.body == start.body
