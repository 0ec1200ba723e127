"""The user's story: given the prompt that gets half the trays wrong and a Gemini model with a batch API,
when I run `promptgrade optimize --batch`, then every minibatch evaluation of the task model goes to
the provider as batch jobs (half price, waited for), the reflection model stays online, and the search
finds and writes the same version it finds online; a job that expires stops the search resumable, and
the same command sends only what no job answered.

The same local Gemini server as test_optimize.py plays both models; its batch jobs end in a fraction
of a second and are polled every 50 ms.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner, Result

from helpers.batch_servers import is_batch
from helpers.planted_search import (
    INSTRUCTION,
    OPTIMIZE_ARGS,
    REFLECTION_MODEL,
    TASK_MODEL,
    script,
    write_experiment,
)
from helpers.provider_servers import use_fake_gemini_key
from promptgrade.cli import app
from promptgrade.prompts import PromptLibrary
from promptgrade.testing.batch_scripts import JobScript
from promptgrade.testing.gemini_server import FakeGemini

RUNNER = CliRunner(env={"COLUMNS": "200"})


@dataclass
class Batched:
    tmp: Path
    server: FakeGemini
    experiment: Path
    tracking: str
    cache: Path
    first: Result | None = None  # the run whose first job expired
    second: Result | None = None  # the same command again

    def optimize(self, *extra: str) -> Result:
        args = ["optimize", str(self.experiment), *OPTIMIZE_ARGS, "--batch", *extra]
        return RUNNER.invoke(app, [*args, "--cache", str(self.cache), "--tracking-uri", self.tracking])

    def runs(self) -> tuple[Result, Result]:
        assert self.first is not None and self.second is not None
        return self.first, self.second


@pytest.fixture(scope="module")
def batched(tmp_path_factory: pytest.TempPathFactory, _migrated_mlflow_db: Path) -> Iterator[Batched]:
    """One search whose first batch job expires (exit 3), then the same command, which completes."""
    tmp = tmp_path_factory.mktemp("optimize-batch")
    shutil.copy(_migrated_mlflow_db, tmp / "mlflow.db")
    with pytest.MonkeyPatch.context() as env, FakeGemini() as server:
        use_fake_gemini_key(env)
        for name in ("PROMPTGRADE_BATCH_MAX_REQUESTS", "PROMPTGRADE_BATCH_INLINE_BYTES"):
            env.delenv(name, raising=False)
        env.setenv("PROMPTGRADE_BATCH_POLL_S", "0.05")
        experiment = write_experiment(tmp, server)
        script(server, experiment)
        server.batches.default_script = JobScript(pending_s=0.05, running_s=0.1)
        server.batches.script(JobScript(pending_s=0.05, running_s=0.1, final="EXPIRED"))
        state = Batched(tmp, server, experiment, f"sqlite:///{tmp / 'mlflow.db'}", tmp / "cache.sqlite")
        state.first = state.optimize()
        state.second = state.optimize()
        yield state


def task_requests(batched: Batched) -> list[object]:
    return [r for r in batched.server.requests if r.model == TASK_MODEL]


def test_an_expired_job_stops_the_search_resumable_and_the_same_command_finishes_it(batched: Batched) -> None:
    first, second = batched.runs()
    assert first.exit_code == 3, first.output
    assert "were not answered by their batch jobs" in first.output
    assert "the same command resubmits the rest" in first.output
    assert "Traceback" not in first.output
    assert second.exit_code == 0, second.output
    assert "wrote meal_tray_json@2" in second.output
    v2 = PromptLibrary(batched.tmp / "prompts").get("meal_tray_json", 2)
    assert INSTRUCTION in v2.body  # the same version the online search writes


def test_the_task_model_is_asked_only_through_batch_jobs_and_each_request_once(batched: Batched) -> None:
    requests = task_requests(batched)
    assert requests and all(is_batch(r) for r in requests)  # 0 online calls to the task model
    # the expired job's requests were sent again (no answer came back), every other one exactly once
    expired = next(iter(batched.server.batches.jobs.values()))  # its requests are the first recorded
    resent = {(r.prompt, r.image_sha256) for r in requests[: len(expired.results)]}
    sent = [(r.prompt, r.image_sha256) for r in requests]
    assert resent and all(sent.count(pair) == 2 for pair in resent)
    assert all(sent.count(pair) == 1 for pair in set(sent) - resent)
    assert batched.server.batches.created >= 3  # the expired job, its resubmission, the proposals' jobs
    reflections = [r for r in batched.server.requests if r.model == REFLECTION_MODEL]
    assert reflections and not any(is_batch(r) for r in reflections)
    second = batched.runs()[1].output
    assert "batch: waiting for" in second and "succeeded after" in second


def test_mlflow_says_the_search_ran_in_batch_mode(batched: Batched) -> None:
    client = MlflowClient(tracking_uri=batched.tracking)
    experiment = client.get_experiment_by_name("optimize-e2e")
    runs = client.search_runs(
        [experiment.experiment_id],
        "tags.`promptgrade.kind` = 'optimization'",
        order_by=["attributes.start_time ASC"],
    )
    assert len(runs) == 2 and all(run.data.params["batch"] == "True" for run in runs)
    stopped, finished = runs
    assert "were not answered by their batch jobs" in stopped.data.tags["stop_reason"]
    assert stopped.data.tags["written_versions"] == ""
    assert finished.data.tags["written_versions"] == "meal_tray_json@2"


def test_batch_without_the_cache_is_one_clear_line(batched: Batched) -> None:
    jobs = batched.server.batches.created
    result = batched.optimize("--no-cache")
    assert result.exit_code == 2, result.output
    assert "optimize --batch fills the answer cache and scores from it: drop --no-cache" in result.output
    assert "Traceback" not in result.output and batched.server.batches.created == jobs


def test_a_model_whose_batch_jobs_need_a_hundred_requests_is_refused_before_any_call(
    batched: Batched, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMPTGRADE_BEDROCK_BATCH_MIN_RECORDS", raising=False)
    text = batched.experiment.read_text().replace(
        f"  - model: {TASK_MODEL}\n",
        "  - provider: bedrock\n    model: amazon.nova-lite-v1:0\n    region: us-east-1\n"
        "    batch_s3_uri: s3://a-bucket/prefix\n"
        "    batch_role_arn: arn:aws:iam::123456789012:role/promptgrade-batch\n",
    )
    path = batched.tmp / "bedrock.yaml"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    calls = len(batched.server.requests)
    args = ["optimize", str(path), *OPTIMIZE_ARGS, "--batch", "--cache", str(batched.cache)]
    result = RUNNER.invoke(app, [*args, "--tracking-uri", batched.tracking])
    assert result.exit_code == 2, result.output
    assert "amazon.nova-lite-v1:0's batch jobs take at least 100 requests" in result.output
    assert "drop --batch" in result.output
    assert len(batched.server.requests) == calls
