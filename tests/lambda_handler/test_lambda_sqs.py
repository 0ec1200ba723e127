"""Given the function behind an SQS queue, when a batch arrives (and arrives again), then only what a
retry may cure is retried, and no image is ever paid for twice.

The real handler gets SQS events shaped as the Lambda service sends them (messageId, receiptHandle,
attributes.ApproximateReceiveCount, eventSource aws:sqs), whose bodies are S3 event notifications or
direct grading requests; S3 is moto (its conditional writes included), the model the local Gemini
server, which counts every call it is sent.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from helpers.lambda_events import context, make_jpeg
from helpers.sqs_events import grading_request_body, redelivered, s3_notification_body, sqs_event, sqs_record
from lambda_handler import app
from promptgrade.bundle import Bundle
from promptgrade.images import prepare_image
from promptgrade.stored_results import ResultLayout, bundle_sha256, source_sha256
from promptgrade.testing.gemini_server import FakeGemini, Fault

INPUT, OUTPUT = "trays-incoming", "trays-graded"
ANSWER = '{"categories": ["soup", "bread"], "food_remaining_pct": 40}'


@pytest.fixture
def queue_env(lambda_env: FakeGemini, monkeypatch: pytest.MonkeyPatch) -> FakeGemini:
    """The function as the SAM template deploys it behind the queue: input and output buckets."""
    s3 = boto3.client("s3")
    for bucket in (INPUT, OUTPUT):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    monkeypatch.setenv("PROMPTGRADE_OUTPUT_BUCKET", OUTPUT)
    monkeypatch.setenv("PROMPTGRADE_INPUT_BUCKETS", INPUT)
    lambda_env.default_answer = ANSWER
    return lambda_env


def upload(key: str, data: bytes) -> None:
    boto3.client("s3").put_object(Bucket=INPUT, Key=key, Body=data, ContentType="image/jpeg")


def keys(prefix: str) -> list[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=OUTPUT, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def stored(key: str) -> dict[str, Any]:
    return json.loads(boto3.client("s3").get_object(Bucket=OUTPUT, Key=key)["Body"].read())


def layout(bundle: Bundle) -> ResultLayout:
    return ResultLayout("results/", bundle_sha256(bundle.manifest))


def test_only_transient_failures_are_retried_and_redelivery_pays_only_for_them(
    queue_env: FakeGemini, bundle: Bundle
) -> None:
    """The issue's test: 10 records, 2 images hit a 503 and 1 is unreadable."""
    records = []
    trays = {}
    for n in range(9):
        data = make_jpeg((20 * n, 200 - 20 * n, 90))
        key = f"in/tray-{n}.jpg"
        upload(key, data)
        trays[key] = data
        # S3 notifications and direct requests (what a backfill sends) in one batch
        body = (
            s3_notification_body(INPUT, key, len(data))
            if n % 3
            else grading_request_body(f"s3://{INPUT}/{key}")
        )
        records.append(sqs_record(body, message_id=f"msg-{n}"))
    upload("in/menu.jpg", b"<!doctype html><html>today's menu</html>")
    records.append(sqs_record(s3_notification_body(INPUT, "in/menu.jpg", 40), message_id="msg-unreadable"))
    side = bundle.manifest.image_max_side
    for key in ("in/tray-2.jpg", "in/tray-6.jpg"):
        prepared = prepare_image(trays[key], max_side=side).sha256
        queue_env.enqueue_fault(Fault.server_error(503), image_sha256=prepared)
    event = sqs_event(records)

    first = app.handler(event, context())

    assert first == {"batchItemFailures": [{"itemIdentifier": "msg-2"}, {"itemIdentifier": "msg-6"}]}
    assert queue_env.calls == 9  # every image but the unreadable one was sent once
    results = layout(bundle)
    assert len(keys(results.folder("images/"))) == 7
    unreadable = stored(results.source(INPUT, "in/menu.jpg", _etag("in/menu.jpg")))
    assert unreadable["error"]["code"] == "unsupported_media_type"

    second = app.handler(redelivered(event), context())

    assert second == {"batchItemFailures": []}
    assert queue_env.calls == 11  # exactly the two that failed transiently
    assert len(keys(results.folder("images/"))) == 9

    third = app.handler(redelivered(redelivered(event)), context())

    assert third == {"batchItemFailures": []}
    assert queue_env.calls == 11


def _etag(key: str) -> str:
    return str(boto3.client("s3").head_object(Bucket=INPUT, Key=key)["ETag"])


