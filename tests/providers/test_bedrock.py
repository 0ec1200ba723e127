"""The Bedrock provider, driven through boto3's real bedrock-runtime client against a local Converse
server: real rest-json bytes over HTTP, no Stubber, no monkeypatched client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from promptgrade.errors import CredentialsError
from promptgrade.providers import Completion, CompletionRequest, ErrorKind, GenerationSettings, ImageInput
from promptgrade.providers.bedrock import BedrockProvider
from promptgrade.testing.bedrock_server import ConverseFault, FakeBedrock

IMAGE = ImageInput(data=b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, mime_type="image/png")
SCHEMA = {"type": "object", "properties": {"categories": {"type": "array"}, "grade": {"type": "number"}}}
MODEL = "us.anthropic.claude-sonnet-4-20250514-v1:0"


@pytest.fixture(autouse=True)
def aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials and a region; nothing from the developer's ~/.aws leaks in."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[FakeBedrock]:
    with FakeBedrock(default_answer='{"categories": ["soup"], "grade": 40}') as fake:
        yield fake


def complete(provider: BedrockProvider, *requests: CompletionRequest) -> list[Completion]:
    async def go() -> list[Completion]:
        return list(await asyncio.gather(*(provider.complete(r) for r in requests)))

    return asyncio.run(go())


def request(**settings: object) -> CompletionRequest:
    return CompletionRequest(
        prompt="Which dishes, and how much is left?",
        image=IMAGE,
        settings=GenerationSettings.model_validate(settings),
        response_schema=SCHEMA if settings.get("structured_output") else None,
    )


def test_converse_carries_the_image_prompt_and_settings_and_a_forced_tool(server: FakeBedrock) -> None:
    provider = BedrockProvider(MODEL, base_url=server.endpoint_url)
    [result] = complete(
        provider, request(temperature=0.1, top_p=0.8, max_output_tokens=64, structured_output=True)
    )
    assert result.error is None and json.loads(result.text or "") == {"categories": ["soup"], "grade": 40}
    assert result.input_tokens > 1600 and result.output_tokens > 0 and result.finish_reason == "tool_use"
    [sent] = server.requests
    assert sent.model_id == MODEL and sent.content_order == ("image", "text")
    assert sent.image_sha256 == IMAGE.sha256 and sent.image_format == "png"
    assert sent.inference == {"temperature": 0.1, "topP": 0.8, "maxTokens": 64}
    assert sent.tool_config is not None
    assert sent.tool_config["toolChoice"] == {"tool": {"name": "answer"}}
    assert sent.tool_config["tools"][0]["toolSpec"]["inputSchema"] == {"json": SCHEMA}
    assert (sent.authorization or "").startswith("AWS4-HMAC-SHA256")  # signed by the real client


def test_plain_requests_send_no_tool_and_read_text(server: FakeBedrock) -> None:
    [result] = complete(BedrockProvider(MODEL, base_url=server.endpoint_url), request())
    assert result.text == '{"categories": ["soup"], "grade": 40}' and result.finish_reason == "end_turn"
    assert server.requests[0].tool_config is None and server.requests[0].inference == {}


def test_a_model_without_tool_use_is_asked_for_text_json_from_then_on(server: FakeBedrock) -> None:
    server.tools_supported = False
    provider = BedrockProvider(MODEL, base_url=server.endpoint_url)
    first = complete(provider, request(structured_output=True))[0]
    second = complete(provider, request(structured_output=True))[0]
    assert first.error is None and second.error is None
    assert [r.tool_config is not None for r in server.requests] == [True, False, False]


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        (ConverseFault.throttled(), ErrorKind.RATE_LIMITED),
        (ConverseFault.exception("ServiceQuotaExceededException", 400), ErrorKind.QUOTA_EXHAUSTED),
        (ConverseFault.exception("ModelNotReadyException", 429), ErrorKind.SERVER_ERROR),
        (ConverseFault.exception("ModelTimeoutException", 408), ErrorKind.TIMEOUT),
        (ConverseFault.exception("AccessDeniedException", 403), ErrorKind.AUTH),
        (
            ConverseFault.exception("ValidationException", 400, "The provided model identifier is invalid."),
            ErrorKind.BAD_REQUEST,
        ),
        (ConverseFault.exception("ResourceNotFoundException", 404), ErrorKind.BAD_REQUEST),
        (ConverseFault.exception("InternalServerException", 500), ErrorKind.SERVER_ERROR),
        (ConverseFault.exception("ServiceUnavailableException", 503), ErrorKind.SERVER_ERROR),
    ],
)
def test_bedrock_exceptions_map_to_error_kinds_with_one_request_each(
    server: FakeBedrock, fault: ConverseFault, kind: ErrorKind
) -> None:
    server.enqueue_fault(fault)
    [result] = complete(BedrockProvider(MODEL, base_url=server.endpoint_url), request())
    assert result.error is not None and result.error.kind is kind, result.error
    assert result.error.message.startswith(fault.error_type or "")
    assert server.calls == 1  # botocore's retries are off: retry policy is the runner's


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("max_tokens", ErrorKind.TRUNCATED),
        ("guardrail_intervened", ErrorKind.BLOCKED),
        ("content_filtered", ErrorKind.BLOCKED),
    ],
)
def test_stop_reasons_are_answers(server: FakeBedrock, reason: str, kind: ErrorKind) -> None:
    server.enqueue_fault(ConverseFault.stopped(reason))
    [result] = complete(BedrockProvider(MODEL, base_url=server.endpoint_url), request())
    assert result.error is not None and result.error.kind is kind and result.finish_reason == reason


def test_the_standard_endpoint_variable_is_honoured(
    server: FakeBedrock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", server.endpoint_url)
    provider = BedrockProvider(MODEL)
    assert provider.endpoint == server.endpoint_url
    assert complete(provider, request())[0].error is None and server.calls == 1


def test_missing_region_or_credentials_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(CredentialsError, match="no AWS region"):
        BedrockProvider(MODEL)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(CredentialsError, match="no AWS credentials"):
        BedrockProvider(MODEL, region="us-east-1")


def test_the_region_is_the_models_else_aws_region_else_aws_default_region(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """AWS_REGION (what Lambda and most tools set) counts, before botocore's own AWS_DEFAULT_REGION."""
    assert BedrockProvider(MODEL).region == "eu-west-1"
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    assert BedrockProvider(MODEL).region == "us-east-1"
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert BedrockProvider(MODEL).region == "us-east-1"
    assert BedrockProvider(MODEL, region="ap-south-1").region == "ap-south-1"
