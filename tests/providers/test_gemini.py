"""The Gemini provider, driven through the real google-genai SDK against the local fake API.

Nothing here mocks the SDK: each test is a real HTTP exchange with 127.0.0.1, so what is asserted is
what the SDK really sends and how the provider reads what the API really answers.
"""

from __future__ import annotations

import asyncio
import json
import math
import ssl
import urllib.error
import urllib.request
from base64 import b64encode, urlsafe_b64encode
from pathlib import Path
from typing import Any

import certifi
import pytest
from pydantic import SecretStr

import promptgrade.providers.gemini as gemini_module
from promptgrade.errors import CredentialsError
from promptgrade.providers import (
    Completion,
    CompletionRequest,
    ErrorKind,
    GenerationSettings,
    ImageInput,
    Provider,
)
from promptgrade.providers.gemini import GeminiCredentials, GeminiProvider
from promptgrade.testing.gemini_server import TOKEN_PATH, TOKENS_PER_IMAGE, FakeGemini, Fault

MODEL = "gemini-test-flash"
PROMPT = "Which foods are on this tray, and what percentage is left? Answer in JSON."
# Every byte value, so both base64 alphabets differ ('+/' vs '-_') and corruption would show.
IMAGE = ImageInput(data=b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, mime_type="image/png")
SCHEMA = {
    "type": "object",
    "properties": {"categories": {"type": "array", "items": {"type": "string"}}, "grade": {"type": "number"}},
    "required": ["categories", "grade"],
}


def image(n: int) -> ImageInput:
    return ImageInput(data=IMAGE.data + n.to_bytes(4, "big"), mime_type="image/jpeg")


def run(provider: GeminiProvider, *requests: CompletionRequest) -> list[Completion]:
    """Complete the requests concurrently on a fresh event loop, then release the SDK's session."""

    async def go() -> list[Completion]:
        try:
            return list(await asyncio.gather(*(provider.complete(r) for r in requests)))
        finally:
            await provider.aclose()

    return asyncio.run(go())


def complete_one(provider: GeminiProvider, request: CompletionRequest | None = None) -> Completion:
    return run(provider, request or CompletionRequest(prompt=PROMPT, image=IMAGE))[0]


# -- the happy path ------------------------------------------------------------------------------


def test_answer_tokens_and_request_arrive_intact(gemini_server: FakeGemini, fake_api_key: str) -> None:
    gemini_server.answer_for_image(IMAGE.sha256, '{"categories": ["soup"], "grade": 40}')
    settings = GenerationSettings(
        temperature=0.3, top_p=0.9, max_output_tokens=128, seed=7, media_resolution="low", thinking_budget=0
    )
    provider = GeminiProvider(MODEL, base_url=gemini_server.base_url)

    completion = complete_one(provider, CompletionRequest(prompt=PROMPT, image=IMAGE, settings=settings))

    assert isinstance(provider, Provider)
    assert completion.error is None
    assert completion.text == '{"categories": ["soup"], "grade": 40}'
    assert completion.finish_reason == "STOP"
    assert completion.model_version == MODEL
    assert completion.input_tokens == TOKENS_PER_IMAGE + math.ceil(len(PROMPT) / 4)
    assert completion.output_tokens == math.ceil(len(completion.text) / 4)
    assert completion.latency_ms > 0
    [sent] = gemini_server.requests
    assert (sent.model, sent.prompt, sent.mime_type) == (MODEL, PROMPT, "image/png")
    assert sent.image_sha256 == IMAGE.sha256
    assert sent.has_api_key
    config = sent.generation_config
    assert (config["temperature"], config["topP"], config["maxOutputTokens"], config["seed"]) == (
        0.3,
        0.9,
        128,
        7,
    )
    assert config["mediaResolution"] == "MEDIA_RESOLUTION_LOW"
    assert "thinkingConfig" in config
    assert not sent.has_response_schema
    assert "responseMimeType" not in config


