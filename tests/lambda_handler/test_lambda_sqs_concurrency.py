"""Given two instances of the function receiving the same message at once (SQS delivers at least once),
then the tray is paid for at most once more than ideal and exactly one result is kept.

Two real processes run the handler, as two Lambda instances would, against one moto server over HTTP
(its conditional writes are what decides) and the local Gemini server, which holds the first call
until the second arrives: both have looked for a stored result and found none, the worst case.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import urllib3

from helpers.deployed import moto_endpoint
from helpers.lambda_events import API_KEY, SECRET_ID
from helpers.sqs_events import s3_notification_body, sqs_event, sqs_record
from promptgrade.bundle import load_bundle
from promptgrade.stored_results import ResultLayout, bundle_sha256
from promptgrade.testing.gemini_server import FakeGemini, RequestInfo

REGION = "eu-west-1"
INPUT, OUTPUT = "trays-incoming", "trays-graded"
ANSWER = '{"categories": ["soup", "bread"], "food_remaining_pct": 40}'
INSTANCE = """
import json, sys
from lambda_handler import app
event = json.loads(sys.stdin.read())
print("RESULT:" + json.dumps(app.handler(event, None)))
"""


@pytest.fixture
def moto_server() -> Iterator[str]:
    with moto_endpoint() as url:
        yield url


def test_two_instances_delivered_the_same_message_at_once_keep_one_result(
    moto_server: str, bundle_dir: Path, tray_jpeg: bytes, tmp_path: Path
) -> None:
    both_asked = threading.Barrier(2)

    def wait_for_the_other(_: RequestInfo) -> float:
        both_asked.wait(timeout=60)  # the first call is answered only once the second has arrived
        return 0.0

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PROMPTGRADE_", "GOOGLE_"))},
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": moto_server,
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_CONFIG_FILE": "/dev/null",
        "PROMPTGRADE_BUNDLE_DIR": str(bundle_dir),
        "PROMPTGRADE_API_KEY_SECRET_ID": SECRET_ID,
        "PROMPTGRADE_OUTPUT_BUCKET": OUTPUT,
        "PROMPTGRADE_INPUT_BUCKETS": INPUT,
    }
    urllib3.PoolManager().request("POST", f"{moto_server}/moto-api/reset")

    def aws(service: str) -> Any:
        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=moto_server,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    s3 = aws("s3")
    for bucket in (INPUT, OUTPUT):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket=INPUT, Key="in/t.jpg", Body=tray_jpeg)
    aws("secretsmanager").create_secret(Name=SECRET_ID, SecretString=API_KEY)
    message = sqs_record(s3_notification_body(INPUT, "in/t.jpg", len(tray_jpeg)), message_id="m-1")
    event = json.dumps(sqs_event([message]))

    with FakeGemini(default_answer=ANSWER, latency_s=wait_for_the_other) as gemini:
        env["PROMPTGRADE_GEMINI_BASE_URL"] = gemini.base_url
        instances = [
            subprocess.Popen(
                [sys.executable, "-c", INSTANCE],
                env=env,
                cwd=tmp_path,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for instance in instances:  # both get the message before either is waited for
            assert instance.stdin is not None
            instance.stdin.write(event)
            instance.stdin.close()
        outputs = []
        for instance in instances:
            assert instance.stdout is not None and instance.stderr is not None
            instance.wait(timeout=120)
            outputs.append((instance.stdout.read(), instance.stderr.read()))
        calls = gemini.calls

    answers = []
    for (stdout, stderr), instance in zip(outputs, instances, strict=True):
        assert instance.returncode == 0, stderr[-2000:]
        answers.append(json.loads(stdout.split("RESULT:", 1)[1]))
    assert answers == [{"batchItemFailures": []}] * 2
    assert calls == 2  # one more than ideal, at most
    layout = ResultLayout("results/", bundle_sha256(load_bundle(bundle_dir).manifest))
    listed = s3.list_objects_v2(Bucket=OUTPUT, Prefix=layout.folder("images/"))
    assert listed["KeyCount"] == 1
    both_logs = "".join(stdout for stdout, _ in outputs)
    assert both_logs.count('"graded twice"') == 1  # the loser says it kept the first result
