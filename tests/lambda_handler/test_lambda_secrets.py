"""The API key comes from Secrets Manager or SSM, once per container, and is never shown anywhere.

AWS is moto in-process; calls are counted with botocore's own event hooks, so "cached" means that
no request left the client, not merely that a function was not called.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import boto3
import pytest

from helpers.lambda_events import API_KEY, SECRET_ID, b64, body_json, context, http_api_v2
from lambda_handler import app, secrets
from promptgrade.images import prepare_image
from promptgrade.testing.gemini_server import FakeGemini, Fault

ANSWER = '{"categories": ["soup"], "food_remaining_pct": 25}'


@pytest.fixture
def aws_calls(aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Names of the AWS operations made by clients created from now on (boto3's default session)."""
    calls: list[str] = []
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    boto3.setup_default_session()
    assert boto3.DEFAULT_SESSION is not None
    boto3.DEFAULT_SESSION.events.register(
        "before-call.*.*", lambda model, **_: calls.append(model.name), unique_id="count-calls"
    )
    yield calls


@pytest.fixture
def graded(lambda_env: FakeGemini, tray_jpeg: bytes) -> dict[str, object]:
    """An API Gateway event whose image the fake model answers."""
    lambda_env.answer_for_image(prepare_image(tray_jpeg).sha256, ANSWER)
    return http_api_v2({"image_base64": b64(tray_jpeg)})


@pytest.mark.parametrize(
    "secret_string",
    [API_KEY, f"  {API_KEY}\n", json.dumps({"api_key": API_KEY}), json.dumps({"GEMINI_API_KEY": API_KEY})],
    ids=["raw", "raw-with-whitespace", "json-api_key", "json-GEMINI_API_KEY"],
)
def test_the_key_is_read_from_secrets_manager(
    lambda_env: FakeGemini, graded: dict[str, object], monkeypatch: pytest.MonkeyPatch, secret_string: str
) -> None:
    boto3.client("secretsmanager").create_secret(Name="pg/other", SecretString=secret_string)
    monkeypatch.setenv("PROMPTGRADE_API_KEY_SECRET_ID", "pg/other")

    assert app.handler(graded, context())["statusCode"] == 200
    assert secrets.api_key() == API_KEY
    assert lambda_env.requests[-1].has_api_key


