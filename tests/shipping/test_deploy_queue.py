"""Given an existing SQS queue, when I deploy with --queue-arn, then the queue feeds the `live` alias with
partial batch failures and a cap on concurrent instances, and the role may poll that queue only.

moto in server mode over real HTTP (its Lambda and SQS event source mapping API), as in test_deploy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from helpers.deploy_zips import make_zip
from promptgrade.cli import app
from promptgrade.shipping.deploy import deploy
from promptgrade.shipping.queue import POLLER_POLICY_NAME, QueueError, QueueSettings

REGION = "us-east-1"
FUNCTION = "promptgrade-grader"
SECRET_ID = "promptgrade/gemini-api-key"


@pytest.fixture(autouse=True)
def secret(aws: Callable[[str], Any]) -> str:
    aws("secretsmanager").create_secret(Name=SECRET_ID, SecretString="not-a-real-key")
    return SECRET_ID


def queue_arn(aws: Callable[[str], Any], name: str = "trays", visibility: int = 180) -> str:
    sqs = aws("sqs")
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(visibility)})["QueueUrl"]
    return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


def deploy_with(zip_path: Path, moto_server: str, role_arn: str, queue: QueueSettings | None) -> Any:
    return deploy(
        zip_path,
        function_name=FUNCTION,
        role_arn=role_arn,
        api_key_secret_id=SECRET_ID,
        region=REGION,
        endpoint_url=moto_server,
        queue=queue,
    )


def test_the_queue_feeds_the_live_alias_with_partial_failures_and_a_concurrency_cap(
    aws: Callable[[str], Any], moto_server: str, role_arn: str, tmp_path: Path
) -> None:
    arn = queue_arn(aws)
    settings = QueueSettings(arn, batch_size=5, maximum_concurrency=3)

    report = deploy_with(make_zip(tmp_path / "v1.zip", "one"), moto_server, role_arn, settings)

    assert report.queue is not None and report.queue.created
    alias_arn = aws("lambda").get_alias(FunctionName=FUNCTION, Name="live")["AliasArn"]
    assert report.queue.function_arn == alias_arn
    [mapping] = aws("lambda").list_event_source_mappings(EventSourceArn=arn)["EventSourceMappings"]
    assert mapping["UUID"] == report.queue.uuid
    assert mapping["BatchSize"] == 5
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 3}
    assert "queue trays -> " in report.summary()
    policy = aws("iam").get_role_policy(RoleName="promptgrade-lambda", PolicyName=POLLER_POLICY_NAME)
    [statement] = policy["PolicyDocument"]["Statement"]
    assert statement["Resource"] == arn
    assert set(statement["Action"]) == {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}


def test_a_second_deploy_updates_the_mapping_rather_than_adding_one(
    aws: Callable[[str], Any], moto_server: str, role_arn: str, tmp_path: Path
) -> None:
    arn = queue_arn(aws)
    first = deploy_with(make_zip(tmp_path / "v1.zip", "one"), moto_server, role_arn, QueueSettings(arn))
    second = deploy_with(
        make_zip(tmp_path / "v2.zip", "two"), moto_server, role_arn, QueueSettings(arn, maximum_concurrency=9)
    )

    assert second.queue is not None and first.queue is not None
    assert not second.queue.created and second.queue.uuid == first.queue.uuid
    [mapping] = aws("lambda").list_event_source_mappings(EventSourceArn=arn)["EventSourceMappings"]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 9}


@pytest.mark.parametrize(
    ("queue", "message"),
    [
        ("arn:aws:sqs:us-east-1:123456789012:nope", "no SQS queue"),
        ("https://sqs.us-east-1.amazonaws.com/123456789012/trays", "not an SQS queue ARN"),
        ("short-visibility", "less than the function's timeout"),
    ],
)
def test_a_queue_that_cannot_feed_the_function_is_refused_before_anything_changes(
    aws: Callable[[str], Any], moto_server: str, role_arn: str, tmp_path: Path, queue: str, message: str
) -> None:
    if queue == "short-visibility":
        queue = queue_arn(aws, "short", visibility=10)
    with pytest.raises(QueueError, match=message):
        deploy_with(make_zip(tmp_path / "v1.zip", "one"), moto_server, role_arn, QueueSettings(queue))
    assert aws("lambda").list_functions()["Functions"] == []


def test_impossible_mapping_settings_are_refused() -> None:
    arn = "arn:aws:sqs:us-east-1:123456789012:trays"
    with pytest.raises(QueueError, match="batch size"):
        QueueSettings(arn, batch_size=50).check()
    with pytest.raises(QueueError, match="maximum concurrency"):
        QueueSettings(arn, maximum_concurrency=1).check()


def test_promptgrade_deploy_takes_the_queue_arn(
    aws: Callable[[str], Any], moto_server: str, role_arn: str, tmp_path: Path
) -> None:
    arn = queue_arn(aws)
    zip_path = make_zip(tmp_path / "v1.zip", "one")
    arguments = ["deploy", "--function-name", FUNCTION, "--role-arn", role_arn, "--region", REGION]
    arguments += ["--zip", str(zip_path), "--secret-id", SECRET_ID, "--endpoint-url", moto_server]
    arguments += ["--queue-arn", arn, "--queue-max-concurrency", "4"]

    result = CliRunner().invoke(app, arguments)

    assert result.exit_code == 0, result.output
    assert "queue trays" in result.output
    [mapping] = aws("lambda").list_event_source_mappings(EventSourceArn=arn)["EventSourceMappings"]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 4}
