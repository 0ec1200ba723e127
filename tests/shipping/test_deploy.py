"""Given a built zip, when I deploy, then the function, its versions and the `live` alias are as I asked.

Against moto in server mode over real HTTP, exercising only the Lambda control plane (moto would need
Docker to invoke). The zips here are small stand-ins with the real layout (handler + bundle manifest):
what deploy does with a zip does not depend on its size, and the real zip is tested in test_package.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

import promptgrade.shipping.deploy as deploy_module
from helpers.deploy_zips import make_zip
from promptgrade.shipping.deploy import API_KEY_PARAMETER_ENV, API_KEY_SECRET_ENV, DeployError, deploy
from promptgrade.shipping.package import HANDLER

REGION = "us-east-1"
FUNCTION = "promptgrade-grader"
SECRET_ID = "promptgrade/gemini-api-key"
# Assembled at run time so secret scanners do not flag this fake, key-shaped test value in the repo.
SECRET_VALUE = "AIza" + "SyTHIS-IS-A-FAKE-KEY-FOR-TESTS-0123"


@pytest.fixture
def secret(aws: Callable[[str], Any]) -> str:
    aws("secretsmanager").create_secret(Name=SECRET_ID, SecretString=SECRET_VALUE)
    return SECRET_ID


def code_sha256(path: Path) -> str:
    return base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()


def run_deploy(zip_path: Path, moto_server: str, role_arn: str, **overrides: Any) -> Any:
    settings: dict[str, Any] = {
        "function_name": FUNCTION,
        "role_arn": role_arn,
        "runtime": "python3.12",
        "architecture": "x86_64",
        "environment": {"PROMPTGRADE_OUTPUT_BUCKET": "graded-trays"},
        "api_key_secret_id": SECRET_ID,
        "region": REGION,
        "endpoint_url": moto_server,
    }
    settings.update(overrides)
    return deploy(zip_path, **settings)


def lambda_calls(client: Any) -> list[str]:
    """Record every operation ``client`` sends, to prove a refusal happened before any of them."""
    calls: list[str] = []
    client.meta.events.register("before-call.lambda", lambda model, **_: calls.append(model.name))
    return calls


# -- create, update, publish, alias ------------------------------------------------------------------


def test_first_deploy_creates_the_function_publishes_v1_and_points_live_at_it(
    aws: Callable[[str], Any], moto_server: str, role_arn: str, secret: str, tmp_path: Path
) -> None:
    zip_path = make_zip(tmp_path / "v1.zip", "one")
    report = run_deploy(zip_path, moto_server, role_arn, memory_mb=1024, timeout_s=60)

    assert report.created and report.version == "1"
    assert (report.alias, report.alias_version, report.previous_version, report.routing) == (
        "live",
        "1",
        None,
        {},
    )
    assert report.code_sha256 == code_sha256(zip_path) and report.code_source == "direct upload"
    assert report.summary() == f"{FUNCTION} created: published v1; alias live -> v1"

    lam = aws("lambda")
    config = lam.get_function(FunctionName=FUNCTION)["Configuration"]
    assert config["Handler"] == HANDLER == "lambda_handler.app.handler"
    assert (config["Runtime"], config["Architectures"]) == ("python3.12", ["x86_64"])
    assert (config["MemorySize"], config["Timeout"]) == (1024, 60)
    assert config["Role"] == role_arn
    assert "meal_tray_json@v1" in config["Description"]
    assert config["Environment"]["Variables"] == {
        "PROMPTGRADE_OUTPUT_BUCKET": "graded-trays",
        API_KEY_SECRET_ENV: SECRET_ID,
    }
    assert SECRET_VALUE not in json.dumps(lam.get_function(FunctionName=FUNCTION), default=str)
    assert lam.get_alias(FunctionName=FUNCTION, Name="live")["FunctionVersion"] == "1"


def test_second_deploy_updates_the_code_publishes_v2_and_moves_live(
    aws: Callable[[str], Any], moto_server: str, role_arn: str, secret: str, tmp_path: Path
) -> None:
    run_deploy(make_zip(tmp_path / "v1.zip", "one"), moto_server, role_arn)
    second = make_zip(tmp_path / "v2.zip", "two")
    report = run_deploy(second, moto_server, role_arn, memory_mb=768)

    assert not report.created
    assert (report.version, report.alias_version, report.previous_version) == ("2", "2", "1")
    lam = aws("lambda")
    versions = lam.list_versions_by_function(FunctionName=FUNCTION)["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST", "1", "2"]
    by_version = {v["Version"]: v for v in versions}
    assert by_version["2"]["CodeSha256"] == code_sha256(second)
    assert by_version["2"]["CodeSha256"] != by_version["1"]["CodeSha256"]
    assert lam.get_function(FunctionName=FUNCTION)["Configuration"]["MemorySize"] == 768
    alias = lam.get_alias(FunctionName=FUNCTION, Name="live")
    assert alias["FunctionVersion"] == "2"
    assert not (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights")


def test_a_canary_keeps_live_on_the_old_version_and_routes_a_share_to_the_new(
    aws: Callable[[str], Any], moto_server: str, role_arn: str, secret: str, tmp_path: Path
) -> None:
    run_deploy(make_zip(tmp_path / "v1.zip", "one"), moto_server, role_arn)
    canary = run_deploy(make_zip(tmp_path / "v2.zip", "two"), moto_server, role_arn, canary_weight=0.1)

    assert (canary.version, canary.alias_version, canary.routing) == ("2", "1", {"2": 0.1})
    assert canary.summary() == f"{FUNCTION} updated: published v2; alias live -> v1 with 10% to v2"
    alias = aws("lambda").get_alias(FunctionName=FUNCTION, Name="live")
    assert alias["FunctionVersion"] == "1"
    assert alias["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.1}

    # the next plain deploy promotes: all traffic to the newest version, the canary routing gone
    promoted = run_deploy(make_zip(tmp_path / "v3.zip", "three"), moto_server, role_arn)
    alias = aws("lambda").get_alias(FunctionName=FUNCTION, Name="live")
    assert alias["FunctionVersion"] == promoted.version == "3"
    assert promoted.previous_version == "1"
    assert not (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights")


def test_a_canary_on_the_first_deploy_is_refused_before_anything_changes(
    aws: Callable[[str], Any], moto_server: str, role_arn: str, secret: str, tmp_path: Path
) -> None:
    with pytest.raises(DeployError, match="deploy once without a canary weight first"):
        run_deploy(make_zip(tmp_path / "v1.zip", "one"), moto_server, role_arn, canary_weight=0.2)
    assert aws("lambda").list_functions()["Functions"] == []


def test_a_large_zip_is_deployed_from_the_s3_bucket(
    aws: Callable[[str], Any], moto_server: str, role_arn: str, secret: str, tmp_path: Path, monkeypatch: Any
) -> None:
    zip_path = make_zip(tmp_path / "v1.zip", "one")
    monkeypatch.setattr(deploy_module, "DIRECT_UPLOAD_LIMIT_BYTES", 100)  # our zip counts as "over 50 MB"
    with pytest.raises(DeployError, match="over Lambda's 50 MB direct-upload limit: pass an S3 bucket"):
        run_deploy(zip_path, moto_server, role_arn)
    with pytest.raises(DeployError, match=r"S3 bucket 'artifacts'.*(NoSuchBucket|404|Not Found)"):
        run_deploy(zip_path, moto_server, role_arn, s3_bucket="artifacts")

    aws("s3").create_bucket(Bucket="artifacts")
    report = run_deploy(zip_path, moto_server, role_arn, s3_bucket="artifacts")
    key = f"promptgrade/{FUNCTION}/{hashlib.sha256(zip_path.read_bytes()).hexdigest()}.zip"
    assert report.code_source == f"s3://artifacts/{key}"
    assert aws("s3").get_object(Bucket="artifacts", Key=key)["Body"].read() == zip_path.read_bytes()
    assert aws("lambda").get_function(FunctionName=FUNCTION)["Configuration"]["CodeSha256"] == code_sha256(
        zip_path
    )


# -- the API key: where it is, never what it is -------------------------------------------------------


def test_a_missing_secret_fails_before_any_lambda_call(
    aws: Callable[[str], Any], moto_server: str, role_arn: str, tmp_path: Path
) -> None:
    lam = aws("lambda")
    calls = lambda_calls(lam)
    with pytest.raises(
        DeployError, match=r"secret 'promptgrade/gemini-api-key' does not exist in Secrets Manager"
    ):
        run_deploy(make_zip(tmp_path / "v1.zip", "one"), moto_server, role_arn, client=lam)
    assert calls == []


def test_the_key_can_live_in_an_ssm_securestring(
    aws: Callable[[str], Any], moto_server: str, role_arn: str, tmp_path: Path
) -> None:
    zip_path = make_zip(tmp_path / "v1.zip", "one")
    ssm = aws("ssm")
    ssm.put_parameter(Name="/promptgrade/plain", Value=SECRET_VALUE, Type="String")
    with pytest.raises(DeployError, match="is a String, not a SecureString"):
        run_deploy(
            zip_path, moto_server, role_arn, api_key_secret_id=None, api_key_parameter="/promptgrade/plain"
        )
    with pytest.raises(DeployError, match="parameter '/promptgrade/absent' does not exist in SSM"):
        run_deploy(
            zip_path, moto_server, role_arn, api_key_secret_id=None, api_key_parameter="/promptgrade/absent"
        )

    ssm.put_parameter(Name="/promptgrade/gemini", Value=SECRET_VALUE, Type="SecureString")
    run_deploy(
        zip_path, moto_server, role_arn, api_key_secret_id=None, api_key_parameter="/promptgrade/gemini"
    )
    variables = aws("lambda").get_function(FunctionName=FUNCTION)["Configuration"]["Environment"]["Variables"]
    assert variables[API_KEY_PARAMETER_ENV] == "/promptgrade/gemini"
    assert API_KEY_SECRET_ENV not in variables and SECRET_VALUE not in json.dumps(variables)


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"GEMINI_API_KEY": "anything"}, "GEMINI_API_KEY looks like a credential"),
        ({"google_api_key": "anything"}, "google_api_key looks like a credential"),
        ({"MODEL_HINT": SECRET_VALUE}, "MODEL_HINT holds what looks like a Google API key"),
        ({"NOTE": "AKIA" + "ABCDEFGHIJKLMNOP"}, "NOTE holds what looks like an AWS access key id"),
        ({API_KEY_SECRET_ENV: "x"}, "is set by deploy"),
    ],
)
def test_an_environment_with_a_key_is_refused_before_any_aws_call(
    environment: dict[str, str], message: str, aws: Callable[[str], Any], moto_server: str, tmp_path: Path
) -> None:
    lam = aws("lambda")
    calls = lambda_calls(lam)
    with pytest.raises(DeployError, match=message) as caught:
        run_deploy(make_zip(tmp_path / "v1.zip", "one"), moto_server, "arn:aws:iam::123456789012:role/x",
                   environment=environment, client=lam)  # fmt: skip
    assert SECRET_VALUE not in str(caught.value)  # the refusal never echoes the value
    assert calls == []


def test_secret_references_in_the_environment_are_allowed(
    aws: Callable[[str], Any], moto_server: str, role_arn: str, secret: str, tmp_path: Path
) -> None:
    environment = {"PROMPTGRADE_OUTPUT_BUCKET": "out", "OTHER_SECRET_ID": "x", "KMS_KEY_ARN": "arn:aws:kms:x"}
    run_deploy(make_zip(tmp_path / "v1.zip", "one"), moto_server, role_arn, environment=environment)
    variables = aws("lambda").get_function(FunctionName=FUNCTION)["Configuration"]["Environment"]["Variables"]
    assert variables == {**environment, API_KEY_SECRET_ENV: SECRET_ID}


def test_exactly_one_key_source_is_required(moto_server: str, aws_env: None, tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "v1.zip", "one")
    with pytest.raises(DeployError, match="exactly one of api_key_secret_id"):
        run_deploy(zip_path, moto_server, "arn:aws:iam::123456789012:role/x", api_key_secret_id=None)
    with pytest.raises(DeployError, match="api_key_secret_id or api_key_parameter, not both"):
        run_deploy(zip_path, moto_server, "arn:aws:iam::123456789012:role/x", api_key_parameter="/p")


# -- zips and settings that cannot work --------------------------------------------------------------


def test_a_zip_built_for_another_runtime_or_architecture_is_refused(
    moto_server: str, aws_env: None, tmp_path: Path
) -> None:
    native = {"pydantic_core/_pydantic_core.cpython-311-x86_64-linux-gnu.so": "\x7fELF"}
    zip_path = make_zip(tmp_path / "v1.zip", "one", extra=native)
    with pytest.raises(
        DeployError, match=r"built for python3\.11/x86_64 but the function is python3\.12/x86_64"
    ):
        run_deploy(zip_path, moto_server, "arn:aws:iam::123456789012:role/x", runtime="python3.12")
    with pytest.raises(
        DeployError, match=r"built for python3\.11/x86_64 but the function is python3\.11/arm64"
    ):
        run_deploy(
            zip_path,
            moto_server,
            "arn:aws:iam::123456789012:role/x",
            runtime="python3.11",
            architecture="arm64",
        )


def test_not_a_promptgrade_zip_is_refused(moto_server: str, aws_env: None, tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="no such zip"):
        run_deploy(tmp_path / "missing.zip", moto_server, "arn:aws:iam::123456789012:role/x")
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("app.py", "def handler(e, c): pass\n")
    with pytest.raises(DeployError, match=r"lambda_handler/app\.py is missing"):
        run_deploy(other, moto_server, "arn:aws:iam::123456789012:role/x")
    (tmp_path / "text.zip").write_text("not a zip")
    with pytest.raises(DeployError, match="not a readable zip"):
        run_deploy(tmp_path / "text.zip", moto_server, "arn:aws:iam::123456789012:role/x")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"runtime": "python3.10"}, "unsupported Lambda runtime 'python3.10'"),
        ({"canary_weight": 1.0}, "canary weight must be between 0 and 1"),
        ({"memory_mb": 64}, "memory must be 128–10240 MB"),
        ({"timeout_s": 901}, "timeout must be 1–900 s"),
        ({"alias": "42"}, "invalid alias name"),
    ],
)
def test_impossible_settings_are_refused(
    overrides: dict[str, Any], message: str, moto_server: str, aws_env: None, tmp_path: Path
) -> None:
    with pytest.raises(DeployError, match=message):
        run_deploy(
            make_zip(tmp_path / "v1.zip", "one"), moto_server, "arn:aws:iam::123456789012:role/x", **overrides
        )


def test_aws_refusals_become_one_line_deploy_errors(
    moto_server: str, aws: Callable[[str], Any], secret: str, tmp_path: Path
) -> None:
    missing_role = "arn:aws:iam::123456789012:role/does-not-exist"
    with pytest.raises(
        DeployError, match=r"Lambda function 'promptgrade-grader': InvalidParameterValueException"
    ) as e:
        run_deploy(make_zip(tmp_path / "v1.zip", "one"), moto_server, missing_role)
    assert "\n" not in str(e.value)


def test_an_update_that_lambda_fails_is_reported_with_lambdas_reason(
    moto_server: str, aws: Callable[[str], Any], secret: str, tmp_path: Path
) -> None:
    """moto finishes every update at once, so the waiting is driven by a stubbed Lambda client."""
    lam = boto3.client("lambda", region_name=REGION)
    arn = f"arn:aws:lambda:{REGION}:123456789012:function:{FUNCTION}"
    stub = Stubber(lam)
    stub.add_response(
        "get_function", {"Configuration": {"FunctionArn": arn, "LastUpdateStatus": "Successful"}}
    )
    stub.add_response("get_alias", {"Name": "live", "FunctionVersion": "1", "RevisionId": "r1"})
    stub.add_response(
        "get_function", {"Configuration": {"FunctionArn": arn, "LastUpdateStatus": "Successful"}}
    )
    stub.add_response("update_function_code", {"FunctionArn": arn, "LastUpdateStatus": "InProgress"})
    stub.add_response(
        "get_function", {"Configuration": {"FunctionArn": arn, "LastUpdateStatus": "InProgress"}}
    )
    reason = "Unzipped size must be smaller than 262144000 bytes"
    stub.add_response(
        "get_function",
        {
            "Configuration": {
                "FunctionArn": arn,
                "LastUpdateStatus": "Failed",
                "LastUpdateStatusReason": reason,
            }
        },
    )
    with (
        stub,
        pytest.raises(
            DeployError, match=f"Lambda function 'promptgrade-grader': did not become ready: {reason}"
        ),
    ):
        run_deploy(
            make_zip(tmp_path / "v1.zip", "one"), moto_server, "arn:aws:iam::123456789012:role/r", client=lam
        )
    stub.assert_no_pending_responses()


# -- the command line ------------------------------------------------------------------------------


def test_promptgrade_deploy_command_deploys_and_reports(
    aws: Callable[[str], Any], role_arn: str, secret: str, moto_server: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from promptgrade.cli import app

    zip_path = make_zip(tmp_path / "a.zip", "one")
    common = ["deploy", "--function-name", FUNCTION, "--role-arn", role_arn, "--region", REGION]
    common += ["--zip", str(zip_path), "--secret-id", secret, "--endpoint-url", moto_server]
    runner = CliRunner(env={"COLUMNS": "200"})
    result = runner.invoke(app, [*common, "--env", "PROMPTGRADE_OUTPUT_BUCKET=out"])
    assert result.exit_code == 0, result.output
    assert f"{FUNCTION} created: published v1; alias live -> v1" in result.output
    config = aws("lambda").get_function_configuration(FunctionName=FUNCTION)
    assert config["Environment"]["Variables"][API_KEY_SECRET_ENV] == secret
    assert SECRET_VALUE not in json.dumps(config)

    bad = runner.invoke(app, [*common, "--env", "NOEQUALS"])
    assert bad.exit_code == 2 and "--env wants NAME=VALUE" in bad.output
    missing = runner.invoke(app, [*common[:-4], "--secret-id", "nope", "--endpoint-url", moto_server])
    assert missing.exit_code == 2 and "nope" in missing.output and "Traceback" not in missing.output


def bedrock_zip(path: Path, model: str) -> Path:
    make_zip(path, "bedrock-build")
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    manifest = json.loads(files["lambda_handler/bundle/manifest.json"])
    files["lambda_handler/bundle/manifest.json"] = json.dumps(
        {**manifest, "provider": "bedrock", "model": model}
    ).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def test_a_bedrock_bundle_deploys_without_a_key_and_its_role_may_invoke_only_that_model(
    aws: Callable[[str], Any], role_arn: str, moto_server: str, tmp_path: Path
) -> None:
    model = "us.anthropic.claude-sonnet-4-20250514-v1:0"
    zip_path = bedrock_zip(tmp_path / "bedrock.zip", model)
    deploy(zip_path, function_name=FUNCTION, role_arn=role_arn, region=REGION, endpoint_url=moto_server)
    variables = (
        aws("lambda")
        .get_function_configuration(FunctionName=FUNCTION)
        .get("Environment", {})
        .get("Variables", {})
    )
    assert API_KEY_SECRET_ENV not in variables and API_KEY_PARAMETER_ENV not in variables
    policy = aws("iam").get_role_policy(
        RoleName="promptgrade-lambda", PolicyName="promptgrade-bedrock-invoke"
    )
    document = policy["PolicyDocument"]
    document = json.loads(document) if isinstance(document, str) else document
    [statement] = document["Statement"]
    assert statement["Action"] == "bedrock:InvokeModel" and statement["Effect"] == "Allow"
    assert set(statement["Resource"]) == {
        "arn:aws:bedrock:*::foundation-model/anthropic.claude-sonnet-4-20250514-v1:0",
        f"arn:aws:bedrock:{REGION}:{role_arn.split(':')[4]}:inference-profile/{model}",
    }


def test_a_bedrock_bundle_refuses_an_api_key_and_a_gemini_bundle_requires_one(
    aws: Callable[[str], Any], role_arn: str, secret: str, moto_server: str, tmp_path: Path
) -> None:
    with pytest.raises(DeployError, match="a Bedrock bundle needs no API key"):
        deploy(
            bedrock_zip(tmp_path / "bedrock.zip", "amazon.nova-pro-v1:0"),
            function_name=FUNCTION,
            role_arn=role_arn,
            region=REGION,
            endpoint_url=moto_server,
            api_key_secret_id=secret,
        )
    with pytest.raises(DeployError, match="say where the Gemini API key is"):
        deploy(
            make_zip(tmp_path / "gemini.zip", "g"),
            function_name=FUNCTION,
            role_arn=role_arn,
            region=REGION,
            endpoint_url=moto_server,
        )
