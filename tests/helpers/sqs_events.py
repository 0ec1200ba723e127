"""SQS events as the Lambda service delivers them to a function (each record from
``promptgrade.testing.sqs_events``, shared with the benchmark), the bodies S3 and backfill send, and
the poller that drains a queue into the handler."""

from __future__ import annotations

import json
from typing import Any

from helpers.lambda_events import s3_object_created
from promptgrade.testing.sqs_events import sqs_record


def sqs_event(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Records": records}


def redelivered(event: dict[str, Any]) -> dict[str, Any]:
    """The same messages again, as SQS delivers them after their visibility timeout: same ids and
    bodies, a higher receive count and new receipt handles."""
    records = []
    for record in event["Records"]:
        count = int(record["attributes"]["ApproximateReceiveCount"]) + 1
        records.append(sqs_record(record["body"], message_id=record["messageId"], receive_count=count))
    return sqs_event(records)


def s3_notification_body(bucket: str, key: str, size: int) -> str:
    """What S3 sends to a queue for a new object: the S3 event notification, as the message body."""
    return json.dumps(s3_object_created(bucket, key, size))


def grading_request_body(s3_uri: str | None = None, **fields: Any) -> str:
    """A direct grading request (what ``promptgrade backfill`` enqueues)."""
    return json.dumps({"s3_uri": s3_uri, **fields} if s3_uri else fields)


def poll(queue_url: str, handler: Any, *, batch_size: int = 10, max_batches: int = 1000) -> int:
    """What the Lambda service's poller does with an event source mapping: receive a batch, hand it to
    the function as an SQS event, delete every message the answer does not list in batchItemFailures
    (the listed ones become visible again, here at once: visibility timeout 0). Returns the number of
    messages deleted; stops when a receive comes back empty."""
    import boto3

    sqs = boto3.client("sqs")
    deleted = 0
    for _ in range(max_batches):
        received = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=batch_size, AttributeNames=["All"], VisibilityTimeout=0
        ).get("Messages", [])
        if not received:
            return deleted
        records = [
            sqs_record(
                m["Body"],
                message_id=m["MessageId"],
                receive_count=int(m["Attributes"]["ApproximateReceiveCount"]),
            )
            | {"receiptHandle": m["ReceiptHandle"]}
            for m in received
        ]
        answer = handler(sqs_event(records), None)
        retry = {failure["itemIdentifier"] for failure in answer["batchItemFailures"]}
        done = [r for r in records if r["messageId"] not in retry]
        for record in done:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=record["receiptHandle"])
        deleted += len(done)
        if not done:
            return deleted  # only retries left: the caller decides when the outage is over
    return deleted
