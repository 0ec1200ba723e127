"""Bedrock batch inference's own rules and faults: records in S3, the S3 prefix and role, the minimum
number of records, a model that needs an inference profile, a job that fails validation.

boto3's ``bedrock`` and ``s3`` clients talk to the local Bedrock server (which plays the control plane
and reads and writes S3 as the service does) and to moto's S3 server.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.batch_servers import BatchServer, batch_server, jsonl, objects
from helpers.sweeps import candidate_runs, sweep
from promptgrade.batch.jobs import store_journal
from promptgrade.cli import app
from promptgrade.providers.bedrock_batch import MIN_RECORDS

RUNNER = CliRunner(env={"COLUMNS": "200"})
N = 6


@pytest.fixture
def bedrock(monkeypatch: pytest.MonkeyPatch, moto_server: str, tmp_path: Path) -> Iterator[BatchServer]:
    with batch_server("bedrock", monkeypatch, moto_server, tmp_path, N) as server:
        yield server


def prefix_of(bedrock: BatchServer) -> str:
    return bedrock.fields["batch_s3_uri"].split("/", 3)[3]


def test_the_records_in_s3_are_the_online_converse_requests_by_cache_key(
    bedrock: BatchServer, tmp_path: Path, tracking: str, moto_server: str
) -> None:
    path = bedrock.experiment(tmp_path, "bedrock-records", n=N, json_only=True)
    result = sweep(path, tracking)
    assert result.exit_code == 0, result.output
    (job,) = store_journal().jobs()
    stored = objects(moto_server, prefix_of(bedrock))
    records = jsonl(stored[f"{prefix_of(bedrock)}/{job.display_name}/input/records.jsonl"])
    assert {r["recordId"] for r in records} == set(store_journal().requests(job.local_id))  # the cache keys
    sent = {r.image_sha256 for r in bedrock.batch()}
    for record in records:
        body = record["modelInput"]
        assert "modelId" not in body and body["toolConfig"]["toolChoice"] == {"tool": {"name": "answer"}}
        assert body["inferenceConfig"] == {"temperature": 0.0, "maxTokens": 256}
        (image,) = [block["image"] for block in body["messages"][0]["content"] if "image" in block]
        assert hashlib.sha256(base64.b64decode(image["source"]["bytes"])).hexdigest() in sent

    (created,) = bedrock.new_jobs()
    assert created.request["modelInvocationType"] == "Converse"
    assert created.request["roleArn"] == bedrock.fields["batch_role_arn"]
    assert created.request["jobName"] == created.request["clientRequestToken"] == job.display_name
    output = f"{prefix_of(bedrock)}/{job.display_name}/output/{created.job_id}"
    assert len(jsonl(stored[f"{output}/records.jsonl.out"])) == N
    manifest = json.loads(stored[f"{output}/manifest.json.out"])
    assert manifest["successRecordCount"] == N and manifest["errorRecordCount"] == 0
    assert job.stats == {
        "requestCount": N,
        "successfulRequestCount": N,
        "failedRequestCount": 0,
    }  # read there
    (run,) = candidate_runs(tracking, "bedrock-records")
    assert run.data.metrics["error_rate"] == 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("batch_s3_uri", None, "Bedrock batch jobs need batch_s3_uri: set it on the model"),
        ("batch_role_arn", None, "Bedrock batch jobs need batch_role_arn: set it on the model"),
        (
            "batch_s3_uri",
            "my-bucket/trays",
            "batch_s3_uri 'my-bucket/trays' is not an S3 URI: s3://bucket/prefix",
        ),
        ("batch_role_arn", "batch-role", "batch_role_arn 'batch-role' is not an IAM role ARN"),
    ],
)
def test_a_missing_or_malformed_s3_prefix_or_role_is_one_line(
    bedrock: BatchServer, tmp_path: Path, tracking: str, field: str, value: str | None, message: str
) -> None:
    fields = dict(bedrock.fields)
    if value is None:
        del fields[field]
    else:
        fields[field] = value
    bedrock.fields = fields
    result = sweep(bedrock.experiment(tmp_path, "bedrock-fields", n=N), tracking)
    assert result.exit_code == 2, result.output
    assert f"{bedrock.model}: " in result.output and message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert bedrock.jobs() == 0 and not bedrock.batch() and not store_journal().jobs()


def test_a_bucket_that_does_not_exist_is_one_line_and_the_next_run_submits(
    bedrock: BatchServer, tmp_path: Path, tracking: str
) -> None:
    good = bedrock.fields["batch_s3_uri"]
    path = bedrock.experiment(tmp_path, "bedrock-bucket", n=N, batch_s3_uri="s3://no-such-bucket/trays")
    result = sweep(path, tracking)
    assert result.exit_code == 2, result.output
    assert (
        f"{bedrock.model}: the S3 bucket 'no-such-bucket' of batch_s3_uri does not exist: set batch_s3_uri"
        in result.output
    )
    assert "Traceback" not in result.output
    assert bedrock.jobs() == 0 and not store_journal().jobs()  # nothing created, nothing journalled

    path.write_text(path.read_text().replace("s3://no-such-bucket/trays", good), encoding="utf-8")
    again = sweep(path, tracking)
    assert again.exit_code == 0, again.output
    assert bedrock.jobs() == 2 and len(bedrock.batch()) == 2 * N and bedrock.sent_once()


def test_a_model_that_needs_an_inference_profile_is_named_as_such(
    bedrock: BatchServer, tmp_path: Path, tracking: str
) -> None:
    bedrock.batches.needs_profile.add(bedrock.model)
    result = sweep(bedrock.experiment(tmp_path, "bedrock-profile", n=N), tracking)
    assert result.exit_code == 2, result.output
    assert (
        f"{bedrock.model}: Bedrock runs this model's batch jobs only through an inference profile: set model "
        f"to the profile's id (e.g. us.{bedrock.model})" in result.output
    )
    assert bedrock.jobs() == 0 and not store_journal().jobs()


def test_fewer_requests_than_a_job_needs_are_held_back_and_a_sweep_without_batch_answers_them(
    bedrock: BatchServer, tmp_path: Path, tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMPTGRADE_BEDROCK_BATCH_MIN_RECORDS")  # Bedrock's own minimum: 100 records
    path = bedrock.experiment(tmp_path, "bedrock-minimum", n=N, batch=False, json_only=True)
    result = sweep(path, tracking, "--batch")
    assert result.exit_code == 0, result.output
    assert (
        f"max_output_tokens=256 · batch: {N} request(s) held back, not submitted (fewer requests than the "
        f"{MIN_RECORDS} one job needs at least); a sweep without --batch answers them online"
        in " ".join(result.output.split())
    )
    assert bedrock.jobs() == 0 and not bedrock.batch() and not bedrock.online()
    (run,) = candidate_runs(tracking, "bedrock-minimum")
    assert run.data.metrics["error_rate"] == 1.0  # each a batch_failed answer with that reason

    online = sweep(path, tracking)
    assert online.exit_code == 0, online.output
    assert len(bedrock.online()) == N and bedrock.jobs() == 0


def test_a_job_that_fails_validation_is_one_line_and_the_next_run_resubmits(
    bedrock: BatchServer, tmp_path: Path, tracking: str
) -> None:
    bedrock.batches.min_records = 10  # the account's quota is above what the lab was told
    path = bedrock.experiment(tmp_path, "bedrock-invalid", n=N, json_only=True)
    first = sweep(path, tracking)
    assert first.exit_code == 0, first.output
    assert (
        "ended failed (The number of records (6) is below the minimum of 10 records per batch" in first.output
    )
    assert f"{N} request(s) of meal_tray_json@v1" in first.output
    assert not bedrock.batch()  # a job that failed validation ran nothing

    bedrock.batches.min_records = 1
    second = sweep(path, tracking)
    assert second.exit_code == 0, second.output
    assert bedrock.jobs() == 2 and len(bedrock.batch()) == N
    assert candidate_runs(tracking, "bedrock-invalid")[-1].data.metrics["error_rate"] == 0


def test_batches_list_shows_bedrock_jobs_by_id_and_cancel_takes_it(
    bedrock: BatchServer, tmp_path: Path, tracking: str
) -> None:
    from promptgrade.testing.batch_scripts import JobScript

    bedrock.batches.default_script = JobScript(pending_s=0.05, running_s=60.0)
    path = bedrock.experiment(tmp_path, "bedrock-list", n=N, json_only=True)
    assert sweep(path, tracking, "--no-wait").exit_code == 3
    (created,) = bedrock.new_jobs()
    listed = RUNNER.invoke(app, ["batches", "list"])
    assert listed.exit_code == 0 and created.job_id in listed.output and "bedrock-list" in listed.output
    cancelled = RUNNER.invoke(app, ["batches", "cancel", created.job_id])
    assert cancelled.exit_code == 0, cancelled.output
    assert created.status(created.created + 1) == "Stopped"
