"""The user's story with Gemini batch jobs: sweep --batch submits the same requests as jobs, waits (or
not), and scores and logs every candidate exactly as an online sweep would, at the batch price.

The real google-genai client talks to the local server's Batch and Files APIs; jobs finish in a
fraction of a second; the server records every inner request, so "never sent twice" is counted there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from helpers import e2e
from helpers.batch_servers import kill_9_while_waiting
from helpers.e2e import Truth, script_answers, truth_of
from helpers.sweeps import ACCURACY_METRICS, candidate_runs, sweep
from promptgrade.cli import app
from promptgrade.testing.gemini_batches import BatchJob, JobScript
from promptgrade.testing.gemini_server import FakeGemini, Fault, RequestInfo

RUNNER = CliRunner(env={"COLUMNS": "200"})
N = 6  # examples per candidate
BATCH_PATH = ":batchGenerateContent"

COMPARED = tuple(m for m in ACCURACY_METRICS if m != "cost_usd")  # batch costs half: compared apart


@pytest.fixture(scope="module")
def server() -> Iterator[FakeGemini]:
    with FakeGemini() as fake:
        yield fake


@pytest.fixture(scope="module")
def truth(server: FakeGemini, tmp_path_factory: pytest.TempPathFactory) -> Truth:
    return truth_of(write_experiment(tmp_path_factory.mktemp("truth"), server))


@pytest.fixture(autouse=True)
def scripted(server: FakeGemini, truth: Truth, monkeypatch: pytest.MonkeyPatch) -> None:
    """Right answers for the first half of the examples, wrong ones for the rest; quick jobs and polls."""
    script_answers(server, truth)
    server.clear_faults()
    server.batches.default_script = JobScript(pending_s=0.05, running_s=0.1)
    server.batches.poll_faults.clear()
    monkeypatch.setenv("PROMPTGRADE_BATCH_POLL_S", "0.05")
    monkeypatch.delenv("PROMPTGRADE_BATCH_INLINE_BYTES", raising=False)
    for name in ("GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GEMINI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "test-key-not-real")


def write_experiment(folder: Path, server: FakeGemini, name: str = "batch-e2e", batch: bool = False) -> Path:
    """This file's experiment: the end-to-end one on N trays, as ``folder/<name>.yaml``."""
    return e2e.write_experiment(folder / f"{name}.yaml", server.base_url, n=N, name=name, batch=batch)


class Counter:
    """What the server saw since a test began: batch-job requests, online calls, jobs created."""

    def __init__(self, server: FakeGemini) -> None:
        self.server = server
        self.start_requests = len(server.requests)
        self.start_jobs = server.batches.created

    def batch(self) -> list[RequestInfo]:
        return [r for r in self.server.requests[self.start_requests :] if r.path.endswith(BATCH_PATH)]

    def online(self) -> list[RequestInfo]:
        return [r for r in self.server.requests[self.start_requests :] if not r.path.endswith(BATCH_PATH)]

    def jobs(self) -> int:
        return self.server.batches.created - self.start_jobs


def by_prompt(runs: list[object], mode: str) -> dict[str, object]:
    return {r.data.params["prompt_name"]: r for r in runs if r.data.params["mode"] == mode}


def test_batch_sweep_scores_like_an_online_sweep_at_half_the_price(
    tmp_path: Path, server: FakeGemini, tracking: str
) -> None:
    path = write_experiment(tmp_path, server)
    seen = Counter(server)
    result = sweep(path, tracking, "--batch")
    assert result.exit_code == 0, result.output
    assert "batch: submitted 2 job(s), 12 requests" in result.output
    assert "gemini-2.5-flash (batch)" in result.output  # the summary says which mode ran
    assert seen.jobs() == 2 and len(seen.batch()) == 2 * N and not seen.online()
    # each (prompt, image) sent exactly once
    assert len({(r.prompt, r.image_sha256) for r in seen.batch()}) == 2 * N

    # the same cache answers a later online sweep: no calls; an uncached online sweep: the same metrics
    again = sweep(path, tracking)
    assert again.exit_code == 0, again.output
    assert "0 API calls, 12 answers from the cache" in again.output
    assert len(seen.batch()) == 2 * N and not seen.online()
    fresh = sweep(path, tracking, "--no-cache")
    assert fresh.exit_code == 0, fresh.output
    assert len(seen.online()) == 2 * N

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
        # batch price: gemini-2.5-flash at $0.15 / $1.25 per million tokens, half the online price
        expected = (metrics["input_tokens"] * 0.15 + metrics["output_tokens"] * 1.25) / 1e6
        assert metrics["cost_usd"] == pytest.approx(expected)
        assert metrics["cost_usd"] == pytest.approx(reference["cost_usd"] / 2)
        assert "latency_p50_ms" not in metrics and "latency_p50_ms" in reference
    assert "batch" in next(iter(batch.values())).info.run_name


