"""The user's story with batch jobs, on every provider: sweep --batch submits the same requests as jobs,
waits (or not), and scores and logs every candidate exactly as an online sweep would, at the batch price —
through one executor and one journal, whichever service runs the jobs.

Each test runs once per provider, through its real SDK (google-genai, boto3's ``bedrock`` and ``s3``
clients, the official ``openai`` client) against its local server: Gemini's takes inline requests or a
file; Bedrock's control plane reads the records from S3 (moto's server) and writes the output back;
OpenAI's takes an uploaded file and serves output and error files. Jobs finish in a fraction of a
second, and the servers record every request a job carried, so "0 online calls" and "never sent twice"
are counted there. Each provider's own rules and faults are in test_batch.py (Gemini),
test_batch_bedrock.py and test_batch_openai.py.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from helpers.batch_servers import (
    BATCH_PROVIDERS,
    BatchServer,
    batch_server,
    job_name,
    kill_9_while_waiting,
)
from helpers.e2e import Truth, truth_of
from helpers.sweeps import ACCURACY_METRICS, candidate_runs, sweep
from promptgrade.cli import app
from promptgrade.testing.batch_scripts import JobScript

RUNNER = CliRunner(env={"COLUMNS": "200"})
N = 6  # examples per candidate
COMPARED = tuple(m for m in ACCURACY_METRICS if m != "cost_usd")  # batch costs half: compared apart


@pytest.fixture(params=BATCH_PROVIDERS)
def batched(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, moto_server: str, tmp_path: Path
) -> Iterator[BatchServer]:
    with batch_server(request.param, monkeypatch, moto_server, tmp_path, N) as server:
        yield server


@pytest.fixture
def truth(batched: BatchServer, tmp_path: Path) -> Truth:
    return truth_of(batched.experiment(tmp_path, "truth", n=N))


def by_prompt(runs: list[object], mode: str) -> dict[str, object]:
    return {r.data.params["prompt_name"]: r for r in runs if r.data.params["mode"] == mode}


def as_sent(request: object) -> object:
    """A request as the server decoded it, without what says how it came (a job, a key, a time, a path)."""
    how = {
        "batch_job": None,
        "authorization": None,
        "received_at": 0.0,
        "path": "",
        "has_api_key": False,
        "body": b"",
    }
    present = {f.name for f in dataclasses.fields(request)}  # type: ignore[arg-type]
    return dataclasses.replace(request, **{k: v for k, v in how.items() if k in present})  # type: ignore[type-var]


def test_a_batch_sweep_scores_like_an_online_sweep_at_the_batch_price(
    batched: BatchServer, tmp_path: Path, tracking: str
) -> None:
    path = batched.experiment(tmp_path, "batch-e2e", n=N, batch=False)
    result = sweep(path, tracking, "--batch")
    assert result.exit_code == 0, result.output
    assert "batch: submitted 2 job(s), 12 requests" in result.output
    assert f"{batched.model} (batch)" in result.output
    assert batched.jobs() == 2 and len(batched.batch()) == 2 * N and not batched.online()
    assert batched.sent_once()

    again = sweep(path, tracking)  # the answers are in the cache under the online keys
    assert again.exit_code == 0, again.output
    assert "0 API calls, 12 answers from the cache" in again.output and not batched.online()
    assert len(batched.batch()) == 2 * N
    fresh = sweep(path, tracking, "--no-cache")
    assert fresh.exit_code == 0, fresh.output
    assert len(batched.online()) == 2 * N
    # a job's body is the online body: the server decodes the same requests from both
    assert sorted(map(repr, map(as_sent, batched.batch()))) == sorted(
        map(repr, map(as_sent, batched.online()))
    )

    runs = candidate_runs(tracking, "batch-e2e")
    batch, online = by_prompt(runs, "batch"), by_prompt(runs, "online")  # online: the uncached sweep's
    from_cache = [r for r in runs if r.data.params["mode"] == "online" and r not in online.values()]
    assert len(from_cache) == 2 and all("latency_p50_ms" not in r.data.metrics for r in from_cache)
    assert set(batch) == set(online) == {"meal_tray_freetext", "meal_tray_json"}
    for prompt, run in batch.items():
        metrics, reference = run.data.metrics, online[prompt].data.metrics
        assert run.info.status == "FINISHED" and run.data.tags["promptgrade.partial"] == "false"
        assert {k: metrics[k] for k in COMPARED} == {k: reference[k] for k in COMPARED}
        assert metrics["category_accuracy"] == pytest.approx(0.5)
        assert metrics["cost_usd"] == pytest.approx(batched.cost(metrics))  # the batch price
        assert metrics["cost_usd"] == pytest.approx(reference["cost_usd"] / 2)
        assert "latency_p50_ms" not in metrics and "latency_p50_ms" in reference
    assert "batch" in next(iter(batch.values())).info.run_name


def test_no_wait_submits_and_exits_3_then_the_same_command_collects(
    batched: BatchServer, tmp_path: Path, tracking: str
) -> None:
    path = batched.experiment(tmp_path, "batch-nowait", n=N)
    batched.batches.default_script = JobScript(pending_s=0.05, running_s=60.0)  # "tomorrow"
    first = sweep(path, tracking, "--no-wait")
    assert first.exit_code == 3, first.output
    assert "2 batch job(s) holding 12 requests are pending or running" in first.output
    assert batched.jobs() == 2
    assert MlflowClient(tracking_uri=tracking).get_experiment_by_name("batch-nowait") is None

    listed = RUNNER.invoke(app, ["batches", "list"])
    assert listed.exit_code == 0, listed.output
    assert listed.output.count("batch-nowait") == 2 and "PENDING" in listed.output

    again = sweep(path, tracking, "--no-wait")  # still running: picked up, not resubmitted
    assert again.exit_code == 3 and batched.jobs() == 2

    batched.batches.finish_all()
    done = sweep(path, tracking)
    assert done.exit_code == 0, done.output
    assert "picked up 2 journalled job(s)" in done.output
    assert batched.jobs() == 2 and len(batched.batch()) == 2 * N and not batched.online()
    runs = candidate_runs(tracking, "batch-nowait")
    assert len(runs) == 2 and all(r.data.metrics["n_examples"] == N for r in runs)
    assert all(r.data.params["mode"] == "batch" for r in runs)


def test_kill_9_while_waiting_then_the_same_command_sends_nothing_twice(
    batched: BatchServer, tmp_path: Path, tracking: str
) -> None:
    path = batched.experiment(tmp_path, "batch-kill", n=N)
    batched.batches.default_script = JobScript(pending_s=0.05, running_s=60.0)
    kill_9_while_waiting(path, tracking, 2, lambda: any(job.polled_at for job in batched.new_jobs()))
    assert batched.jobs() == 2
    batched.batches.finish_all()
    resumed = sweep(path, tracking)
    assert resumed.exit_code == 0, resumed.output
    assert batched.jobs() == 2 and len(batched.batch()) == 2 * N and not batched.online()
    assert batched.sent_once()


def test_a_run_killed_between_journal_and_create_adopts_the_job_or_submits_once(
    batched: BatchServer, tmp_path: Path, tracking: str
) -> None:
    """The intent is journalled before ``create``: a job the service got is found by its name (Bedrock)
    or metadata (OpenAI); an intent the service never got is forgotten and submitted once."""
    from promptgrade.batch.executor import BatchExecutor
    from promptgrade.batch.journal import BatchJournal, journal_path
    from promptgrade.cache import AnswerCache
    from promptgrade.settings import load_settings
    from promptgrade.sweep import Sweep, batch_client

    path = batched.experiment(tmp_path, "batch-intent", n=N)
    prepared = Sweep(path)
    spec = prepared.plan.experiment.models[0]
    client = batch_client(spec, prepared.plan.experiment, load_settings())
    cache = AnswerCache()
    journal = BatchJournal(journal_path(cache.path))
    executor = BatchExecutor(
        prepared.plan,
        prepared.dataset,
        prepared.runnable,
        {(batched.name, batched.model): client},
        cache,
        journal,
    )
    for index, candidate in enumerate(prepared.runnable):  # what a run killed right after create leaves
        requests = executor.requests(candidate)
        local_id = f"killed{index}"
        journal.intend(
            local_id,
            experiment="batch-intent",
            provider=batched.name,
            model=batched.model,
            candidate_key=candidate.key,
            candidate_label=candidate.label,
            requests=[(key, example_id) for key, example_id, _ in requests],
            base_url=client.base_url,
            fields=spec.batch_fields(),
        )
        if index == 0:  # the first create reached the service, the second never did
            record = journal.job(local_id)
            assert record is not None
            created, _ = client.create([(key, request) for key, _, request in requests], record.display_name)
    client.close()
    assert batched.jobs() == 1

    result = sweep(path, tracking)
    assert result.exit_code == 0, result.output
    assert f"adopted {created}, created by a run that stopped before recording it" in " ".join(
        result.output.split()
    )
    assert batched.jobs() == 2 and len(batched.batch()) == 2 * N and batched.sent_once()


def test_a_partial_failure_keeps_the_answers_and_resubmits_only_the_missing(
    batched: BatchServer, tmp_path: Path, tracking: str, truth: Truth
) -> None:
    path = batched.experiment(tmp_path, "batch-partial", n=N)
    failing = sorted(truth, key=lambda sha: truth[sha][0])[:2]
    for sha in failing:  # both prompts' requests for these two images fail inside their jobs
        batched.server.enqueue_fault(served_fault(batched), image_sha256=sha, times=2)
    first = sweep(path, tracking)
    assert first.exit_code == 0, first.output
    assert "2 request(s) of meal_tray_json@v1" in first.output
    assert all(truth[sha][0] in first.output for sha in failing)
    runs = candidate_runs(tracking, "batch-partial")
    assert all(r.data.metrics["error_rate"] == pytest.approx(2 / N) for r in runs)
    table_path = MlflowClient(tracking_uri=tracking).download_artifacts(
        runs[0].info.run_id, "predictions.json", str(tmp_path)
    )
    table = json.loads(Path(table_path).read_text())
    kinds = dict(zip(table["columns"], zip(*table["data"], strict=True), strict=True))["error_kind"]
    assert kinds.count("batch_failed") == 2

    second = sweep(path, tracking)
    assert second.exit_code == 0, second.output
    assert batched.jobs() == 4  # one more job per candidate, each holding only the two failed requests
    assert len(batched.batch()) == 2 * N + 4 and not batched.online()
    assert {r.image_sha256 for r in batched.batch()[2 * N :]} == set(failing)
    latest = [r for r in candidate_runs(tracking, "batch-partial") if r.data.metrics.get("error_rate") == 0]
    assert len(latest) == 2


def served_fault(batched: BatchServer) -> object:
    """A 503 inside a job, in the provider's own words."""
    from helpers.provider_servers import STAND_INS

    return STAND_INS[batched.name].faults["server_error"]


