"""Given a promoted bundle, when API Gateway, S3 or a direct caller sends a tray photo, then it is graded.

Each event kind runs end to end: the real handler, the real google-genai SDK talking HTTP to the fake
Gemini on 127.0.0.1, moto for S3 and Secrets Manager. What the fake server received is compared with
what the evaluator would have sent, because the Lambda must run exactly the measured grading path.
"""

from __future__ import annotations

import functools
import json
import time

import boto3
import pytest

from helpers.lambda_events import (
    MODEL,
    ImageHost,
    b64,
    body_json,
    context,
    http_api_v2,
    make_jpeg,
    make_png,
    rest_api_v1,
    s3_object_created,
)
from lambda_handler import app, fetch
from promptgrade.bundle import Bundle
from promptgrade.images import prepare_image
from promptgrade.testing.gemini_server import FakeGemini, Fault

ANSWER = '{"categories": ["soup", "bread"], "food_remaining_pct": 40}'


def expected_result(
    bundle: Bundle, item_id: str, categories: list[str], remaining: float
) -> dict[str, object]:
    prompt = bundle.manifest.prompt
    return {
        "id": item_id,
        "categories": categories,
        "food_remaining_pct": remaining,
        "prompt": {"name": prompt.name, "version": prompt.version, "sha256": prompt.sha256},
        "model": MODEL,
    }


def without_measurements(result: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in result.items() if k not in ("timing_ms", "usage")}


def test_http_api_v2_json_image_is_graded_with_the_measured_prompt_and_pixels(
    lambda_env: FakeGemini, bundle: Bundle, tray_jpeg: bytes
) -> None:
    prepared = prepare_image(tray_jpeg)
    lambda_env.answer_for_image(prepared.sha256, ANSWER)

    response = app.handler(http_api_v2({"image_base64": b64(tray_jpeg), "id": "tray-17"}), context())

    assert response["statusCode"] == 200
    result = body_json(response)
    assert without_measurements(result) == expected_result(bundle, "tray-17", ["soup", "bread"], 40)
    assert result["usage"]["input_tokens"] > 0 and result["usage"]["output_tokens"] > 0
    assert result["timing_ms"]["total"] >= result["timing_ms"]["model"] > 0
    # the same grading path: the bundle's rendered prompt, the evaluator's image preparation
    (request,) = lambda_env.requests
    assert request.prompt == bundle.rendered_prompt()
    assert request.image_sha256 == prepared.sha256
    assert request.mime_type == "image/jpeg"
    assert request.model == MODEL
    assert request.response_schema == bundle.task.response_schema()
    assert request.generation_config["temperature"] == 0
    assert request.has_api_key


def test_rest_api_v1_json_uses_the_api_gateway_request_id_when_the_body_has_no_id(
    lambda_env: FakeGemini, bundle: Bundle
) -> None:
    image = make_jpeg((30, 160, 60))
    lambda_env.answer_for_image(
        prepare_image(image).sha256, '{"categories": ["salad"], "food_remaining_pct": 5}'
    )
    event = rest_api_v1({"image_base64": b64(image)}, request_id="c6af9ac6-0001")

    response = app.handler(event, context())

    assert response["statusCode"] == 200
    assert without_measurements(body_json(response)) == expected_result(bundle, "c6af9ac6-0001", ["salad"], 5)


def test_binary_body_is_graded_as_the_image_itself(lambda_env: FakeGemini, bundle: Bundle) -> None:
    png = make_png((250, 250, 250, 0))  # transparent PNG: prepare_image flattens it on white
    prepared = prepare_image(png)
    lambda_env.answer_for_image(prepared.sha256, '{"categories": ["dessert"], "food_remaining_pct": 100}')

    response = app.handler(http_api_v2(png, content_type="image/png", request_id="bin-1"), context())

    assert response["statusCode"] == 200
    assert without_measurements(body_json(response)) == expected_result(bundle, "bin-1", ["dessert"], 100)
    (request,) = lambda_env.requests
    assert request.image_sha256 == prepared.sha256
    assert request.prompt == bundle.rendered_prompt()