def test_no_wait_submits_and_exits_3_then_the_same_command_collects(
    tmp_path: Path, server: FakeGemini, tracking: str
) -> None:
    path = write_experiment(tmp_path, server, name="batch-nowait", batch=True)
    seen = Counter(server)
    server.batches.default_script = JobScript(pending_s=0.05, running_s=60.0)  # "tomorrow"
    first = sweep(path, tracking, "--no-wait")
    assert first.exit_code == 3, first.output
    assert "2 batch job(s) holding 12 requests are pending or running" in first.output
    assert seen.jobs() == 2
    assert (
        MlflowClient(tracking_uri=tracking).get_experiment_by_name("batch-nowait") is None
    )  # nothing logged yet

    listed = RUNNER.invoke(app, ["batches", "list"])
    assert listed.exit_code == 0, listed.output
    assert listed.output.count("batch-nowait") == 2 and "PENDING" in listed.output

    again = sweep(path, tracking, "--no-wait")  # still running: picked up, not resubmitted
    assert again.exit_code == 3 and seen.jobs() == 2

    server.batches.finish_all()
    done = sweep(path, tracking)
    assert done.exit_code == 0, done.output
    assert "picked up 2 journalled job(s)" in done.output
    assert seen.jobs() == 2 and len(seen.batch()) == 2 * N and not seen.online()
    runs = candidate_runs(tracking, "batch-nowait")
    assert len(runs) == 2 and all(r.data.metrics["n_examples"] == N for r in runs)
    assert all(r.data.params["mode"] == "batch" for r in runs)


def test_kill_9_while_waiting_then_the_same_command_sends_nothing_twice(
    tmp_path: Path, server: FakeGemini, tracking: str
) -> None:
    path = write_experiment(tmp_path, server, name="batch-kill", batch=True)
    seen = Counter(server)
    server.batches.default_script = JobScript(pending_s=0.05, running_s=60.0)
    kill_9_while_waiting(path, tracking, 2, lambda: any(job.polled_at for job in new_jobs(server, seen)))
    assert seen.jobs() == 2
    server.batches.finish_all()
    resumed = sweep(path, tracking)
    assert resumed.exit_code == 0, resumed.output
    assert seen.jobs() == 2 and len(seen.batch()) == 2 * N and not seen.online()
    assert len({(r.prompt, r.image_sha256) for r in seen.batch()}) == 2 * N


def new_jobs(server: FakeGemini, seen: Counter) -> list[BatchJob]:
    return list(server.batches.jobs.values())[seen.start_jobs :]


def test_partial_failure_keeps_the_answers_and_resubmits_only_the_missing(
    tmp_path: Path, server: FakeGemini, tracking: str, truth: Truth
) -> None:
    path = write_experiment(tmp_path, server, name="batch-partial", batch=True)
    seen = Counter(server)
    failing = sorted(truth, key=lambda sha: truth[sha][0])[:2]
    for sha in failing:  # both prompts' requests for these two images fail inside the job
        server.enqueue_fault(Fault.server_error(), image_sha256=sha, times=2)
    first = sweep(path, tracking)
    assert first.exit_code == 0, first.output
    assert "2 request(s) of meal_tray_json@v1" in first.output
    for sha in failing:
        assert truth[sha][0] in first.output
    runs = candidate_runs(tracking, "batch-partial")
    assert all(r.data.metrics["error_rate"] == pytest.approx(2 / N) for r in runs)
    table = json.loads(
        MlflowClient(tracking_uri=tracking).download_artifacts(
            runs[0].info.run_id, "predictions.json", str(tmp_path)
        )
        and (tmp_path / "predictions.json").read_text()
    )
    kinds = dict(zip(table["columns"], zip(*table["data"], strict=True), strict=True))["error_kind"]
    assert kinds.count("batch_failed") == 2

    second = sweep(path, tracking)
    assert second.exit_code == 0, second.output
    assert seen.jobs() == 4  # one job per candidate, each holding only the two missing requests
    assert len(seen.batch()) == 2 * N + 4 and not seen.online()
    resent = {(r.prompt, r.image_sha256) for r in seen.batch()[2 * N :]}
    assert {sha for _, sha in resent} == set(failing)
    runs = [r for r in candidate_runs(tracking, "batch-partial") if r.data.metrics.get("error_rate") == 0]
    assert len(runs) == 2