def test_results_that_do_not_match_the_journal_and_an_expired_job(
    batched: BatchServer, tmp_path: Path, tracking: str
) -> None:
    path = batched.experiment(tmp_path, "batch-tampered", n=N, json_only=True)
    batched.batches.script(JobScript(pending_s=0.0, running_s=0.05, final="EXPIRED"))
    first = sweep(path, tracking)
    assert first.exit_code == 0, first.output
    assert "ended expired" in first.output and f"{N} request(s) of meal_tray_json@v1" in first.output
    (run,) = candidate_runs(tracking, "batch-tampered")
    assert run.data.metrics["error_rate"] == 1.0

    batched.batches.script(
        JobScript(pending_s=0.0, running_s=0.05, drop_results=1, unknown_results=1, duplicate_results=1)
    )
    second = sweep(path, tracking)
    assert second.exit_code == 0, second.output
    assert batched.jobs() == 2 and len(batched.batch()) == 2 * N
    assert "1 result(s) with keys this job never sent were ignored" in second.output
    assert "1 duplicate result(s) were ignored" in second.output
    assert "missing from the job's results" in second.output
    latest = candidate_runs(tracking, "batch-tampered")[-1]
    assert latest.data.metrics["n_examples"] == N  # nothing scored twice, nothing invented
    assert latest.data.metrics["error_rate"] == pytest.approx(1 / N)