def test_the_prompt_is_rendered_once_per_container(lambda_env: FakeGemini, tray_jpeg: bytes) -> None:
    lambda_env.answer_for_image(prepare_image(tray_jpeg).sha256, ANSWER)
    app.handler(http_api_v2({"image_base64": b64(tray_jpeg)}), context())
    first = app.runtime()

    app.handler(http_api_v2({"image_base64": b64(tray_jpeg)}), context())

    assert app.runtime() is first
    assert [r.prompt for r in lambda_env.requests] == [first.prompt_text] * 2


def test_s3_object_created_writes_the_result_under_the_output_prefix(
    lambda_env: FakeGemini, bundle: Bundle, monkeypatch: pytest.MonkeyPatch, tray_jpeg: bytes
) -> None:
    s3 = boto3.client("s3")
    for bucket in ("trays-incoming", "trays-graded"):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    key = "flights/LH 123/tray 1.jpg"
    s3.put_object(Bucket="trays-incoming", Key=key, Body=tray_jpeg, ContentType="image/jpeg")
    lambda_env.answer_for_image(prepare_image(tray_jpeg).sha256, ANSWER)
    monkeypatch.setenv("PROMPTGRADE_OUTPUT_BUCKET", "trays-graded")
    monkeypatch.setenv("PROMPTGRADE_OUTPUT_PREFIX", "graded/")

    summary = app.handler(s3_object_created("trays-incoming", key, len(tray_jpeg)), context())

    output_key = "graded/flights/LH 123/tray 1.jpg.json"
    assert summary == {"ok": 1, "failed": 0, "skipped": 0, "outputs": [output_key], "errors": []}
    written = s3.get_object(Bucket="trays-graded", Key=output_key)
    assert written["ContentType"] == "application/json"
    result = json.loads(written["Body"].read())
    assert without_measurements(result) == expected_result(bundle, key, ["soup", "bread"], 40)
    assert set(result["timing_ms"]) == {"total", "model"}
    assert lambda_env.requests[0].image_sha256 == prepare_image(tray_jpeg).sha256