def test_expired_job_and_results_that_do_not_match_the_journal(
    tmp_path: Path, server: FakeGemini, tracking: str
) -> None:
    path = write_experiment(tmp_path, server, name="batch-expired", batch=True)
    path.write_text(path.read_text().replace("  - meal_tray_freetext@1\n", ""), encoding="utf-8")
    seen = Counter(server)
    server.batches.script(JobScript(pending_s=0.0, running_s=0.05, final="EXPIRED"))
    first = sweep(path, tracking)
    assert first.exit_code == 0, first.output
    assert "ended expired" in first.output and f"{N} request(s) of meal_tray_json@v1" in first.output
    (run,) = candidate_runs(tracking, "batch-expired")
    assert run.data.metrics["error_rate"] == 1.0

    server.batches.script(JobScript(pending_s=0.0, running_s=0.05, drop_results=1, unknown_results=1))
    second = sweep(path, tracking)
    assert second.exit_code == 0, second.output
    assert seen.jobs() == 2 and len(seen.batch()) == 2 * N
    assert "1 result(s) with keys this job never sent were ignored" in second.output
    assert "missing from the job's results" in second.output
    latest = candidate_runs(tracking, "batch-expired")[-1]
    assert latest.data.metrics["n_examples"] == N  # nothing scored twice, nothing invented
    assert latest.data.metrics["error_rate"] == pytest.approx(1 / N)


