"""Given the SAM template, then it deploys what the packager builds, the way deploy() would.

The template is checked against the code it describes — handler, runtime, architecture, zip path,
alias, environment names the handler reads, the provider records — so the two cannot drift apart
unnoticed.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from lambda_handler import secrets as handler_secrets
from promptgrade.providers.records import NAMES, RECORDS, Credential
from promptgrade.shipping.deploy import API_KEY_PARAMETER_ENV, API_KEY_SECRET_ENV, deploy
from promptgrade.shipping.package import (
    DEFAULT_ARCHITECTURE,
    DEFAULT_RUNTIME,
    DEFAULT_ZIP,
    HANDLER,
    SUPPORTED_RUNTIMES,
    Architecture,
)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "lambda_handler" / "template.yaml"
PSEUDO = {
    "AWS::Region",
    "AWS::AccountId",
    "AWS::Partition",
    "AWS::StackName",
    "AWS::URLSuffix",
    "AWS::NoValue",
}


class CloudFormationLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !Sub, !GetAtt, …) read as their long form."""


def _tag(loader: CloudFormationLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    key = suffix if suffix in {"Ref", "Condition"} else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {key: value}


CloudFormationLoader.add_multi_constructor("!", _tag)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=CloudFormationLoader)


@pytest.fixture(scope="module")
def function(template: dict[str, Any]) -> dict[str, Any]:
    resource = template["Resources"]["GradeFunction"]
    assert resource["Type"] == "AWS::Serverless::Function"
    return resource["Properties"]


def _walk(node: Any) -> Any:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_the_template_is_sam_and_its_function_is_what_the_packager_builds(
    template: dict[str, Any], function: dict[str, Any]
) -> None:
    assert template["Transform"] == "AWS::Serverless-2016-10-31"
    assert function["Handler"] == HANDLER
    assert function["Runtime"] == DEFAULT_RUNTIME and function["Runtime"] in SUPPORTED_RUNTIMES
    assert function["Architectures"] == [{"Ref": "Architecture"}]
    architecture = template["Parameters"]["Architecture"]
    assert architecture["AllowedValues"] == list(get_args(Architecture))
    assert architecture["Default"] == DEFAULT_ARCHITECTURE
    assert (TEMPLATE.parent / function["CodeUri"]).resolve() == (ROOT / DEFAULT_ZIP).resolve()


def test_the_template_publishes_the_alias_and_settings_deploy_uses(
    template: dict[str, Any], function: dict[str, Any]
) -> None:
    defaults = {name: p.default for name, p in inspect.signature(deploy).parameters.items()}
    assert function["AutoPublishAlias"] == defaults["alias"] == "live"
    assert template["Parameters"]["MemorySize"]["Default"] == defaults["memory_mb"]
    assert template["Parameters"]["Timeout"]["Default"] == defaults["timeout_s"]


def test_the_environment_names_where_the_key_is_never_the_key(function: dict[str, Any]) -> None:
    variables = function["Environment"]["Variables"]
    # only when the provider uses a key: a Bedrock function has none
    assert variables[API_KEY_SECRET_ENV] == {
        "Fn::If": ["UsesApiKey", {"Ref": "ApiKeySecretId"}, {"Ref": "AWS::NoValue"}]
    }
    assert API_KEY_SECRET_ENV == handler_secrets.SECRET_ID_ENV
    assert API_KEY_PARAMETER_ENV == handler_secrets.PARAMETER_ENV
    handler_source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "lambda_handler").glob("*.py"))
    for name in variables:
        assert name in handler_source, f"the handler never reads {name}"
    assert not [n for n in variables if re.search(r"API_?KEY$|TOKEN|PASSWORD", n)]


def test_uploads_trigger_grading_and_results_go_to_a_different_bucket(
    template: dict[str, Any], function: dict[str, Any]
) -> None:
    resources = template["Resources"]
    events = function["Events"]
    [s3_event] = [e for e in events.values() if e["Type"] == "S3"]
    assert s3_event["Properties"]["Bucket"] == {"Ref": "InputBucket"}
    assert s3_event["Properties"]["Events"] == "s3:ObjectCreated:*"
    assert resources["InputBucket"]["Properties"]["BucketName"] == {"Ref": "InputBucketName"}
    assert resources["OutputBucket"]["Properties"]["BucketName"] == {"Ref": "OutputBucketName"}
    assert function["Environment"]["Variables"]["PROMPTGRADE_OUTPUT_BUCKET"] == {"Ref": "OutputBucketName"}
    [rule] = template["Rules"]["SeparateBuckets"]["Assertions"]
    assert rule["Assert"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "InputBucketName"}, {"Ref": "OutputBucketName"}]}]
    }

    [http_event] = [e for e in events.values() if e["Type"] == "HttpApi"]
    assert http_event["Properties"]["Method"] == "POST"
    assert resources["GradeApi"]["Properties"]["Auth"]["DefaultAuthorizer"] == "AWS_IAM"


