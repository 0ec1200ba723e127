"""The user's story: given a prompt that gets half the trays wrong, when I run `promptgrade optimize`,
then the search finds the better template, writes it as the next unreleased version with its lineage,
logs the search to MLflow, and never sends an image of the evaluation split.

The real google-genai client talks to the local Gemini-REST server, which plays two models: the task
model (right on every tray only when the prompt holds the planted instruction) and the reflection
model (scripted proposals, by model id in the request path). One search runs per module.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner, Result

from helpers.planted_search import (
    INSTRUCTION,
    OPTIMIZE_ARGS,
    PLANTED,
    PROPOSALS,
    REFLECTION_MODEL,
    ROOT,
    TASK_MODEL,
    N,
    script,
    split_truth,
    write_experiment,
)
from helpers.provider_servers import use_fake_gemini_key
from promptgrade.cli import app
from promptgrade.optimize.search import Optimization, OptimizationInterrupted, Options
from promptgrade.prompts import PromptLibrary
from promptgrade.runner import CacheMode
from promptgrade.testing.gemini_server import FakeGemini, RequestInfo
from promptgrade.testing.planted import ScriptedProposals, fenced

RUNNER = CliRunner(env={"COLUMNS": "200"})


@dataclass
class Searched:
    tmp: Path
    server: FakeGemini
    experiment: Path
    tracking: str
    cache: Path
    output: str
    exit_code: int
    requests: list[RequestInfo]
    proposals: ScriptedProposals


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, _migrated_mlflow_db: Path) -> Iterator[Searched]:
    """One optimisation, end to end through the CLI; the tests below read what it left behind."""
    tmp = tmp_path_factory.mktemp("optimize")
    shutil.copy(_migrated_mlflow_db, tmp / "mlflow.db")
    with pytest.MonkeyPatch.context() as env, FakeGemini() as server:
        use_fake_gemini_key(env)
        experiment = write_experiment(tmp, server)
        proposals = script(server, experiment)
        tracking, cache = f"sqlite:///{tmp / 'mlflow.db'}", tmp / "cache.sqlite"
        args = [
            "optimize",
            str(experiment),
            *OPTIMIZE_ARGS,
            "--cache",
            str(cache),
            "--tracking-uri",
            tracking,
        ]
        result = RUNNER.invoke(app, args)
        yield Searched(
            tmp,
            server,
            experiment,
            tracking,
            cache,
            result.output,
            result.exit_code,
            server.requests,
            proposals,
        )


def optimization_run(searched: Searched) -> tuple[MlflowClient, object, list[object]]:
    client = MlflowClient(tracking_uri=searched.tracking)
    experiment = client.get_experiment_by_name("optimize-e2e")
    runs = client.search_runs(
        [experiment.experiment_id],
        "tags.`promptgrade.kind` = 'optimization'",
        order_by=["attributes.start_time ASC"],
    )
    children = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{runs[0].info.run_id}'"
    )
    return client, runs[0], children


def test_the_search_finds_the_planted_instruction_and_writes_it_as_the_next_version(
    searched: Searched,
) -> None:
    assert searched.exit_code == 0, searched.output
    written = searched.tmp / "prompts" / "meal_tray_json" / "v2.jinja"
    assert written.is_file(), searched.output
    assert not (
        searched.tmp / "prompts" / "meal_tray_json" / "v3.jinja"
    ).exists()  # one proposal beat the start
    library = PromptLibrary(searched.tmp / "prompts")
    v2 = library.get("meal_tray_json", 2)
    assert INSTRUCTION in v2.body
    assert not library.is_released(v2)  # never released automatically
    meta = v2._front_matter[0]
    assert meta["parent"] == "meal_tray_json@1"
    assert meta["optimized_on"] == "validation" and meta["reflected_on"] == "train"
    assert v2.optimized_on == ("validation",)
    assert v2.structured_output is True  # the parent's output mode is kept
    _, run, _ = optimization_run(searched)
    assert meta["optimization_run_id"] == run.info.run_id
    assert "category_accuracy 62.5% → 100.0% on 8 validation examples" in meta["description"]
    assert "wrote meal_tray_json@2" in searched.output


def test_rejected_proposals_are_recorded_with_their_reason_and_the_search_goes_on(searched: Searched) -> None:
    _, run, children = optimization_run(searched)
    reasons = {c.data.tags["proposal"]: c.data.tags.get("rejected_reason", "") for c in children}
    assert reasons["p1"].startswith("unknown variables: tray_notes")
    assert reasons["p2"].startswith("unrenderable: template syntax error")
    assert reasons["p3"].startswith("answer format")
    assert reasons["p4"] == ""  # the planted one was evaluated
    later = [r for p, r in reasons.items() if p not in ("p0", "p1", "p2", "p3", "p4")]
    assert any(r.startswith("hard-codes example-specific answers: names tray-0001") for r in later), reasons
    for proposal in ("p1", "p2", "p3"):
        assert f"rejected {proposal}:" in searched.output
    assert "found no improvement" in run.data.tags["stop_reason"]


def test_mlflow_holds_the_search_params_each_proposal_and_the_lineage(searched: Searched) -> None:
    client, run, children = optimization_run(searched)
    params = run.data.params
    assert params["start_prompt"] == "meal_tray_json@v1"
    assert params["reflection_model"] == REFLECTION_MODEL and params["task_models"] == TASK_MODEL
    assert params["max_calls"] == "200" and params["optimized_on"] == "validation"
    assert params["evaluation_split"] == "test" and params["reflection_prompt"] == "reflect@v1"
    assert run.info.status == "FINISHED"
    assert run.data.tags["written_versions"] == "meal_tray_json@2"
    lineage = json.loads(Path(client.download_artifacts(run.info.run_id, "lineage.json")).read_text())
    nodes = {n["id"]: n for n in lineage["nodes"]}
    assert len(nodes) == len(children)
    assert nodes["p0"]["parent"] is None and nodes["p0"]["score"] == pytest.approx(
        run.data.metrics["start_score"]
    )
    assert nodes["p4"]["parent"] == "p0" and nodes["p4"]["written_as"] == "meal_tray_json@2"
    assert nodes["p4"]["score"] == 1.0 > nodes["p0"]["score"]
    assert run.data.metrics["best_score"] == 1.0
    planted = next(c for c in children if c.data.tags["proposal"] == "p4")
    assert planted.data.tags["written_as"] == "meal_tray_json@2"
    assert planted.data.metrics["category_accuracy"] == 1.0 and planted.data.metrics["n_examples"] == N
    text = Path(client.download_artifacts(planted.info.run_id, "template.jinja")).read_text()
    assert INSTRUCTION in text
    answer = Path(client.download_artifacts(planted.info.run_id, "reflection_answer.txt")).read_text()
    assert answer == PROPOSALS[3]
    shown = Path(client.download_artifacts(planted.info.run_id, "reflection_prompt.txt")).read_text()
    assert shown == searched.proposals.prompts[3]  # exactly what the reflection model was sent
    tree = Path(client.download_artifacts(run.info.run_id, "lineage.txt")).read_text()
    assert "  p4 [improved] score=1.000 → meal_tray_json@2" in tree


def test_no_test_split_image_was_sent_and_the_budget_held(searched: Searched) -> None:
    test_images = set(split_truth(searched.experiment, "test"))
    optimisation_images = set(split_truth(searched.experiment, "train")) | set(
        split_truth(searched.experiment, "validation")
    )
    sent = {r.image_sha256 for r in searched.requests if r.model == TASK_MODEL}
    assert sent and not sent & test_images
    assert sent <= optimisation_images
    _, run, _ = optimization_run(searched)
    assert len(searched.requests) == run.data.metrics["calls"] <= 200
    reflections = [r for r in searched.requests if r.model == REFLECTION_MODEL]
    assert len(reflections) == len(searched.proposals.prompts) >= 4
    # the reflection model saw the failures: the rendered prompt, truths, and a contact sheet of the trays
    first = searched.proposals.prompts[0]
    assert "Return only the JSON object." in first and "- truth: categories" in first and "snack" in first
    assert all(r.image_sha256 not in test_images | optimisation_images for r in reflections)  # the sheet


def test_the_same_command_again_buys_nothing_and_writes_nothing_new(searched: Searched) -> None:
    """The cache is the search's journal: same seed, same minibatches, same reflection prompts."""
    before = searched.server.calls
    args = ["optimize", str(searched.experiment), *OPTIMIZE_ARGS, "--cache", str(searched.cache)]
    again = RUNNER.invoke(app, [*args, "--tracking-uri", searched.tracking])
    assert again.exit_code == 0, again.output
    assert searched.server.calls == before
    assert "0 API calls" in again.output
    assert "p4 is meal_tray_json@2, written by an earlier run of this search" in again.output
    assert not (searched.tmp / "prompts" / "meal_tray_json" / "v3.jinja").exists()


