"""The OpenAI Batch API's own rules and faults: the uploaded file, a server without the Batch API, a job
that fails validation, an expired job's error file.

The official ``openai`` client talks to the local OpenAI-compatible server's Files and Batch APIs at the
model's ``base_url``, as it would to any server speaking them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.batch_servers import BatchServer, batch_server, jsonl
from helpers.sweeps import candidate_runs, sweep
from promptgrade.batch.jobs import store_journal
from promptgrade.providers.openai_batch import DISPLAY_NAME, ENDPOINT
from promptgrade.testing.batch_scripts import JobScript

N = 6


@pytest.fixture
def openai_server(monkeypatch: pytest.MonkeyPatch, moto_server: str, tmp_path: Path) -> Iterator[BatchServer]:
    with batch_server("openai", monkeypatch, moto_server, tmp_path, N) as server:
        yield server


def test_the_uploaded_file_holds_the_online_bodies_by_cache_key(
    openai_server: BatchServer, tmp_path: Path, tracking: str
) -> None:
    path = openai_server.experiment(tmp_path, "openai-file", n=N, json_only=True)
    result = sweep(path, tracking)
    assert result.exit_code == 0, result.output
    (job,) = store_journal().jobs()
    (created,) = openai_server.new_jobs()
    assert created.id == job.name and created.metadata == {DISPLAY_NAME: job.display_name}
    assert created.endpoint == ENDPOINT
    purpose, data = openai_server.batches.files[created.input_file_id]
    lines = jsonl(data)
    assert purpose == "batch" and {line["custom_id"] for line in lines} == set(
        store_journal().requests(job.local_id)
    )
    for line in lines:
        assert line["method"] == "POST" and line["url"] == ENDPOINT
        body = line["body"]
        assert body["model"] == openai_server.model and body["max_tokens"] == 256
        assert body["response_format"]["type"] == "json_schema"
        assert [part["type"] for part in body["messages"][0]["content"]] == ["image_url", "text"]
    (run,) = candidate_runs(tracking, "openai-file")
    assert run.data.metrics["error_rate"] == 0


def test_a_server_without_the_batch_api_is_one_line_and_nothing_is_lost(
    openai_server: BatchServer, tmp_path: Path, tracking: str
) -> None:
    openai_server.batches.offered = False
    path = openai_server.experiment(tmp_path, "openai-404", n=N)
    result = sweep(path, tracking)
    assert result.exit_code == 2, result.output
    assert (
        f"{openai_server.model}: uploading the requests file: the server at {openai_server.endpoint} does not "
        "offer the Batch API (HTTP 404 on /v1/files or /v1/batches): sweep this model online"
    ) in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert openai_server.jobs() == 0 and not openai_server.server.requests and not store_journal().jobs()

    openai_server.batches.offered = True  # the server gained the API: the same command submits everything
    again = sweep(path, tracking)
    assert again.exit_code == 0, again.output
    assert openai_server.jobs() == 2 and len(openai_server.batch()) == 2 * N and not openai_server.online()


def test_a_job_that_fails_validation_is_reported_and_resubmitted(
    openai_server: BatchServer, tmp_path: Path, tracking: str
) -> None:
    path = openai_server.experiment(tmp_path, "openai-failed", n=N, json_only=True)
    openai_server.batches.script(JobScript(pending_s=0.0, running_s=0.05, final="FAILED"))
    first = sweep(path, tracking)
    assert first.exit_code == 0, first.output
    assert "ended failed (scripted validation failure)" in first.output
    assert candidate_runs(tracking, "openai-failed")[-1].data.metrics["error_rate"] == 1.0

    second = sweep(path, tracking)
    assert second.exit_code == 0, second.output
    assert openai_server.jobs() == 2
    assert candidate_runs(tracking, "openai-failed")[-1].data.metrics["error_rate"] == 0


def test_an_expired_job_is_read_from_its_error_file(
    openai_server: BatchServer, tmp_path: Path, tracking: str
) -> None:
    path = openai_server.experiment(tmp_path, "openai-expired", n=N, json_only=True)
    openai_server.batches.script(JobScript(pending_s=0.0, running_s=0.05, final="EXPIRED"))
    result = sweep(path, tracking)
    assert result.exit_code == 0, result.output
    assert "batch_expired window expired" in " ".join(result.output.split())  # each request's own reason
    (created,) = openai_server.new_jobs()
    assert created.written is not None and created.written[0] is None  # an error file, no output file
    errors = jsonl(openai_server.batches.files[created.written[1]][1])
    assert len(errors) == N and all(line["error"]["code"] == "batch_expired" for line in errors)
    assert json.dumps(errors[0]).count("custom_id") == 1
