"""Fixtures for production at scale: moto's S3 and SQS, and the grading function deployed behind its
queue in this process (the bundle, the key, the local Gemini server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from helpers.bundles import promoted_bundle, released_prompt
from helpers.deployed import deploy_locally, fake_aws
from lambda_handler import app
from promptgrade.bundle import Bundle, Provenance, load_bundle
from promptgrade.testing.gemini_server import FakeGemini

INPUT, OUTPUT = "trays-backlog", "trays-graded"
ANSWER = '{"categories": ["soup", "bread"], "food_remaining_pct": 40}'
# what the promoted candidate was measured at: 200 trays for $0.50, 80% category accuracy
MEASURED = {"cost_usd": 0.5, "n_examples": 200.0, "category_accuracy": 0.8, "grade_accuracy": 0.7}


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    provenance = Provenance(
        run_id="run-1", experiment="meal_tray", metrics=MEASURED, promoted_at="2026-11-30T08:00:00Z"
    )
    return promoted_bundle(tmp_path / "bundle", released_prompt(), provenance=provenance)


@pytest.fixture
def bundle(bundle_dir: Path) -> Bundle:
    return load_bundle(bundle_dir)


@pytest.fixture
def function(
    monkeypatch: pytest.MonkeyPatch, bundle_dir: Path, gemini_server: FakeGemini, tmp_path: Path
) -> Iterator[FakeGemini]:
    """The function deployed behind a queue, each test a cold start: input and output buckets, in moto;
    the cwd a temp folder (a backfill's marker file goes there)."""
    app.reset()
    with fake_aws(monkeypatch):
        deploy_locally(monkeypatch, bundle_dir, gemini_server)
        s3 = boto3.client("s3")
        for bucket in (INPUT, OUTPUT):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        monkeypatch.setenv("PROMPTGRADE_OUTPUT_BUCKET", OUTPUT)
        monkeypatch.setenv("PROMPTGRADE_INPUT_BUCKETS", INPUT)
        monkeypatch.chdir(tmp_path)
        gemini_server.default_answer = ANSWER
        yield gemini_server
    app.reset()


@pytest.fixture
def queue_url(function: FakeGemini) -> str:
    return str(boto3.client("sqs").create_queue(QueueName="promptgrade-grade")["QueueUrl"])
