"""SQS events as the Lambda service delivers them to a function, and the bodies S3 and backfill send.

Trimmed from the documented example of an SQS event, keeping every field of a record: a handler must
read ``messageId`` and ``body`` and may read ``attributes.ApproximateReceiveCount``, and nothing in
it may rely on a field the real service leaves out.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from helpers.lambda_events import s3_object_created

QUEUE_ARN = "arn:aws:sqs:eu-west-1:123456789012:promptgrade-grade"


def sqs_record(body: str, *, message_id: str | None = None, receive_count: int = 1) -> dict[str, Any]:
    message_id = message_id or str(uuid.uuid4())
    return {
        "messageId": message_id,
        "receiptHandle": f"AQEB{hashlib.sha256(f'{message_id}{receive_count}'.encode()).hexdigest()}",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": str(receive_count),
            "SentTimestamp": "1764141000000",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1764141000010",
        },
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode()).hexdigest(),  # SQS's own checksum of the body
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": "eu-west-1",
    }


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