def test_the_per_loop_client_loads_no_ca_bundle_of_its_own(
    gemini_server: FakeGemini, fake_api_key: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A second client for the event loop costs no second set of TLS contexts (~150 ms of CPU on a small
    machine, per provider, per sweep and per Lambda cold start): it reuses the SDK's own, and answers; so
    does the next provider of the same process, while the CA bundle the SDK reads stays the same."""
    created: list[ssl.SSLContext] = []
    make = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        created.append(make(*args, **kwargs))
        return created[-1]

    monkeypatch.setattr(ssl, "create_default_context", counting)
    monkeypatch.setattr(gemini_module, "_SHARED_TLS", {})  # as in a fresh process
    gemini_server.answer_for_image(IMAGE.sha256, '{"categories": ["soup"], "grade": 40}')
    provider = GeminiProvider(MODEL, base_url=gemini_server.base_url)
    made_by_the_sdk = len(created)
    assert made_by_the_sdk > 0  # the SDK's own choice of contexts (certifi, SSL_CERT_FILE, mTLS)

    completion = complete_one(provider)

    assert completion.error is None and completion.text == '{"categories": ["soup"], "grade": 40}'
    assert len(created) == made_by_the_sdk

    # a second provider in the same process (the next sweep of a notebook) loads none either, and answers
    second = GeminiProvider(MODEL, base_url=gemini_server.base_url)
    assert complete_one(second).text == '{"categories": ["soup"], "grade": 40}'
    assert len(created) == made_by_the_sdk

    # unless the CA bundle it would read has changed (a path no environment names already)
    bundle = tmp_path / "cacert.pem"
    bundle.write_bytes(Path(certifi.where()).read_bytes())
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    GeminiProvider(MODEL, base_url=gemini_server.base_url)
    assert len(created) > made_by_the_sdk


def test_structured_output_sends_the_json_schema(gemini_server: FakeGemini, fake_api_key: str) -> None:
    provider = GeminiProvider(MODEL, base_url=gemini_server.base_url)
    request = CompletionRequest(
        prompt=PROMPT,
        image=IMAGE,
        settings=GenerationSettings(structured_output=True),
        response_schema=SCHEMA,
    )

    assert complete_one(provider, request).error is None

    [sent] = gemini_server.requests
    assert sent.has_response_schema
    assert sent.response_schema == SCHEMA
    assert sent.generation_config["responseMimeType"] == "application/json"


def test_schema_is_not_sent_without_structured_output(gemini_server: FakeGemini, fake_api_key: str) -> None:
    provider = GeminiProvider(MODEL, base_url=gemini_server.base_url)

    complete_one(provider, CompletionRequest(prompt=PROMPT, image=IMAGE, response_schema=SCHEMA))

    assert not gemini_server.requests[0].has_response_schema


def test_latency_is_measured_around_the_call(gemini_server: FakeGemini, fake_api_key: str) -> None:
    gemini_server.latency_s = 0.2

    completion = complete_one(GeminiProvider(MODEL, base_url=gemini_server.base_url))

    assert completion.error is None
    assert 200 <= completion.latency_ms < 5000


def test_64_concurrent_calls_each_get_their_own_answer(gemini_server: FakeGemini, fake_api_key: str) -> None:
    gemini_server.latency_s = 0.05
    gemini_server.default_answer = lambda info: f"answer for {info.image_sha256}"
    images = [image(n) for n in range(64)]
    gemini_server.enqueue_fault(Fault.server_error(503), image_sha256=images[10].sha256)
    provider = GeminiProvider(MODEL, base_url=gemini_server.base_url)

    completions = run(provider, *(CompletionRequest(prompt=PROMPT, image=img) for img in images))

    assert gemini_server.calls == 64
    assert completions[10].error is not None and completions[10].error.kind is ErrorKind.SERVER_ERROR
    for img, completion in zip(images, completions, strict=True):
        if img is not images[10]:
            assert completion.text == f"answer for {img.sha256}"


@pytest.mark.parametrize(("keep_alive", "connections"), [(True, 1), (False, 3)])
def test_a_keep_alive_server_serves_the_sdks_requests_over_one_connection(
    fake_api_key: str, keep_alive: bool, connections: int
) -> None:
    """The throughput benchmark's server keeps connections open, as the API does: google-genai then
    sends one request after another over the connection it pooled, with nothing lost on the way."""
    images = [image(n) for n in range(3)]
    with FakeGemini(
        keep_alive=keep_alive, default_answer=lambda info: f"answer for {info.image_sha256}"
    ) as server:
        provider = GeminiProvider(MODEL, base_url=server.base_url)

        async def one_after_another() -> list[Completion]:
            try:
                return [
                    await provider.complete(CompletionRequest(prompt=PROMPT, image=img)) for img in images
                ]
            finally:
                await provider.aclose()

        completions = asyncio.run(one_after_another())

        assert [c.text for c in completions] == [f"answer for {img.sha256}" for img in images]
        assert server.calls == 3
        assert server.connections == connections


# -- where requests go ---------------------------------------------------------------------------


def test_base_url_from_the_sdk_environment_variable(
    gemini_server: FakeGemini, fake_api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", gemini_server.base_url)

    completion = complete_one(GeminiProvider(MODEL))

    assert completion.error is None
    assert gemini_server.calls == 1


def test_base_url_argument_wins_over_the_environment(
    gemini_server: FakeGemini, fake_api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeGemini() as elsewhere:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", elsewhere.base_url)

        complete_one(GeminiProvider(MODEL, base_url=gemini_server.base_url))

        assert (gemini_server.calls, elsewhere.calls) == (1, 0)


# -- failures become typed errors, after exactly one request -------------------------------------

FAULTS = [
    pytest.param(Fault.rate_limited(retry_delay="7s"), ErrorKind.RATE_LIMITED, 429, 7.0, id="429-retry-7s"),
    pytest.param(
        Fault.rate_limited(retry_delay="0.5s"), ErrorKind.RATE_LIMITED, 429, 0.5, id="429-retry-0.5s"
    ),
    pytest.param(Fault.rate_limited(retry_delay=None), ErrorKind.RATE_LIMITED, 429, None, id="429-no-delay"),
    pytest.param(Fault.quota_exhausted(), ErrorKind.QUOTA_EXHAUSTED, 429, 3600.0, id="429-per-day-quota"),
    pytest.param(Fault.server_error(500), ErrorKind.SERVER_ERROR, 500, None, id="500"),
    pytest.param(Fault.server_error(503), ErrorKind.SERVER_ERROR, 503, None, id="503"),
    pytest.param(Fault.http_error(400), ErrorKind.BAD_REQUEST, 400, None, id="400"),
    pytest.param(Fault.http_error(404), ErrorKind.BAD_REQUEST, 404, None, id="404"),
    pytest.param(Fault.http_error(401), ErrorKind.AUTH, 401, None, id="401"),
    pytest.param(Fault.http_error(403), ErrorKind.AUTH, 403, None, id="403"),
    pytest.param(Fault.malformed(), ErrorKind.MALFORMED, None, None, id="malformed"),
    pytest.param(Fault.safety(), ErrorKind.BLOCKED, None, None, id="safety"),
    pytest.param(Fault.prompt_blocked(), ErrorKind.BLOCKED, None, None, id="prompt-blocked"),
    pytest.param(Fault.empty(), ErrorKind.EMPTY, None, None, id="no-candidates"),
    pytest.param(Fault.truncated(), ErrorKind.TRUNCATED, None, None, id="max-tokens"),
    pytest.param(Fault.dropped(), ErrorKind.CONNECTION, None, None, id="dropped-connection"),
    pytest.param(Fault.hang(seconds=3), ErrorKind.TIMEOUT, None, None, id="timeout"),
]


@pytest.mark.parametrize(("fault", "kind", "status", "retry_after_s"), FAULTS)
def test_fault_is_one_request_and_one_typed_error(
    gemini_server: FakeGemini,
    fake_api_key: str,
    fault: Fault,
    kind: ErrorKind,
    status: int | None,
    retry_after_s: float | None,
) -> None:
    gemini_server.enqueue_fault(fault)
    provider = GeminiProvider(MODEL, base_url=gemini_server.base_url, timeout_s=0.5)

    completion = complete_one(provider)

    assert gemini_server.calls == 1, "the SDK must not retry: retries belong to the runner"
    error = completion.error
    assert error is not None
    assert (error.kind, error.status_code, error.retry_after_s) == (kind, status, retry_after_s)
    assert error.message and "\n" not in error.message and len(error.message) <= 200
    assert fake_api_key not in error.message
    assert completion.latency_ms > 0


def test_truncated_answer_keeps_its_partial_text(gemini_server: FakeGemini, fake_api_key: str) -> None:
    gemini_server.enqueue_fault(Fault.truncated(text='{"categories": ["so'))

    completion = complete_one(GeminiProvider(MODEL, base_url=gemini_server.base_url))

    assert completion.error is not None and completion.error.kind is ErrorKind.TRUNCATED
    assert completion.text == '{"categories": ["so'
    assert completion.finish_reason == "MAX_TOKENS"
    assert completion.output_tokens > 0


def test_safety_block_reports_its_finish_reason(gemini_server: FakeGemini, fake_api_key: str) -> None:
    gemini_server.enqueue_fault(Fault.safety())

    completion = complete_one(GeminiProvider(MODEL, base_url=gemini_server.base_url))

    assert completion.text is None
    assert completion.finish_reason == "SAFETY"
    assert completion.input_tokens > 0  # a blocked call is still billed for its prompt


@pytest.mark.parametrize("padding", [0, 143], ids=["short", "key-across-the-length-limit"])
def test_a_key_echoed_by_the_server_is_redacted(
    gemini_server: FakeGemini, fake_api_key: str, padding: int
) -> None:
    gemini_server.enqueue_fault(Fault.http_error(400, "x" * padding + f" API key not valid: {fake_api_key}"))

    completion = complete_one(GeminiProvider(MODEL, base_url=gemini_server.base_url))

    assert completion.error is not None
    assert fake_api_key[:8] not in completion.error.message
    assert len(completion.error.message) <= 200


# -- credentials ---------------------------------------------------------------------------------


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "GOOGLE_GENAI_USE_VERTEXAI",
        "GOOGLE_CLOUD_PROJECT",
        "GOOGLE_CLOUD_LOCATION",
        "GOOGLE_GEMINI_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)


def test_missing_credentials_name_the_variables_to_set(no_credentials: None) -> None:
    with pytest.raises(CredentialsError) as caught:
        GeminiProvider(MODEL)

    message = str(caught.value)
    assert "\n" not in message
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_CLOUD_PROJECT"):
        assert name in message


def test_vertex_without_project_names_what_is_missing(
    no_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_GENAI_USE_VERTEXAI", "true")
    monkeypatch.setenv("GEMINI_API_KEY", "test-key-not-real")

    with pytest.raises(CredentialsError, match="GOOGLE_CLOUD_PROJECT") as caught:
        GeminiProvider(MODEL)

    assert "test-key-not-real" not in str(caught.value)


def test_unreadable_vertex_flag_is_a_credentials_error(
    no_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_GENAI_USE_VERTEXAI", "perhaps")

    with pytest.raises(CredentialsError, match="GOOGLE_GENAI_USE_VERTEXAI"):
        GeminiProvider(MODEL)


def test_vertex_settings_are_read_from_the_environment(
    no_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_GENAI_USE_VERTEXAI", "true")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "my-project")
    monkeypatch.setenv("GOOGLE_CLOUD_LOCATION", "europe-west4")

    credentials = GeminiCredentials.from_env()
    provider = GeminiProvider(MODEL, base_url="http://127.0.0.1:9", credentials=credentials)

    assert (credentials.use_vertexai, credentials.project, credentials.location) == (
        True,
        "my-project",
        "europe-west4",
    )
    assert provider.name == "gemini"


def test_vertex_ai_mode_sends_the_request_with_a_token_from_application_default_credentials(
    no_credentials: None, gemini_server: FakeGemini, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Vertex AI with a service-account key as GOOGLE_APPLICATION_CREDENTIALS, through the real SDK.

    The key's token_uri is the local server, so google-auth's signed token exchange is real too.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    adc = tmp_path / "service-account.json"
    adc.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "my-project",
                "private_key_id": "test-key-id",
                "private_key": pem.decode(),
                "client_email": "grader@my-project.iam.gserviceaccount.com",
                "client_id": "1234567890",
                "token_uri": gemini_server.base_url + TOKEN_PATH,
            }
        ),
        encoding="utf-8",
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # never a developer's gcloud login
    monkeypatch.setenv("GOOGLE_GENAI_USE_VERTEXAI", "true")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "my-project")
    monkeypatch.setenv("GOOGLE_CLOUD_LOCATION", "europe-west4")
    gemini_server.answer_for_image(IMAGE.sha256, "answered on Vertex AI")

    completion = complete_one(GeminiProvider(MODEL, base_url=gemini_server.base_url))

    assert completion.error is None, completion.error
    assert completion.text == "answered on Vertex AI"
    [sent] = gemini_server.requests
    assert sent.path == (
        f"/v1beta1/projects/my-project/locations/europe-west4/publishers/google/models/{MODEL}:generateContent"
    )
    assert sent.authorization == f"Bearer {gemini_server.access_token}" and not sent.has_api_key
    assert sent.image_sha256 == IMAGE.sha256 and sent.prompt == PROMPT
    assert gemini_server.token_requests == 1


def test_google_api_key_is_accepted_too(
    no_credentials: None, gemini_server: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", "another-test-key")

    completion = complete_one(GeminiProvider(MODEL, base_url=gemini_server.base_url))

    assert completion.error is None
    assert gemini_server.requests[0].has_api_key


def test_explicit_credentials_need_no_environment(no_credentials: None, gemini_server: FakeGemini) -> None:
    credentials = GeminiCredentials(api_key=SecretStr("explicit-test-key"))

    completion = complete_one(GeminiProvider(MODEL, base_url=gemini_server.base_url, credentials=credentials))

    assert completion.error is None


def test_the_key_never_appears_in_reprs(fake_api_key: str) -> None:
    credentials = GeminiCredentials.from_env()
    provider = GeminiProvider(MODEL, base_url="http://127.0.0.1:9", credentials=credentials)

    for text in (repr(provider), str(provider), repr(credentials), str(credentials)):
        assert fake_api_key not in text
    assert credentials.api_key is not None and credentials.api_key.get_secret_value() == fake_api_key


# -- the fake server accepts what other clients send ---------------------------------------------


def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize(
    ("path", "encode"),
    [
        pytest.param("/v1beta/models/m:generateContent", b64encode, id="gemini-standard-b64"),
        pytest.param(
            "/v1beta1/projects/p/locations/us-central1/publishers/google/models/m:generateContent",
            urlsafe_b64encode,
            id="vertex-urlsafe-b64",
        ),
    ],
)
def test_fake_server_accepts_snake_case_and_both_base64_alphabets(
    gemini_server: FakeGemini, path: str, encode: Any
) -> None:
    gemini_server.answer_for_image(IMAGE.sha256, "scripted")
    body = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {
                        "inline_data": {
                            "mime_type": "image/png",
                            "data": encode(IMAGE.data).decode().rstrip("="),
                        }
                    },
                    {"text": PROMPT},
                ],
            }
        ],
        "generation_config": {"temperature": 0.1, "response_schema": SCHEMA},
    }

    status, answer = post(gemini_server.base_url + path, body)

    assert status == 200
    assert answer["candidates"][0]["content"]["parts"][0]["text"] == "scripted"
    assert answer["usageMetadata"]["promptTokenCount"] == TOKENS_PER_IMAGE + math.ceil(len(PROMPT) / 4)
    [seen] = gemini_server.requests
    assert (seen.model, seen.image_sha256, seen.prompt) == ("m", IMAGE.sha256, PROMPT)
    assert seen.has_response_schema


def test_fake_server_answers_unknown_paths_with_a_google_error(gemini_server: FakeGemini) -> None:
    status, answer = post(gemini_server.base_url + "/v1/models/m:countTokens", {})

    assert status == 404
    assert answer["error"]["status"] == "NOT_FOUND"
    assert gemini_server.calls == 0
