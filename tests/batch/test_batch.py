"""Gemini's own batch rules and faults — the file route, a 429 while polling, Vertex AI, the inline
limit's setting — and the executor's checks shown on Gemini: the budget before any job, another
experiment's jobs left alone, a Bedrock model without its S3 prefix and role.

The real google-genai client talks to the local server's Batch and Files APIs; jobs finish in a
fraction of a second; the server records every inner request, so "never sent twice" is counted there.
The story every provider shares (submit, wait, score; --no-wait; kill -9; partial failures; cancel) is
in test_batch_providers.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.batch_servers import BatchServer, batch_server
from helpers.sweeps import candidate_runs, sweep
from promptgrade.cli import app
from promptgrade.testing.batch_scripts import JobScript
from promptgrade.testing.gemini_server import Fault

RUNNER = CliRunner(env={"COLUMNS": "200"})
N = 6  # examples per candidate


@pytest.fixture
def gemini(monkeypatch: pytest.MonkeyPatch, moto_server: str, tmp_path: Path) -> Iterator[BatchServer]:
    with batch_server("gemini", monkeypatch, moto_server, tmp_path, N) as server:
        yield server


def test_file_route_and_a_429_while_polling(
    tmp_path: Path, gemini: BatchServer, tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTGRADE_BATCH_INLINE_BYTES", "1000")  # any job is "too big" to go inline
    path = gemini.experiment(tmp_path, "batch-file", n=N)
    uploads = len(gemini.batches.files)
    gemini.batches.poll_faults.append(Fault.rate_limited(retry_delay="0.5s"))
    result = sweep(path, tracking)
    assert result.exit_code == 0, result.output
    assert gemini.jobs() == 2 and len(gemini.batch()) == 2 * N
    assert len(gemini.batches.files) == uploads + 4  # two request files uploaded, two responses files
    jobs = gemini.new_jobs()
    assert {job.route for job in jobs} == {"file"}
    polls = sorted(t for job in jobs for t in job.polled_at)  # the first poll got the 429; the second job's
    assert polls[2] - polls[1] >= 0.5  # poll went on, then the next round waited out the RetryInfo delay
    runs = candidate_runs(tracking, "batch-file")
    assert all(r.data.metrics["category_accuracy"] == pytest.approx(0.5) for r in runs)


def test_batch_on_a_model_without_what_its_batch_jobs_need_is_one_clear_line(
    tmp_path: Path, gemini: BatchServer
) -> None:
    """Every provider now has a batch back-end (a Bedrock or OpenAI model is no longer refused); what a
    provider's jobs need and the model lacks — a Bedrock job's S3 prefix and role — is one line."""
    path = gemini.experiment(tmp_path, "batch-e2e", n=N, batch=False)
    path.write_text(
        path.read_text().replace(
            "  - provider: gemini\n    model: gemini-2.5-flash",
            "  - provider: bedrock\n    model: amazon.nova-lite-v1:0",
        )
    )
    result = RUNNER.invoke(app, ["sweep", str(path), "--batch", "--dry-run"])
    assert result.exit_code == 2
    assert (
        "amazon.nova-lite-v1:0: Bedrock batch jobs need batch_role_arn and batch_s3_uri: set them on the model"
        in result.output
    )
    assert "Traceback" not in result.output


def test_budget_is_checked_before_any_job_is_submitted(
    tmp_path: Path, gemini: BatchServer, tracking: str
) -> None:
    path = gemini.experiment(tmp_path, "batch-budget", n=N)
    path.write_text(path.read_text() + "max_cost_usd: 0.0001\n", encoding="utf-8")
    result = sweep(path, tracking)
    assert result.exit_code == 3, result.output
    assert "max_cost_usd=$0.0001: the batch jobs could cost ~$" in result.output
    assert gemini.jobs() == 0 and not gemini.batch()


def test_vertex_ai_batch_is_one_clear_line(
    tmp_path: Path, gemini: BatchServer, tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_GENAI_USE_VERTEXAI", "true")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "p")
    monkeypatch.setenv("GOOGLE_CLOUD_LOCATION", "us-central1")
    path = gemini.experiment(tmp_path, "batch-vertex", n=N)
    result = sweep(path, tracking)
    assert result.exit_code == 2, result.output
    assert "Vertex AI batch prediction needs a GCS or BigQuery source" in result.output
    assert "Traceback" not in result.output


def test_a_sweep_waits_only_for_jobs_holding_its_own_requests(
    tmp_path: Path, gemini: BatchServer, tracking: str
) -> None:
    other = gemini.experiment(tmp_path, "batch-other", n=N)
    other.write_text(other.read_text().replace("  - meal_tray_json@1\n", ""), encoding="utf-8")
    mine = gemini.experiment(tmp_path, "batch-mine", n=N, json_only=True)
    gemini.batches.script(JobScript(pending_s=0.05, running_s=60.0))  # the other experiment's job: "tomorrow"
    assert sweep(other, tracking, "--no-wait").exit_code == 3
    started = time.monotonic()
    result = sweep(mine, tracking)
    assert result.exit_code == 0, result.output
    assert "picked up" not in result.output and time.monotonic() - started < 30


def test_a_bad_inline_limit_is_one_line_before_anything_is_submitted(
    tmp_path: Path, gemini: BatchServer, tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTGRADE_BATCH_INLINE_BYTES", "20MB")
    path = gemini.experiment(tmp_path, "batch-limit", n=N)
    result = sweep(path, tracking)
    assert result.exit_code == 2 and "PROMPTGRADE_BATCH_INLINE_BYTES='20MB'" in result.output
    assert gemini.jobs() == 0


def test_a_batch_is_billed_for_its_images_as_online_calls_are(
    tmp_path: Path, gemini: BatchServer, tracking: str
) -> None:
    """The stand-in's bill for an image (``promptgrade fake-gemini --prices``: the price table's rule for
    the model) holds for a batch's inner requests too, so a batch sweep's input tokens are what the same
    calls online would be billed — not 258 per image whatever the model."""
    gemini.server.image_tokens = lambda info: 1120  # Gemini 3's documented count, any size
    try:
        path = gemini.experiment(tmp_path, "batch-billed", n=N)
        result = sweep(path, tracking)
    finally:
        gemini.server.image_tokens = None
    assert result.exit_code == 0, result.output
    inner = gemini.batch()
    assert len(inner) == 2 * N and {r.image_tokens for r in inner} == {1120}
    billed = sum(u.input_tokens for u in gemini.server.usage[-2 * N :])
    runs = candidate_runs(tracking, "batch-billed")
    assert sum(r.data.metrics["input_tokens"] for r in runs) == billed
    assert billed >= 2 * N * 1120
