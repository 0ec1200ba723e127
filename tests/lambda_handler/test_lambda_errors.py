"""When a request cannot be graded, the client gets the right status and a JSON error it can act on.

Never a stack trace, never a secret, never a grade the model did not give.
"""

from __future__ import annotations

import time
from pathlib import Path

import boto3
import pytest

from helpers.lambda_events import API_KEY, b64, body_json, context, http_api_v2, make_noise_jpeg, rest_api_v1
from lambda_handler import app
from promptgrade.bundle import load_bundle
from promptgrade.images import prepare_image
from promptgrade.testing.gemini_server import FakeGemini, Fault


def error_of(response: dict[str, object], status: int) -> dict[str, str]:
    assert response["statusCode"] == status, response["body"]
    body = body_json(response)  # type: ignore[arg-type]
    assert set(body) == {"error"}
    assert set(body["error"]) >= {"code", "message"}
    assert "Traceback" not in response["body"] and API_KEY not in response["body"]  # type: ignore[operator]
    return body["error"]


@pytest.mark.parametrize(
    ("event", "code"),
    [
        (http_api_v2("{'image_base64': 'not json'}"), "invalid_json"),
        (http_api_v2("[1, 2]"), "invalid_json"),
        (http_api_v2({"image_base64": "%%%%"}), "invalid_base64"),
        (http_api_v2({"image_base64": "data:image/jpeg,abc"}), "invalid_base64"),
        (http_api_v2({"id": "x"}), "invalid_input"),
        (http_api_v2({"image_base64": 42}), "invalid_input"),
        (http_api_v2({"image_base64": "aGk=", "id": {"nested": 1}}), "invalid_input"),
        (http_api_v2({"s3_uri": "https://bucket/key"}), "invalid_s3_uri"),
        (http_api_v2({"url": "http://example.com/tray.jpg"}), "url_not_allowed"),
        (http_api_v2(None), "invalid_request"),
        (http_api_v2("e30=", base64_encoded=True, content_type=None) | {"body": "e30=!"}, "invalid_base64"),
        (rest_api_v1("not json at all", content_type="application/json"), "invalid_json"),
        ({"hello": "world"}, "invalid_event"),
        ({"Records": [{"eventSource": "aws:sqs", "body": "{}"}]}, "invalid_event"),
        ([1, 2, 3], "invalid_event"),
    ],
    ids=[
        "bad-json",
        "json-not-object",
        "bad-base64",
        "data-url-without-base64",
        "no-image",
        "image-not-string",
        "bad-id",
        "bad-s3-uri",
        "http-url",
        "no-body",
        "bad-body-encoding",
        "rest-bad-json",
        "unknown-event",
        "sqs-event",
        "not-an-object",
    ],
)
def test_malformed_requests_are_400_and_never_reach_the_model(
    lambda_env: FakeGemini, event: object, code: str
) -> None:
    error = error_of(app.handler(event, context()), 400)

    assert error["code"] == code
    assert lambda_env.calls == 0


def test_only_post_is_accepted(lambda_env: FakeGemini) -> None:
    response = app.handler(http_api_v2(None, method="GET"), context())

    assert error_of(response, 405)["code"] == "method_not_allowed"
    assert response["headers"]["allow"] == "POST"


