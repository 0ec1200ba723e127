"""Given the SAM template, then it puts a queue in front of the function: S3 → SQS → the function, with a
dead-letter queue, partial batch failures and a cap on concurrent instances, all parameters.

The template is validated by cfn-lint (CloudFormation's and SAM's resource schemas) and transformed by
SAM's own translator, as `sam deploy` would, so what is asserted is what CloudFormation receives:
the event source mapping SAM generates and the bucket's merged notifications.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from cfnlint.api import lint_file
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

from helpers import ROOT

TEMPLATE = ROOT / "lambda_handler" / "template.yaml"
QUEUE_PARAMETERS = {
    "QueuedPrefix",
    "QueueBatchSize",
    "QueueMaximumConcurrency",
    "QueueMaxReceiveCount",
    "QueueVisibilityTimeout",
    "SqsConcurrency",
}


class _NoManagedPolicies:
    """SAM asks IAM for managed policy ARNs only for policies named without one; this template has none."""

    def load(self) -> dict[str, str]:
        return {}


def transformed(template: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The template as SAM hands it to CloudFormation (the zip's path stands for its S3 upload)."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")  # SAM's pseudo-parameters need a region
    template = copy.deepcopy(template)
    template["Resources"]["GradeFunction"]["Properties"]["CodeUri"] = "s3://artifacts/promptgrade-lambda.zip"
    parameters = {"InputBucketName": "trays-incoming", "OutputBucketName": "trays-graded"}
    result: dict[str, Any] = transform(template, parameters, _NoManagedPolicies())
    return result


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml_parse(TEMPLATE.read_text(encoding="utf-8"))
    return parsed


def test_cfn_lint_finds_nothing_and_would_find_a_misspelled_queue_setting(tmp_path: Path) -> None:
    assert [str(match) for match in lint_file(TEMPLATE)] == []

    planted = tmp_path / "template.yaml"
    text = TEMPLATE.read_text(encoding="utf-8")
    planted.write_text(text.replace("  VisibilityTimeout:", "  VisibilityTimout:"), encoding="utf-8")
    assert any("VisibilityTimout" in str(match) for match in lint_file(planted))


def test_sam_refuses_a_misspelled_mapping_setting(
    template: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """cfn-lint reads a SAM event's properties loosely; SAM's translator is the check for them."""
    planted = copy.deepcopy(template)
    queued = planted["Resources"]["GradeFunction"]["Properties"]["Events"]["Queued"]["Properties"]
    queued["FunctionResponseType"] = queued.pop("FunctionResponseTypes")
    with pytest.raises(InvalidDocumentException, match="FunctionResponseType"):
        transformed(planted, monkeypatch)


def test_sam_maps_the_queue_to_the_live_alias_with_partial_failures_and_a_concurrency_cap(
    template: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    resources = transformed(template, monkeypatch)["Resources"]
    [mapping] = [
        r["Properties"] for r in resources.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"
    ]
    assert mapping == {
        "EventSourceArn": {"Fn::GetAtt": ["GradeQueue", "Arn"]},
        "FunctionName": {"Ref": "GradeFunctionAliaslive"},  # the alias, as every caller
        "BatchSize": {"Ref": "QueueBatchSize"},
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "ScalingConfig": {"MaximumConcurrency": {"Ref": "QueueMaximumConcurrency"}},
    }
    [role] = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::IAM::Role"]
    assert any(arn.endswith("/AWSLambdaSQSQueueExecutionRole") for arn in role["ManagedPolicyArns"])


def test_failing_messages_end_in_the_dead_letter_queue_and_only_the_input_bucket_notifies(
    template: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    resources = transformed(template, monkeypatch)["Resources"]
    queue = resources["GradeQueue"]["Properties"]
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["GradeDeadLetterQueue", "Arn"]},
        "maxReceiveCount": {"Ref": "QueueMaxReceiveCount"},
    }
    assert queue["VisibilityTimeout"] == {"Ref": "QueueVisibilityTimeout"}
    [statement] = resources["GradeQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == {
        "Fn::Sub": "arn:${AWS::Partition}:s3:::${InputBucketName}"
    }
    bucket = resources["InputBucket"]
    assert "GradeQueuePolicy" in bucket["DependsOn"]
    notifications = bucket["Properties"]["NotificationConfiguration"]
    [queued] = notifications["QueueConfigurations"]
    [direct] = notifications["LambdaConfigurations"]  # SAM's S3 event, merged beside the queue's
    assert queued["Queue"] == {"Fn::GetAtt": ["GradeQueue", "Arn"]}
    assert queued["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": {"Ref": "QueuedPrefix"}}]
    assert direct["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": {"Ref": "InputPrefix"}}]


def test_every_queue_setting_is_a_parameter_and_the_function_reads_what_it_is_given(
    template: dict[str, Any],
) -> None:
    parameters = template["Parameters"]
    assert set(parameters) >= QUEUE_PARAMETERS
    text = yaml.safe_dump(template["Resources"])
    for name in QUEUE_PARAMETERS:
        assert f"Ref: {name}" in text, f"parameter {name} is never used"
    variables = template["Resources"]["GradeFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["PROMPTGRADE_INPUT_BUCKETS"] == {"Ref": "InputBucketName"}
    assert variables["PROMPTGRADE_SQS_CONCURRENCY"] == {"Ref": "SqsConcurrency"}
    [rule] = template["Rules"]["SeparatePrefixes"]["Assertions"]
    assert rule["Assert"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "InputPrefix"}, {"Ref": "QueuedPrefix"}]}]}
    outputs = template["Outputs"]
    assert outputs["GradeQueueUrl"]["Value"] == {"Ref": "GradeQueue"}
    assert outputs["DeadLetterQueueUrl"]["Value"] == {"Ref": "GradeDeadLetterQueue"}