def test_the_function_may_read_the_secret_and_input_and_write_only_the_output(
    template: dict[str, Any], function: dict[str, Any]
) -> None:
    policies = function["Policies"]
    templates = {name: body for policy in policies for name, body in policy.items() if name.startswith("S3")}
    assert templates == {
        "S3ReadPolicy": {"BucketName": {"Ref": "InputBucketName"}},
        "S3WritePolicy": {"BucketName": {"Ref": "OutputBucketName"}},
    }
    conditional = {p["Fn::If"][0]: p["Fn::If"] for p in policies if "Fn::If" in p}
    assert set(conditional) == {"UsesApiKey", "IsBedrock"}
    for condition, _when_true, when_false in conditional.values():
        assert when_false == {"Ref": "AWS::NoValue"}, condition  # no permission the provider does not use
    [read_key] = conditional["UsesApiKey"][1]["Statement"]
    assert read_key["Action"] == "secretsmanager:GetSecretValue"
    assert "${ApiKeySecretId}" in read_key["Resource"]["Fn::Sub"]
    [invoke] = conditional["IsBedrock"][1]["Statement"]
    assert invoke["Action"] == "bedrock:InvokeModel"  # only the promoted model's ARNs, never "*"
    assert "${BedrockModelId}" in str(invoke["Resource"]) and '"*"' not in str(invoke["Resource"])
    assert template["Parameters"]["ModelProvider"]["AllowedValues"] == list(NAMES)


def test_the_templates_providers_and_their_credentials_are_their_records(template: dict[str, Any]) -> None:
    """The role grants exactly what an IAM-role provider's record asks for, under a condition on that
    provider; every other provider reads its key, and only an IAM-role provider never does."""
    conditions = template["Conditions"]
    policies = template["Resources"]["GradeFunction"]["Properties"]["Policies"]
    conditional = {p["Fn::If"][0]: p["Fn::If"][1] for p in policies if "Fn::If" in p}
    role_conditions = []
    for record in RECORDS:
        if record.role_grant is None:
            continue
        condition = f"Is{record.title}"
        role_conditions.append({"Fn::Not": [{"Condition": condition}]})
        assert conditions[condition] == {"Fn::Equals": [{"Ref": "ModelProvider"}, record.name]}
        [statement] = conditional[condition]["Statement"]
        assert (statement["Sid"], statement["Action"]) == (record.role_grant.sid, record.role_grant.action)
    assert {r.name for r in RECORDS if r.credential is Credential.IAM_ROLE} == {
        r.name for r in RECORDS if r.role_grant is not None
    }
    uses_key = conditions["UsesApiKey"]["Fn::And"]
    assert uses_key[: len(role_conditions)] == role_conditions
    assert uses_key[len(role_conditions) :] == [
        {"Fn::Not": [{"Fn::Equals": [{"Ref": "ApiKeySecretId"}, ""]}]}
    ]


def test_every_reference_resolves(template: dict[str, Any]) -> None:
    known = set(template["Parameters"]) | set(template["Resources"]) | PSEUDO
    known |= {"GradeFunctionAliaslive"}  # generated by SAM from AutoPublishAlias
    for node in _walk(template):
        if not isinstance(node, dict):
            continue
        if "Ref" in node:
            assert node["Ref"] in known, node
        if "Condition" in node and isinstance(node["Condition"], str):
            assert node["Condition"] in template["Conditions"], node
        if "Fn::If" in node:
            assert node["Fn::If"][0] in template["Conditions"], node
        if "Fn::GetAtt" in node:
            assert node["Fn::GetAtt"][0] in known, node
        if "Fn::Sub" in node and isinstance(node["Fn::Sub"], str):
            for name in re.findall(r"\$\{([^}!]+)\}", node["Fn::Sub"]):
                assert name in known, (name, node)
