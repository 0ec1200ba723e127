"""The OpenAI-compatible provider, driven through the real ``openai`` SDK against a local server.

Nothing mocks the SDK: each test is an HTTP exchange with 127.0.0.1 speaking Chat Completions, so
what is asserted is what the SDK really sends and how the provider reads what a server really answers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promptgrade.config import ModelSpec, load_experiment
from promptgrade.errors import CredentialsError
from promptgrade.providers import Completion, CompletionRequest, ErrorKind, GenerationSettings, ImageInput
from promptgrade.providers.openai import NO_KEY, OpenAIProvider
from promptgrade.sweep import provider_for
from promptgrade.testing.openai_server import ChatFault, FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]

IMAGE = ImageInput(data=b"\xff\xd8\xff" + bytes(range(256)) * 4, mime_type="image/jpeg")
SCHEMA = {"type": "object", "properties": {"categories": {"type": "array"}, "grade": {"type": "number"}}}
KEY = "sk-test-not-real-0123456789"


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(default_answer='{"categories": ["soup"], "grade": 40}') as fake:
        yield fake


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "MY_LLM_KEY"):
        monkeypatch.delenv(name, raising=False)


def lab_provider(model: str, **fields: Any) -> OpenAIProvider:
    """The provider as a sweep builds it: key and base URL resolved from the environment by the lab."""
    experiment = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    provider = provider_for(ModelSpec(provider="openai", model=model, **fields), experiment)
    assert isinstance(provider, OpenAIProvider)
    return provider


def complete(provider: OpenAIProvider, *requests: CompletionRequest) -> list[Completion]:
    async def go() -> list[Completion]:
        try:
            return list(await asyncio.gather(*(provider.complete(r) for r in requests)))
        finally:
            await provider.aclose()

    return asyncio.run(go())


def request(**settings: object) -> CompletionRequest:
    structured = bool(settings.get("structured_output"))
    return CompletionRequest(
        prompt="Which dishes, and how much is left?",
        image=IMAGE,
        settings=GenerationSettings.model_validate(settings),
        response_schema=SCHEMA if structured else None,
    )


def test_the_image_and_prompt_travel_as_chat_content_and_the_answer_is_read(
    server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    provider = lab_provider("llava:13b", base_url=server.base_url)
    [result] = complete(
        provider,
        request(
            temperature=0.2,
            top_p=0.9,
            max_output_tokens=64,
            seed=7,
            structured_output=True,
            media_resolution="low",
        ),
    )
    assert result.error is None and result.text == '{"categories": ["soup"], "grade": 40}'
    assert result.input_tokens > 85 and result.output_tokens > 0 and result.model_version == "llava:13b"
    [sent] = server.requests
    assert sent.model == "llava:13b" and sent.content_order == ("image_url", "text")
    assert sent.image_sha256 == IMAGE.sha256 and sent.mime_type == "image/jpeg" and sent.detail == "low"
    assert sent.prompt == "Which dishes, and how much is left?"
    assert sent.params == {"temperature": 0.2, "top_p": 0.9, "max_tokens": 64, "seed": 7}
    assert sent.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": SCHEMA, "strict": False},
    }
    assert sent.authorization == f"Bearer {KEY}"


def test_unset_settings_are_not_sent(server: FakeOpenAI) -> None:
    provider = OpenAIProvider("m", base_url=server.base_url)
    complete(provider, request())
    [sent] = server.requests
    assert sent.params == {} and sent.response_format is None and sent.detail is None


@pytest.mark.parametrize(
    ("fault", "kind", "retry_after"),
    [
        (ChatFault.rate_limited("3"), ErrorKind.RATE_LIMITED, 3.0),
        (ChatFault.quota_exhausted(), ErrorKind.QUOTA_EXHAUSTED, None),
        (ChatFault.http_error(500), ErrorKind.SERVER_ERROR, None),
        (ChatFault.http_error(503), ErrorKind.SERVER_ERROR, None),
        (ChatFault.http_error(401), ErrorKind.AUTH, None),
        (ChatFault.http_error(404, "model not found"), ErrorKind.BAD_REQUEST, None),
        (ChatFault.http_error(400), ErrorKind.BAD_REQUEST, None),
    ],
)
def test_http_errors_map_to_error_kinds_with_one_request_each(
    server: FakeOpenAI, fault: ChatFault, kind: ErrorKind, retry_after: float | None
) -> None:
    server.enqueue_fault(fault)
    [result] = complete(OpenAIProvider("m", base_url=server.base_url), request())
    assert result.text is None and result.error is not None
    assert result.error.kind is kind and result.error.retry_after_s == retry_after
    assert server.calls == 1  # the SDK's own retries are off: retry policy is the runner's


def test_truncated_and_filtered_answers_are_answers_not_faults(server: FakeOpenAI) -> None:
    server.enqueue_fault(ChatFault.truncated())
    server.enqueue_fault(ChatFault.content_filter())
    provider = OpenAIProvider("m", base_url=server.base_url)
    truncated, blocked = complete(provider, request()) + complete(provider, request())
    assert truncated.error is not None and truncated.error.kind is ErrorKind.TRUNCATED and truncated.text
    assert blocked.error is not None and blocked.error.kind is ErrorKind.BLOCKED and blocked.text is None


def test_keys_come_from_the_named_variable_and_never_reach_a_message(
    server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(CredentialsError, match="api_key_env names MY_LLM_KEY, which is not set"):
        lab_provider("m", base_url=server.base_url, api_key_env="MY_LLM_KEY")
    with pytest.raises(CredentialsError, match="OPENAI_API_KEY"):
        lab_provider("gpt-4o-mini")  # OpenAI itself needs a key
    monkeypatch.setenv("MY_LLM_KEY", KEY)
    server.enqueue_fault(ChatFault.http_error(401, f"Incorrect API key provided: {KEY}"))
    [result] = complete(lab_provider("m", base_url=server.base_url, api_key_env="MY_LLM_KEY"), request())
    assert result.error is not None and KEY not in result.error.message and "***" in result.error.message
    assert server.requests[0].authorization == f"Bearer {KEY}"


def test_a_local_server_needs_no_key_and_openai_base_url_is_honoured(
    server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    [result] = complete(lab_provider("qwen2.5-vl"), request())
    assert result.error is None and json.loads(result.text or "{}")["grade"] == 40


def test_the_provider_itself_reads_no_variable(server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    """It ships in the Lambda, whose environment is its own: the key and server are what it is given."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    complete(OpenAIProvider("m", base_url=server.base_url), request())
    assert server.requests[0].authorization == f"Bearer {NO_KEY}"
    with pytest.raises(CredentialsError, match="OPENAI_API_KEY"):
        OpenAIProvider("gpt-4o-mini")