def test_the_key_is_read_from_an_ssm_securestring(
    lambda_env: FakeGemini, graded: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    ssm = boto3.client("ssm")
    ssm.put_parameter(Name="/promptgrade/gemini-api-key", Value=API_KEY, Type="SecureString")
    monkeypatch.delenv("PROMPTGRADE_API_KEY_SECRET_ID")
    monkeypatch.setenv("PROMPTGRADE_API_KEY_PARAMETER", "/promptgrade/gemini-api-key")

    assert app.handler(graded, context())["statusCode"] == 200
    # the parameter is gone, but a warm container no longer needs it
    ssm.delete_parameter(Name="/promptgrade/gemini-api-key")
    assert app.handler(graded, context())["statusCode"] == 200
    assert secrets.api_key() == API_KEY


def test_a_warm_container_makes_no_further_aws_call(
    aws_calls: list[str], lambda_env: FakeGemini, graded: dict[str, object]
) -> None:
    aws_calls.clear()  # the fixture's own create_secret

    for _ in range(3):
        assert app.handler(graded, context())["statusCode"] == 200

    assert aws_calls == ["GetSecretValue"]
    assert lambda_env.calls == 3


def test_a_key_in_a_plain_environment_variable_is_not_used(
    lambda_env: FakeGemini, graded: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMPTGRADE_API_KEY_SECRET_ID")
    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    monkeypatch.setenv("GOOGLE_API_KEY", API_KEY)

    response = app.handler(graded, context())

    assert response["statusCode"] == 500
    assert body_json(response)["error"]["code"] == "missing_secret"
    assert lambda_env.calls == 0


def test_both_sources_configured_is_a_clear_error(
    lambda_env: FakeGemini, graded: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTGRADE_API_KEY_PARAMETER", "/promptgrade/gemini-api-key")

    error = body_json(app.handler(graded, context()))["error"]

    assert error["code"] == "missing_secret"
    assert "only one" in error["message"]


def test_a_rejected_key_is_read_again_on_the_next_invocation(
    aws_calls: list[str], lambda_env: FakeGemini, graded: dict[str, object]
) -> None:
    """After a rotation, the model refuses the cached key; the next call picks up the new one."""
    lambda_env.enqueue_fault(Fault.http_error(403, "API key not valid. Please pass a valid API key."))
    aws_calls.clear()

    first = app.handler(graded, context())
    boto3.client("secretsmanager").put_secret_value(SecretId=SECRET_ID, SecretString="pg-rotated-key")
    second = app.handler(graded, context())

    assert first["statusCode"] == 502
    assert body_json(first)["error"]["code"] == "model_auth_failed"
    assert second["statusCode"] == 200
    assert aws_calls.count("GetSecretValue") == 2
    assert secrets.api_key() == "pg-rotated-key"


@pytest.mark.parametrize("source", ["secrets-manager", "ssm"])
def test_the_key_never_appears_in_logs_or_responses_even_at_debug_level(
    lambda_env: FakeGemini,
    graded: dict[str, object],
    tray_jpeg: bytes,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
) -> None:
    """DEBUG, as with AWS_LAMBDA_LOG_LEVEL=DEBUG: botocore then logs whole response bodies."""
    if source == "ssm":
        boto3.client("ssm").put_parameter(Name="/pg/key", Value=API_KEY, Type="SecureString")
        monkeypatch.delenv("PROMPTGRADE_API_KEY_SECRET_ID")
        monkeypatch.setenv("PROMPTGRADE_API_KEY_PARAMETER", "/pg/key")
    caplog.set_level(logging.DEBUG)
    outputs = [app.handler(graded, context())]
    for fault in (
        Fault.http_error(400, f"echoing the request: key={API_KEY}"),
        Fault.http_error(403, "API key not valid"),
        Fault.server_error(),
        Fault.rate_limited("2s"),
        Fault.malformed(),
    ):
        lambda_env.enqueue_fault(fault)
        outputs.append(app.handler(graded, context()))
    outputs.append(
        app.handler({"images": [{"image_base64": b64(tray_jpeg)}, {"url": "http://x"}]}, context())
    )
    outputs.append(app.handler({"unknown": True}, context()))

    assert [o.get("statusCode") for o in outputs] == [200, 502, 502, 502, 503, 502, None, 400]
    assert all(r.has_api_key for r in lambda_env.requests)  # the key was used ...
    captured = capsys.readouterr()
    logged = captured.out + captured.err + caplog.text + repr([r.__dict__ for r in caplog.records])
    assert "container ready" in logged and "prompt_sha256" in logged
    assert API_KEY not in logged  # ... but shown nowhere
    assert API_KEY not in json.dumps(outputs)
    assert base_64_of_the_image_not_in(logged, tray_jpeg)


def test_log_lines_are_json_with_what_an_operator_needs(
    lambda_env: FakeGemini, graded: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    app.handler(graded, context("req-42"))

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    graded_line = next(line for line in lines if line["message"] == "graded")
    assert graded_line["request_id"] == "req-42"
    assert graded_line["prompt_sha256"] == app.runtime().bundle.manifest.prompt.sha256
    assert graded_line["model"] == "gemini-test-flash"
    assert graded_line["status"] == 200 and graded_line["error_code"] is None
    assert graded_line["model_ms"] > 0 and graded_line["total_ms"] >= graded_line["model_ms"]


def base_64_of_the_image_not_in(logged: str, image: bytes) -> bool:
    return b64(image)[:64] not in logged and b64(prepare_image(image).data)[:64] not in logged