def test_a_candidate_over_the_per_job_limit_is_split_into_even_jobs(
    batched: BatchServer, tmp_path: Path, tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTGRADE_BATCH_MAX_REQUESTS", "4")
    path = batched.experiment(tmp_path, "batch-split", n=N)
    result = sweep(path, tracking)
    assert result.exit_code == 0, result.output
    assert "batch: submitted 4 job(s), 12 requests" in result.output  # 6 → 3 + 3, per candidate
    assert sorted(len(job.results) for job in batched.new_jobs()) == [3] * 4  # each request once
    assert batched.sent_once() and not batched.online()
    assert all(r.data.metrics["error_rate"] == 0 for r in candidate_runs(tracking, "batch-split"))


def test_cancel_a_job_then_the_next_run_collects_what_it_ended_with(
    batched: BatchServer, tmp_path: Path, tracking: str
) -> None:
    path = batched.experiment(tmp_path, "batch-cancel", n=N)
    batched.batches.default_script = JobScript(pending_s=0.05, running_s=60.0)
    assert sweep(path, tracking, "--no-wait").exit_code == 3
    job = batched.new_jobs()[-1]  # meal_tray_json's
    cancelled = RUNNER.invoke(app, ["batches", "cancel", job_name(job)])
    assert cancelled.exit_code == 0, cancelled.output
    assert f"cancelled {job_name(job)}" in " ".join(cancelled.output.split())
    assert job.cancelled_at is not None
    unknown = RUNNER.invoke(app, ["batches", "cancel", "batches/nope"])
    assert unknown.exit_code == 2 and "no batch job 'batches/nope'" in unknown.output

    batched.batches.finish_all()  # the other job ends as scripted; the cancelled one stays cancelled
    after = sweep(path, tracking)
    assert after.exit_code == 0, after.output
    assert f"{job_name(job)} ended cancelled" in after.output
    assert f"{N} request(s) of meal_tray_json@v1" in after.output
    assert batched.jobs() == 2 and not batched.online()


def test_dry_run_shows_the_batch_price_beside_the_online_price(batched: BatchServer, tmp_path: Path) -> None:
    path = batched.experiment(tmp_path, "batch-dry", n=N, batch=False)
    result = RUNNER.invoke(app, ["sweep", str(path), "--dry-run", "--batch"])
    assert result.exit_code == 0, result.output
    assert "online $" in result.output and "at the batch price (online: ~$" in result.output
    line = next(line for line in result.output.splitlines() if "calls" in line and "~$" in line)
    batch_cost = float(line.split("~$")[1].split(" ")[0])
    online_cost = float(line.split("online: ~$")[1].rstrip(")"))
    assert batch_cost == pytest.approx(online_cost / 2, rel=1e-3)
    assert batched.jobs() == 0 and not batched.batch()


def test_a_run_killed_while_reading_results_reads_them_again_without_a_second_job(
    batched: BatchServer, tmp_path: Path, tracking: str
) -> None:
    """What a run killed halfway through a finished job's results leaves — some answers cached, the job
    not yet marked collected — is read again by the same command: no second job, nothing sent twice."""
    from promptgrade.batch.jobs import store_journal
    from promptgrade.cache import AnswerCache
    from promptgrade.settings import load_settings
    from promptgrade.sweep import Sweep, batch_client

    path = batched.experiment(tmp_path, "batch-reading", n=N, json_only=True)
    batched.batches.default_script = JobScript(pending_s=0.05, running_s=60.0)
    assert sweep(path, tracking, "--no-wait").exit_code == 3
    batched.batches.finish_all()
    (job,) = store_journal().jobs()
    assert job.name is not None
    prepared = Sweep(path)
    client = batch_client(prepared.plan.experiment.models[0], prepared.plan.experiment, load_settings())
    status, results = client.results(job.name)
    client.close()
    assert status.done and len(results) == N
    cache = AnswerCache()
    for result in results[: N // 2]:  # the kill came here
        cache.put(result.key, batched.name, batched.model, result.completion)

    resumed = sweep(path, tracking)
    assert resumed.exit_code == 0, resumed.output
    assert "picked up 1 journalled job(s)" in resumed.output
    assert batched.jobs() == 1 and len(batched.batch()) == N and batched.sent_once() and not batched.online()
    (run,) = candidate_runs(tracking, "batch-reading")
    assert run.data.metrics["n_examples"] == N and run.data.metrics["error_rate"] == 0