def test_the_written_version_passes_prompts_check_and_a_sweep_can_use_it(
    searched: Searched, tracking: str, fake_api_key: str
) -> None:
    prompts = searched.tmp / "prompts"
    task = ROOT / "experiments/tasks/meal_tray.yaml"
    checked = RUNNER.invoke(app, ["prompts", "check", "--dir", str(prompts), "--task", str(task)])
    assert checked.exit_code == 0, checked.output
    assert "5 prompt versions render" in checked.output  # the four shipped + v2; _optimizer is not a prompt
    listed = RUNNER.invoke(app, ["prompts", "list", "--dir", str(prompts)])
    assert (
        "meal_tray_json@v2" in listed.output and "draft" in listed.output and "reflect" not in listed.output
    )
    with FakeGemini() as server:
        experiment = write_experiment(searched.tmp, server, name="sweep")
        script(server, experiment)
        text = experiment.read_text().replace("meal_tray_json@1", "meal_tray_json@2")
        experiment.write_text(text.replace("- meal_tray_json@2", "- meal_tray_json@1\n  - meal_tray_json@2"))
        swept = RUNNER.invoke(app, ["sweep", str(experiment), "--tracking-uri", tracking])
    assert swept.exit_code == 0, swept.output
    client = MlflowClient(tracking_uri=tracking)
    experiment_id = client.get_experiment_by_name("optimize-e2e").experiment_id
    runs = client.search_runs([experiment_id], "tags.`promptgrade.kind` = 'candidate'")
    by_version = {r.data.params["prompt_version"]: r for r in runs}
    assert by_version["2"].data.params["optimized_on"] == "validation"
    assert by_version["2"].data.metrics["category_accuracy"] == 1.0
    assert by_version["1"].data.metrics["category_accuracy"] < 1.0


