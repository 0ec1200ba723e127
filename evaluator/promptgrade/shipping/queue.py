"""Put a function behind an existing SQS queue: the event source mapping the SAM template would make.

For a queue made outside the template (a team's own, or one per tenant): the mapping points at the
function's alias (so a deploy moves the queue's traffic with the callers'), reports partial batch
failures (only the messages the function lists come back), and caps the instances the queue may run
at once (``MaximumConcurrency``), which is what keeps a backlog under the provider's rate limit. The
role gets the three permissions polling needs, on that queue only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from promptgrade.errors import PromptgradeError

POLLER_POLICY_NAME = "promptgrade-queue-poller"
_QUEUE_ARN = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):sqs:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):(?P<name>[A-Za-z0-9_-]{1,80})"
)


class QueueError(PromptgradeError):
    """The queue cannot feed this function as asked (bad ARN or settings, no such queue)."""


@dataclass(frozen=True)
class QueueSettings:
    """The mapping ``deploy --queue-arn`` makes (the SAM template's defaults)."""

    arn: str
    batch_size: int = 10
    maximum_concurrency: int = 5

    @property
    def name(self) -> str:
        return self._parts()["name"]

    @property
    def account(self) -> str:
        return self._parts()["account"]

    def _parts(self) -> dict[str, str]:
        match = _QUEUE_ARN.fullmatch(self.arn)
        if match is None:
            raise QueueError(f"not an SQS queue ARN: {self.arn!r} (arn:aws:sqs:REGION:ACCOUNT:NAME)")
        return match.groupdict()

    def check(self) -> None:
        """Refuse what AWS would refuse, before anything changes."""
        self._parts()
        if not 1 <= self.batch_size <= 10:
            raise QueueError(f"batch size must be 1–10 (no batching window is set), got {self.batch_size}")
        if not 2 <= self.maximum_concurrency <= 1000:
            raise QueueError(f"maximum concurrency must be 2–1000, got {self.maximum_concurrency}")


@dataclass(frozen=True)
class QueueMapping:
    uuid: str
    queue_arn: str
    function_arn: str  # the alias's ARN
    created: bool

    def summary(self) -> str:
        verb = "created" if self.created else "updated"
        return (
            f"queue {self.queue_arn.rsplit(':', 1)[-1]} -> {self.function_arn} (mapping {self.uuid} {verb})"
        )


def check_queue(make: Callable[[str], Any], settings: QueueSettings | None, timeout_s: int) -> None:
    """The queue (if any) exists, and hides a message at least as long as the function may take to
    grade it (else AWS refuses the mapping, or the message would be delivered again while graded)."""
    from botocore.exceptions import BotoCoreError, ClientError

    if settings is None:
        return
    settings.check()
    sqs = make("sqs")
    try:
        url = sqs.get_queue_url(QueueName=settings.name, QueueOwnerAWSAccountId=settings.account)["QueueUrl"]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])[
            "Attributes"
        ]
    except ClientError as exc:
        raise QueueError(
            f"no SQS queue {settings.arn}: {exc.response.get('Error', {}).get('Code')}"
        ) from None
    except BotoCoreError as exc:
        raise QueueError(f"SQS queue {settings.arn}: {exc}") from None
    visibility = int(attributes.get("VisibilityTimeout", 30))
    if visibility < timeout_s:
        raise QueueError(
            f"queue {settings.name} hides a message for {visibility} s, less than the function's timeout "
            f"({timeout_s} s): raise its visibility timeout (AWS advises 6 × the timeout)"
        )


def poller_policy(queue_arn: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PollTheQueue",
                "Effect": "Allow",
                "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
                "Resource": queue_arn,
            }
        ],
    }


def connect_queue(lam: Any, iam: Any, role_arn: str, alias_arn: str, settings: QueueSettings) -> QueueMapping:
    """Create the mapping, or point this function's existing one at the alias with these settings."""
    iam.put_role_policy(
        RoleName=role_arn.rsplit("/", 1)[-1],
        PolicyName=POLLER_POLICY_NAME,
        PolicyDocument=json.dumps(poller_policy(settings.arn)),
    )
    function_arn = alias_arn.rsplit(":", 1)[0]
    found = lam.list_event_source_mappings(EventSourceArn=settings.arn).get("EventSourceMappings", [])
    ours = [m for m in found if str(m.get("FunctionArn", "")).startswith(function_arn)]
    options: dict[str, Any] = {
        "BatchSize": settings.batch_size,
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "ScalingConfig": {"MaximumConcurrency": settings.maximum_concurrency},
    }
    if ours:
        uuid = ours[0]["UUID"]
        lam.update_event_source_mapping(UUID=uuid, FunctionName=alias_arn, Enabled=True, **options)
        return QueueMapping(uuid, settings.arn, alias_arn, created=False)
    made = lam.create_event_source_mapping(
        EventSourceArn=settings.arn, FunctionName=alias_arn, Enabled=True, **options
    )
    return QueueMapping(str(made["UUID"]), settings.arn, alias_arn, created=True)