def test_a_stored_result_says_which_bundle_prompt_and_model_graded_which_image(
    queue_env: FakeGemini, bundle: Bundle, tray_jpeg: bytes
) -> None:
    upload("in/t 1.jpg", tray_jpeg)
    app.handler(sqs_event([sqs_record(s3_notification_body(INPUT, "in/t 1.jpg", len(tray_jpeg)))]), context())

    import hashlib

    image_sha256 = hashlib.sha256(tray_jpeg).hexdigest()
    result = stored(layout(bundle).image(image_sha256))
    manifest = bundle.manifest
    assert result["id"] == "in/t 1.jpg" and result["source"] == f"s3://{INPUT}/in/t 1.jpg"
    assert (result["categories"], result["food_remaining_pct"]) == (["soup", "bread"], 40)
    assert result["bundle"]["sha256"] == bundle_sha256(manifest)
    assert result["bundle"]["format_version"] == manifest.format_version
    assert result["prompt"] == {
        "name": manifest.prompt.name,
        "version": manifest.prompt.version,
        "sha256": manifest.prompt.sha256,
    }
    assert (result["provider"], result["model"]) == ("gemini", manifest.model)
    assert result["image_sha256"] == image_sha256
    assert result["timing_ms"]["model"] > 0 and result["usage"]["input_tokens"] > 0
    marker = stored(layout(bundle).source(INPUT, "in/t 1.jpg", _etag("in/t 1.jpg")))
    assert marker["result"] == layout(bundle).image(image_sha256)
    assert source_sha256(INPUT, "in/t 1.jpg", _etag("in/t 1.jpg")) in layout(bundle).source(
        INPUT, "in/t 1.jpg", _etag("in/t 1.jpg")
    )


def test_permanent_failures_are_written_with_their_reason_and_never_retried(
    queue_env: FakeGemini, bundle: Bundle, monkeypatch: pytest.MonkeyPatch, tray_jpeg: bytes
) -> None:
    monkeypatch.setenv("PROMPTGRADE_MAX_IMAGE_BYTES", str(len(tray_jpeg) - 1))
    upload("in/big.jpg", tray_jpeg)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="elsewhere", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_object(Bucket="elsewhere", Key="in/t.jpg", Body=tray_jpeg)
    bodies = {
        "not-json": "hello",
        "neither": json.dumps({"greeting": "hello"}),
        "deleted": s3_notification_body(INPUT, "in/gone.jpg", 1234),
        "oversized": s3_notification_body(INPUT, "in/big.jpg", len(tray_jpeg)),
        "other-bucket": s3_notification_body("elsewhere", "in/t.jpg", len(tray_jpeg)),
        "refused-url": grading_request_body(url="https://127.0.0.1/tray.jpg", id="lab-tray"),
    }
    event = sqs_event([sqs_record(body, message_id=name) for name, body in bodies.items()])

    assert app.handler(event, context()) == {"batchItemFailures": []}
    assert app.handler(redelivered(event), context()) == {"batchItemFailures": []}

    assert queue_env.calls == 0
    results = layout(bundle)
    errors = {stored(k)["message_id"]: stored(k)["error"]["code"] for k in keys(results.folder("errors/"))}
    assert errors == {
        "not-json": "invalid_message",
        "neither": "invalid_message",
        "deleted": "s3_not_found",
        "other-bucket": "s3_bucket_not_allowed",
        "refused-url": "url_not_allowed",
    }
    oversized = stored(results.source(INPUT, "in/big.jpg", _etag("in/big.jpg")))
    assert oversized["error"]["code"] == "payload_too_large"
    assert stored(results.error("refused-url", 0))["id"] == "lab-tray"


def test_the_same_image_twice_in_a_batch_or_under_another_name_later_is_paid_once(
    queue_env: FakeGemini, bundle: Bundle, tray_jpeg: bytes
) -> None:
    for key in ("in/a.jpg", "in/b.jpg", "in/c.jpg"):
        upload(key, tray_jpeg)
    queue_env.latency_s = 0.2  # both in flight at once
    batch = [sqs_record(s3_notification_body(INPUT, k, len(tray_jpeg))) for k in ("in/a.jpg", "in/b.jpg")]

    assert app.handler(sqs_event(batch), context()) == {"batchItemFailures": []}
    assert queue_env.calls == 1
    later = [sqs_record(grading_request_body(f"s3://{INPUT}/in/c.jpg"))]
    assert app.handler(sqs_event(later), context()) == {"batchItemFailures": []}
    assert queue_env.calls == 1
    assert len(keys(layout(bundle).folder("images/"))) == 1
    assert len(keys(layout(bundle).folder("sources/"))) == 3


def test_a_rate_limit_and_a_missing_output_bucket_send_the_messages_back(
    queue_env: FakeGemini, monkeypatch: pytest.MonkeyPatch, tray_jpeg: bytes
) -> None:
    upload("in/t.jpg", tray_jpeg)
    event = sqs_event([sqs_record(s3_notification_body(INPUT, "in/t.jpg", len(tray_jpeg)), message_id="m1")])
    queue_env.enqueue_fault(Fault.rate_limited("3s"))

    assert app.handler(event, context()) == {"batchItemFailures": [{"itemIdentifier": "m1"}]}

    monkeypatch.delenv("PROMPTGRADE_OUTPUT_BUCKET")
    with pytest.raises(app.InvocationError, match="config_error"):
        app.handler(redelivered(event), context())
    assert queue_env.calls == 1


def test_an_s3_test_event_and_the_functions_own_output_are_no_work(queue_env: FakeGemini) -> None:
    test_event = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": INPUT})
    own = s3_notification_body(OUTPUT, "results/abc/images/def.json", 200)
    event = sqs_event([sqs_record(test_event), sqs_record(own)])

    assert app.handler(event, context()) == {"batchItemFailures": []}
    assert queue_env.calls == 0