def test_promote_refuses_a_version_measured_on_the_split_it_was_optimised_on(
    searched: Searched, tracking: str, fake_api_key: str
) -> None:
    with FakeGemini() as server:
        experiment = write_experiment(searched.tmp, server, split="validation", name="sweep")
        script(server, experiment)
        experiment.write_text(experiment.read_text().replace("meal_tray_json@1", "meal_tray_json@2"))
        swept = RUNNER.invoke(app, ["sweep", str(experiment), "--tracking-uri", tracking])
        assert swept.exit_code == 0, swept.output
    run_id = swept.output.split("(run ")[1].split(")")[0]
    bundle = searched.tmp / "bundle"

    def promote(*extra: str) -> Result:
        args = ["-e", "optimize-e2e", "--min-examples", "1", "--bundle-dir", str(bundle)]
        return RUNNER.invoke(app, ["promote", *args, "--tracking-uri", tracking, *extra])

    forced = promote("--run", run_id, "--force")
    assert forced.exit_code == 2
    assert "optimised on 'validation', the split it was measured on" in forced.output
    best = promote()
    assert best.exit_code == 2 and "optimised on 'validation'" in best.output
    assert not bundle.exists()


@pytest.fixture
def server(fake_api_key: str) -> Iterator[FakeGemini]:
    with FakeGemini() as started:
        yield started


def optimize(experiment: Path, *extra: str) -> object:
    return RUNNER.invoke(app, ["optimize", str(experiment), "--reflection-model", REFLECTION_MODEL, *extra])


def test_a_budget_too_small_for_one_round_is_refused_with_the_number_needed(
    tmp_path: Path, server: FakeGemini, tracking: str
) -> None:
    experiment = write_experiment(tmp_path, server)
    result = optimize(experiment, "--prompt", "meal_tray_json@1", "--max-calls", "20", "--minibatch", "4")
    assert result.exit_code == 2
    # the start prompt on 8 validation trays, then one proposal: 4 + 4 on the minibatch, 1 reflection, 8
    assert "needs up to 25 calls (8 + 17)" in result.output and "at least 25" in result.output
    costly = optimize(experiment, "--prompt", "meal_tray_json@1", "--max-cost-usd", "0.0001", "--dry-run")
    assert costly.exit_code == 2 and "--max-cost-usd to at least" in costly.output
    assert server.calls == 0


def test_the_dry_run_prints_the_bound_and_calls_nothing(tmp_path: Path, server: FakeGemini) -> None:
    experiment = write_experiment(tmp_path, server)
    result = optimize(
        experiment, "--prompt", "meal_tray_json@1", "--dry-run", "--minibatch", "4", "--candidates", "2"
    )
    assert result.exit_code == 0, result.output
    # 8 + 5 rounds × 2 proposals × (4 + 4 + 1 + 8)
    assert "at most 178 calls" in result.output and "$" in result.output
    assert "never the evaluation split 'test'" in result.output
    assert server.calls == 0


