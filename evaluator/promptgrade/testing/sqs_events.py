"""SQS records as the Lambda service hands them to a function, for the tests and the SQS benchmark.

Trimmed from the documented example of an SQS event, keeping every field of a record: a handler reads
``messageId`` and ``body`` and may read ``attributes.ApproximateReceiveCount``, and nothing in it may
rely on a field the real service leaves out.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

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