def test_file_route_and_a_429_while_polling(
    tmp_path: Path, server: FakeGemini, tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTGRADE_BATCH_INLINE_BYTES", "1000")  # any job is "too big" to go inline
    path = write_experiment(tmp_path, server, name="batch-file", batch=True)
    seen = Counter(server)
    uploads = len(server.batches.files)
    server.batches.poll_faults.append(Fault.rate_limited(retry_delay="0.5s"))
    result = sweep(path, tracking)
    assert result.exit_code == 0, result.output
    assert seen.jobs() == 2 and len(seen.batch()) == 2 * N
    assert len(server.batches.files) == uploads + 4  # two request files uploaded, two responses files
    jobs = new_jobs(server, seen)
    assert {job.route for job in jobs} == {"file"}
    polls = sorted(t for job in jobs for t in job.polled_at)  # the first poll got the 429; the second job's
    assert polls[2] - polls[1] >= 0.5  # poll went on, then the next round waited out the RetryInfo delay
    runs = candidate_runs(tracking, "batch-file")
    assert all(r.data.metrics["category_accuracy"] == pytest.approx(0.5) for r in runs)


def test_cancel_a_job(tmp_path: Path, server: FakeGemini, tracking: str) -> None:
    path = write_experiment(tmp_path, server, name="batch-cancel", batch=True)
    server.batches.default_script = JobScript(pending_s=0.05, running_s=60.0)
    assert sweep(path, tracking, "--no-wait").exit_code == 3
    name = list(server.batches.jobs)[-1]
    cancelled = RUNNER.invoke(app, ["batches", "cancel", name])
    assert cancelled.exit_code == 0, cancelled.output
    assert server.batches.jobs[name].state(time.monotonic()) == "CANCELLED"
    unknown = RUNNER.invoke(app, ["batches", "cancel", "batches/nope"])
    assert unknown.exit_code == 2 and "no batch job 'batches/nope'" in unknown.output

    server.batches.finish_all()  # the other job ends as scripted; the cancelled one stays cancelled
    after = sweep(path, tracking)
    assert after.exit_code == 0, after.output
    assert (
        f"{name} ended cancelled" in after.output and f"{N} request(s) of meal_tray_json@v1" in after.output
    )


def test_dry_run_shows_the_batch_price_beside_the_online_price(tmp_path: Path, server: FakeGemini) -> None:
    path = write_experiment(tmp_path, server)
    result = RUNNER.invoke(app, ["sweep", str(path), "--dry-run", "--batch"])
    assert result.exit_code == 0, result.output
    assert "online $" in result.output and "at the batch price (online: ~$" in result.output
    line = next(line for line in result.output.splitlines() if "calls" in line and "~$" in line)
    batch_cost = float(line.split("~$")[1].split(" ")[0])
    online_cost = float(line.split("online: ~$")[1].rstrip(")"))
    assert batch_cost == pytest.approx(online_cost / 2, rel=1e-3)


def test_batch_on_a_model_without_what_its_batch_jobs_need_is_one_clear_line(
    tmp_path: Path, server: FakeGemini
) -> None:
    """Every provider now has a batch back-end (a Bedrock or OpenAI model is no longer refused); what a
    provider's jobs need and the model lacks — a Bedrock job's S3 prefix and role — is one line."""
    path = write_experiment(tmp_path, server)
    path.write_text(
        path.read_text().replace(
            "  - model: gemini-2.5-flash", "  - provider: bedrock\n    model: amazon.nova-lite-v1:0"
        )
    )
    result = RUNNER.invoke(app, ["sweep", str(path), "--batch", "--dry-run"])
    assert result.exit_code == 2
    assert (
        "amazon.nova-lite-v1:0: Bedrock batch jobs need batch_role_arn and batch_s3_uri: set them on the model"
        in result.output
    )
    assert "Traceback" not in result.output


def test_a_run_killed_between_journal_and_create_adopts_the_job_or_submits_once(
    tmp_path: Path, server: FakeGemini, tracking: str
) -> None:
    """The intent is journalled before ``create``: a job the API got is found by its display name,
    an intent the API never got is forgotten and its requests are submitted once."""
    from promptgrade.batch.executor import BatchExecutor
    from promptgrade.batch.journal import BatchJournal, journal_path
    from promptgrade.cache import AnswerCache
    from promptgrade.providers.gemini_batch import GeminiBatches
    from promptgrade.sweep import Sweep

    path = write_experiment(tmp_path, server, name="batch-intent", batch=True)
    seen = Counter(server)
    prepared = Sweep(path)
    cache = AnswerCache()
    journal = BatchJournal(journal_path(cache.path))
    client = GeminiBatches("gemini-2.5-flash", server.base_url)
    executor = BatchExecutor(
        prepared.plan,
        prepared.dataset,
        prepared.runnable,
        {("gemini", "gemini-2.5-flash"): client},
        cache,
        journal,
    )
    for index, candidate in enumerate(prepared.runnable):  # what a run killed right after create leaves
        requests = executor.requests(candidate)
        local_id = f"killed{index}"
        journal.intend(
            local_id,
            experiment="batch-intent",
            provider="gemini",
            model="gemini-2.5-flash",
            candidate_key=candidate.key,
            candidate_label=candidate.label,
            requests=[(key, example_id) for key, example_id, _ in requests],
        )
        if index == 0:  # the first create reached the API, the second never did
            record = journal.job(local_id)
            assert record is not None
            client.create([(key, request) for key, _, request in requests], record.display_name)
    client.close()
    assert seen.jobs() == 1

    result = sweep(path, tracking)
    assert result.exit_code == 0, result.output
    assert "adopted batches/" in result.output
    assert (
        seen.jobs() == 2 and len(seen.batch()) == 2 * N
    )  # the adopted job, plus one for the forgotten intent
    assert len({(r.prompt, r.image_sha256) for r in seen.batch()}) == 2 * N


def test_budget_is_checked_before_any_job_is_submitted(
    tmp_path: Path, server: FakeGemini, tracking: str
) -> None:
    path = write_experiment(tmp_path, server, name="batch-budget", batch=True)
    path.write_text(path.read_text() + "max_cost_usd: 0.0001\n", encoding="utf-8")
    seen = Counter(server)
    result = sweep(path, tracking)
    assert result.exit_code == 3, result.output
    assert "max_cost_usd=$0.0001: the batch jobs could cost ~$" in result.output
    assert seen.jobs() == 0 and not seen.batch()


def test_vertex_ai_batch_is_one_clear_line(
    tmp_path: Path, server: FakeGemini, tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_GENAI_USE_VERTEXAI", "true")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "p")
    monkeypatch.setenv("GOOGLE_CLOUD_LOCATION", "us-central1")
    path = write_experiment(tmp_path, server, name="batch-vertex", batch=True)
    result = sweep(path, tracking)
    assert result.exit_code == 2, result.output
    assert "Vertex AI batch prediction needs a GCS or BigQuery source" in result.output
    assert "Traceback" not in result.output


def test_a_sweep_waits_only_for_jobs_holding_its_own_requests(
    tmp_path: Path, server: FakeGemini, tracking: str
) -> None:
    other = write_experiment(tmp_path, server, name="batch-other", batch=True)
    other.write_text(other.read_text().replace("  - meal_tray_json@1\n", ""), encoding="utf-8")
    mine = write_experiment(tmp_path, server, name="batch-mine", batch=True)
    mine.write_text(mine.read_text().replace("  - meal_tray_freetext@1\n", ""), encoding="utf-8")
    server.batches.script(JobScript(pending_s=0.05, running_s=60.0))  # the other experiment's job: "tomorrow"
    assert sweep(other, tracking, "--no-wait").exit_code == 3
    started = time.monotonic()
    result = sweep(mine, tracking)
    assert result.exit_code == 0, result.output
    assert "picked up" not in result.output and time.monotonic() - started < 30


def test_a_bad_inline_limit_is_one_line_before_anything_is_submitted(
    tmp_path: Path, server: FakeGemini, tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTGRADE_BATCH_INLINE_BYTES", "20MB")
    path = write_experiment(tmp_path, server, name="batch-limit", batch=True)
    seen = Counter(server)
    result = sweep(path, tracking)
    assert result.exit_code == 2 and "PROMPTGRADE_BATCH_INLINE_BYTES='20MB'" in result.output
    assert seen.jobs() == 0