def test_the_bound_counts_every_sample_and_batch_halves_its_dollars(
    tmp_path: Path, server: FakeGemini
) -> None:
    """``samples: 3`` is three requests per tray for every evaluation; ``--batch`` prices them at the
    batch rate (half), while the reflection model stays online at its online price."""
    experiment = write_experiment(tmp_path, server)
    args = ["--prompt", "meal_tray_json@1", "--dry-run", "--minibatch", "4", "--candidates", "2"]
    once = optimize(experiment, *args)
    text = experiment.read_text().replace("settings: {temperature", "samples: 3\n    settings: {temperature")
    experiment.write_text(text.replace("temperature: 0.0", "temperature: 0.7"))
    online, batch = optimize(experiment, *args), optimize(experiment, *args, "--batch")
    assert once.exit_code == online.exit_code == batch.exit_code == 0, (
        once.output + online.output + batch.output
    )
    assert "at most 178 calls" in once.output
    # 3 × 8 + 5 rounds × 2 proposals × (3 × (4 + 4 + 8) + 1)
    assert "at most 514 calls" in online.output and "at most 514 calls" in batch.output

    def dollars(output: str) -> float:
        return float(output.split(" calls, $")[1].split()[0])

    # one sample's task requests cost t, the reflection calls r: once = t + r, online = 3t + r
    t = (dollars(online.output) - dollars(once.output)) / 2
    assert t > 0 and dollars(batch.output) == pytest.approx(dollars(online.output) - 1.5 * t, abs=2e-4)
    assert "(batch)" in batch.output and server.calls == 0


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, server: FakeGemini) -> None:
    experiment = write_experiment(tmp_path, server)
    missing = optimize(experiment, "--prompt", "meal_tray_json@9", "--dry-run")
    assert missing.exit_code == 2 and "has no version v9 (available: v1)" in missing.output
    unknown = optimize(experiment, "--prompt", "nope@1", "--dry-run")
    assert unknown.exit_code == 2 and "no prompt named 'nope'" in unknown.output
    no_train = optimize(
        write_experiment(tmp_path, server, train_split="holdout"), "--prompt", "meal_tray_json@1"
    )
    assert no_train.exit_code == 2 and "no training split 'holdout'" in no_train.output
    same = optimize(write_experiment(tmp_path, server, train_split="test"), "--prompt", "meal_tray_json@1")
    assert same.exit_code == 2 and "never uses the evaluation split" in same.output
    assert server.calls == 0


def test_ctrl_c_keeps_what_was_found(tmp_path: Path, server: FakeGemini, tracking: str) -> None:
    experiment = write_experiment(tmp_path, server)
    script(server, experiment)
    search = Optimization(
        experiment,
        Options(prompt="meal_tray_json@1", reflection_model=REFLECTION_MODEL, candidates=4, minibatch=N),
    )

    def interrupt_after_the_best(message: str) -> None:
        if "new best" in message:
            raise KeyboardInterrupt

    with pytest.raises(OptimizationInterrupted) as stopped:
        search.run(tracking_uri=tracking, cache=CacheMode.off(), on_event=interrupt_after_the_best)
    report = stopped.value.report
    assert [n.written_as for n, _ in report.written] == ["meal_tray_json@2"]
    assert report.stop_reason == "interrupted (Ctrl-C)"
    client = MlflowClient(tracking_uri=tracking)
    run = client.get_run(report.run_id or "")
    assert run.info.status == "KILLED" and run.data.tags["written_versions"] == "meal_tray_json@2"


def test_a_failed_reflection_call_is_a_rejected_proposal_and_the_search_goes_on(
    tmp_path: Path, server: FakeGemini, tracking: str
) -> None:
    experiment = write_experiment(tmp_path, server)
    script(server, experiment)
    answers = ScriptedProposals([fenced(PLANTED)])
    failures = iter(range(2))  # the first reflection call and its one retry

    def flaky(request: RequestInfo) -> str:
        if next(failures, None) is not None:
            raise ConnectionAbortedError("the reflection model went away")  # the server drops the socket
        return answers(request)

    server.model_answers[REFLECTION_MODEL] = flaky
    search = Optimization(
        experiment,
        Options(prompt="meal_tray_json@1", reflection_model=REFLECTION_MODEL, candidates=2, minibatch=N),
    )
    report = search.run(tracking_uri=tracking, cache=CacheMode.off())
    first, second = report.nodes[1], report.nodes[2]
    assert first.status == "rejected" and (first.reason or "").startswith("reflection failed: connection")
    assert second.status == "improved" and INSTRUCTION in second.body
    assert [n.written_as for n, _ in report.written] == ["meal_tray_json@2"]