def test_s3_failures_are_written_as_errors_and_the_function_never_grades_its_own_output(
    lambda_env: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="trays", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_object(Bucket="trays", Key="in/menu.html", Body=b"<!doctype html><html>menu</html>")
    monkeypatch.setenv("PROMPTGRADE_OUTPUT_BUCKET", "trays")  # same bucket: results/ must be ignored
    event = s3_object_created("trays", "in/menu.html", 32)
    event["Records"] += s3_object_created("trays", "results/in/menu.html.json", 120)["Records"]

    summary = app.handler(event, context())

    assert summary["ok"] == 0 and summary["failed"] == 1 and summary["skipped"] == 1
    assert summary["errors"] == [{"key": "in/menu.html", "code": "unsupported_media_type"}]
    error = json.loads(s3.get_object(Bucket="trays", Key="results/in/menu.html.json")["Body"].read())
    assert error["id"] == "in/menu.html"
    assert error["error"]["code"] == "unsupported_media_type"
    assert "HTML" in error["error"]["message"]
    assert lambda_env.calls == 0


def test_s3_rate_limit_fails_the_invocation_so_lambda_retries_it(
    lambda_env: FakeGemini, monkeypatch: pytest.MonkeyPatch, tray_jpeg: bytes
) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="trays", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_object(Bucket="trays", Key="in/t.jpg", Body=tray_jpeg)
    monkeypatch.setenv("PROMPTGRADE_OUTPUT_BUCKET", "trays")
    lambda_env.enqueue_fault(Fault.rate_limited("3s"))

    with pytest.raises(app.InvocationError, match="model_rate_limited"):
        app.handler(s3_object_created("trays", "in/t.jpg", len(tray_jpeg)), context())


def test_a_direct_batch_answers_every_image_in_order_and_bad_items_fail_alone(
    lambda_env: FakeGemini, bundle: Bundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, vague, stored = make_jpeg((200, 40, 40)), make_jpeg((40, 40, 200)), make_jpeg((90, 90, 90))
    lambda_env.answer_for_image(
        prepare_image(good).sha256, '{"categories": ["curry"], "food_remaining_pct": 20}'
    )
    lambda_env.answer_for_image(prepare_image(vague).sha256, "Looks like a nice meal!")
    lambda_env.answer_for_image(
        prepare_image(stored).sha256, '{"categories": ["pasta"], "food_remaining_pct": 0}'
    )
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="trays", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_object(Bucket="trays", Key="t/3.jpg", Body=stored)
    event = {
        "images": [
            {"id": "good", "image_base64": b64(good)},
            {"id": "not-base64", "image_base64": "@@@ not base64 @@@"},
            {"id": "vague", "image_base64": b64(vague)},
            {"id": "two-sources", "image_base64": b64(good), "url": "https://example.com/x.jpg"},
            "not an object",
            {"id": "stored", "s3_uri": "s3://trays/t/3.jpg"},
            {"id": "missing", "s3_uri": "s3://trays/t/nope.jpg"},
            {"id": "internal", "url": "https://169.254.169.254/latest/meta-data/"},
            {"image_base64": b64(b"plain text, not a picture")},
        ]
    }

    started = time.perf_counter()
    response = app.handler(event, context())
    elapsed = time.perf_counter() - started

    results = response["results"]
    assert [r["id"] for r in results] == [
        "good", "not-base64", "vague", "two-sources", "4", "stored", "missing", "internal", "8"
    ]  # fmt: skip
    assert without_measurements(results[0]) == expected_result(bundle, "good", ["curry"], 20)
    assert without_measurements(results[5]) == expected_result(bundle, "stored", ["pasta"], 0)
    codes = {r["id"]: r["error"]["code"] for r in results if "error" in r}
    assert codes == {
        "not-base64": "invalid_base64",
        "vague": "unparseable_answer",
        "two-sources": "invalid_input",
        "4": "invalid_input",
        "missing": "s3_not_found",
        "internal": "url_not_allowed",
        "8": "unsupported_media_type",
    }
    assert "food_remaining_pct" not in results[2]  # an unreadable answer never becomes a made-up grade
    assert lambda_env.calls == 3
    assert elapsed < 10


def test_a_url_input_is_fetched_over_https_and_graded(
    lambda_env: FakeGemini, bundle: Bundle, image_host: ImageHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = make_jpeg((120, 200, 90))
    image_host.routes["/trays/9.jpg"] = (200, {"Content-Type": "image/jpeg"}, image)
    lambda_env.answer_for_image(
        prepare_image(image).sha256, '{"categories": ["rice dish"], "food_remaining_pct": 60}'
    )
    resolve_test_host(monkeypatch)
    runtime = app.runtime()
    # The only test-specific part: the local host is on loopback and has a self-signed certificate.
    runtime.fetch_url = functools.partial(
        fetch.fetch_url,
        max_bytes=runtime.max_image_bytes,
        address_policy=allow_loopback,
        ssl_context=image_host.client_context(),
    )

    response = app.handler(http_api_v2({"url": image_host.url("/trays/9.jpg"), "id": "u1"}), context())

    assert response["statusCode"] == 200, response["body"]
    assert without_measurements(body_json(response)) == expected_result(bundle, "u1", ["rice dish"], 60)
    assert lambda_env.requests[0].image_sha256 == prepare_image(image).sha256


def test_a_url_input_to_an_internal_address_is_refused_by_default(lambda_env: FakeGemini) -> None:
    response = app.handler(http_api_v2({"url": "https://127.0.0.1/latest/meta-data/"}), context())

    assert response["statusCode"] == 400
    assert body_json(response)["error"]["code"] == "url_not_allowed"
    assert lambda_env.calls == 0


def allow_loopback(address: fetch.IPAddress) -> bool:
    return address.is_loopback or fetch.public_only(address)


def resolve_test_host(monkeypatch: pytest.MonkeyPatch) -> None:
    real = fetch.socket.getaddrinfo

    def getaddrinfo(host: str, port: object, *args: object, **kwargs: object) -> list[tuple]:
        return real("127.0.0.1" if host.endswith(".example.test") else host, port, *args, **kwargs)

    monkeypatch.setattr(fetch.socket, "getaddrinfo", getaddrinfo)