@pytest.mark.parametrize("shape", ["json-base64", "binary-body"])
def test_an_image_over_the_size_limit_is_413(
    lambda_env: FakeGemini, monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    monkeypatch.setenv("PROMPTGRADE_MAX_IMAGE_BYTES", "30000")
    photo = make_noise_jpeg((200, 200))
    assert len(photo) > 30_000
    event = (
        http_api_v2({"image_base64": b64(photo)})
        if shape == "json-base64"
        else http_api_v2(photo, content_type="image/jpeg")
    )

    error = error_of(app.handler(event, context()), 413)

    assert error["code"] == "payload_too_large"
    assert "30000" in error["message"]
    assert lambda_env.calls == 0


def test_a_base64_string_too_long_to_fit_is_refused_before_it_is_decoded(
    lambda_env: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTGRADE_MAX_IMAGE_BYTES", "1000")
    error = error_of(app.handler(http_api_v2({"image_base64": "A" * 4000 + "!"}), context()), 413)

    assert error["code"] == "payload_too_large"  # not invalid_base64: the size alone decides


@pytest.mark.parametrize(
    "event",
    [
        http_api_v2(b"<!DOCTYPE html><html><body>Sign in</body></html>", content_type="text/html"),
        http_api_v2(b"<!DOCTYPE html><html><body>Sign in</body></html>", content_type="image/jpeg"),
        http_api_v2({"image_base64": b64(b"<!DOCTYPE html><html><body>Sign in</body></html>")}),
    ],
    ids=["html-content-type", "html-labelled-as-jpeg", "html-as-base64"],
)
def test_html_instead_of_an_image_is_415(lambda_env: FakeGemini, event: dict[str, object]) -> None:
    error = error_of(app.handler(event, context()), 415)

    assert error["code"] == "unsupported_media_type"
    assert lambda_env.calls == 0


def test_a_corrupt_image_of_a_known_type_is_400(lambda_env: FakeGemini) -> None:
    truncated = make_noise_jpeg((64, 64))[:300]
    error = error_of(app.handler(http_api_v2(truncated, content_type="image/jpeg"), context()), 400)

    assert error["code"] == "invalid_image"


def test_no_configured_key_is_500_missing_secret_naming_the_variables(
    lambda_env: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMPTGRADE_API_KEY_SECRET_ID")

    error = error_of(app.handler(http_api_v2({"image_base64": b64(b"x" * 10)}), context()), 500)

    assert error["code"] == "missing_secret"
    assert "PROMPTGRADE_API_KEY_SECRET_ID" in error["message"]
    assert "PROMPTGRADE_API_KEY_PARAMETER" in error["message"]


def test_an_unreadable_secret_is_500_naming_the_secret_but_no_value(
    lambda_env: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    boto3.client("secretsmanager").create_secret(
        Name="promptgrade/wrong-shape", SecretString='{"token": "sk-live-do-not-echo"}'
    )
    monkeypatch.setenv("PROMPTGRADE_API_KEY_SECRET_ID", "promptgrade/wrong-shape")
    event = http_api_v2({"image_base64": b64(b"x" * 10)})

    response = app.handler(event, context())

    error = error_of(response, 500)
    assert error["code"] == "missing_secret"
    assert "promptgrade/wrong-shape" in error["message"]
    assert "sk-live-do-not-echo" not in response["body"]

    monkeypatch.setenv("PROMPTGRADE_API_KEY_SECRET_ID", "promptgrade/does-not-exist")
    error = error_of(app.handler(event, context()), 500)
    assert error["code"] == "missing_secret"
    assert "promptgrade/does-not-exist" in error["message"]
    assert "ResourceNotFoundException" in error["message"]


def test_a_missing_bundle_is_500_config_error(
    lambda_env: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTGRADE_BUNDLE_DIR", "/nonexistent/bundle")

    error = error_of(app.handler(http_api_v2({"image_base64": b64(b"x" * 10)}), context()), 500)

    assert error["code"] == "config_error"
    assert "promote" in error["message"]


def test_a_bad_limit_setting_is_500_config_error(
    lambda_env: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTGRADE_MAX_IMAGE_BYTES", "ten megabytes")

    error = error_of(app.handler(http_api_v2({"image_base64": b64(b"x" * 10)}), context()), 500)

    assert error["code"] == "config_error"
    assert "PROMPTGRADE_MAX_IMAGE_BYTES" in error["message"]


def test_a_bundle_edited_after_promotion_is_500_config_error_and_never_reaches_the_model(
    lambda_env: FakeGemini, bundle_dir: Path, tray_jpeg: bytes
) -> None:
    """The function runs only the prompt that was measured: a changed template is refused, not sent."""
    template = bundle_dir / load_bundle(bundle_dir).manifest.prompt.file
    template.write_text(template.read_text(encoding="utf-8") + "\nAlso, be generous.\n", encoding="utf-8")

    error = error_of(app.handler(http_api_v2({"image_base64": b64(tray_jpeg)}), context()), 500)

    assert error["code"] == "config_error"
    assert "edited after promotion" in error["message"]
    assert lambda_env.calls == 0


@pytest.mark.parametrize(
    ("fault", "answer", "code"),
    [
        (Fault.server_error(500), None, "model_error"),
        (Fault.server_error(503), None, "model_error"),
        (Fault.malformed(), None, "model_malformed_response"),
        (Fault.safety(), None, "model_blocked"),
        (Fault.prompt_blocked(), None, "model_blocked"),
        (Fault.empty(), None, "model_empty_answer"),
        (Fault.truncated('{"categories": ["so'), None, "model_truncated"),
        (Fault.dropped(), None, "model_error"),
        (None, "It is a lovely lunch, mostly eaten.", "unparseable_answer"),
        (None, '{"categories": ["pizza"], "food_remaining_pct": 30}', "unparseable_answer"),
        (None, '{"categories": ["soup"], "food_remaining_pct": 140}', "unparseable_answer"),
    ],
    ids=[
        "http-500",
        "http-503",
        "malformed",
        "safety",
        "prompt-blocked",
        "empty",
        "truncated",
        "dropped",
        "free-text",
        "unknown-category",
        "grade-out-of-range",
    ],
)
def test_upstream_model_failures_are_502_and_never_a_made_up_grade(
    lambda_env: FakeGemini, tray_jpeg: bytes, fault: Fault | None, answer: str | None, code: str
) -> None:
    if fault is not None:
        lambda_env.enqueue_fault(fault)
    if answer is not None:
        lambda_env.answer_for_image(prepare_image(tray_jpeg).sha256, answer)

    response = app.handler(http_api_v2({"image_base64": b64(tray_jpeg), "id": "t1"}), context())

    assert error_of(response, 502)["code"] == code  # the error alone: no categories, no grade


def test_a_model_timeout_is_504(
    lambda_env: FakeGemini, monkeypatch: pytest.MonkeyPatch, tray_jpeg: bytes
) -> None:
    monkeypatch.setenv("PROMPTGRADE_MODEL_TIMEOUT_S", "0.5")
    lambda_env.enqueue_fault(Fault.hang(10))

    started = time.perf_counter()
    response = app.handler(http_api_v2({"image_base64": b64(tray_jpeg)}), context())

    assert time.perf_counter() - started < 5
    assert response["statusCode"] == 504, response["body"]
    assert body_json(response)["error"]["code"] == "model_timeout"


@pytest.mark.parametrize(
    ("fault", "code", "retry_after"),
    [
        (Fault.rate_limited("7s"), "model_rate_limited", "7"),
        (Fault.rate_limited("0.4s"), "model_rate_limited", "1"),
        (Fault.quota_exhausted("3600s"), "model_quota_exhausted", "3600"),
        (Fault.rate_limited(None), "model_rate_limited", None),
    ],
    ids=["retry-info", "sub-second", "daily-quota", "no-retry-info"],
)
def test_a_429_from_the_model_is_503_with_retry_after_when_known(
    lambda_env: FakeGemini, tray_jpeg: bytes, fault: Fault, code: str, retry_after: str | None
) -> None:
    lambda_env.enqueue_fault(fault)

    response = app.handler(http_api_v2({"image_base64": b64(tray_jpeg)}), context())

    assert response["statusCode"] == 503, response["body"]
    assert body_json(response)["error"]["code"] == code
    assert response["headers"].get("retry-after") == retry_after


def test_a_failed_request_does_not_poison_the_next(lambda_env: FakeGemini, tray_jpeg: bytes) -> None:
    lambda_env.answer_for_image(
        prepare_image(tray_jpeg).sha256, '{"categories": ["soup"], "food_remaining_pct": 10}'
    )
    lambda_env.enqueue_fault(Fault.server_error())
    event = http_api_v2({"image_base64": b64(tray_jpeg)})

    assert app.handler(event, context())["statusCode"] == 502
    assert app.handler(event, context())["statusCode"] == 200


def test_batch_set_up_failure_is_one_json_error_not_an_exception(
    lambda_env: FakeGemini, monkeypatch: pytest.MonkeyPatch, tray_jpeg: bytes
) -> None:
    monkeypatch.delenv("PROMPTGRADE_API_KEY_SECRET_ID")

    response = app.handler({"images": [{"image_base64": b64(tray_jpeg)}]}, context())

    assert response["error"]["code"] == "missing_secret"
    assert set(response) == {"error"}


def test_an_s3_event_without_an_output_bucket_fails_the_invocation(lambda_env: FakeGemini) -> None:
    event = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {}}]}

    with pytest.raises(app.InvocationError, match="PROMPTGRADE_OUTPUT_BUCKET"):
        app.handler(event, context())
