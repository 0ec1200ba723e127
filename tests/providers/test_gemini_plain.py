"""An ordinary Gemini answer is read straight from the response's JSON; what it gives is what
google-genai's own reading gives, for every response shape.

The provider reads an ordinary answer (text parts, STOP or MAX_TOKENS, numeric token counts) itself
instead of through the SDK's pydantic ``GenerateContentResponse`` (the request phase's largest single
CPU cost after HTTP), and hands every other shape to the SDK. Each shape below is served by the local
Gemini-REST server as raw JSON and read twice by the real client: through the provider's path, and
through google-genai's public ``generate_content`` per call (the reference). The ``Completion`` must
be the same — text, tokens, finish reason, error kind and message, model version.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest
from pydantic import SecretStr

from promptgrade.providers import Completion, CompletionRequest, GenerationSettings, ImageInput
from promptgrade.providers.gemini import GeminiCredentials, GeminiProvider, _plain_completion
from promptgrade.testing.gemini_server import FakeGemini, Fault

ANSWER = '{"categories": ["soup", "salad"], "grade": 40}'
USAGE = {"promptTokenCount": 1400, "candidatesTokenCount": 20, "totalTokenCount": 1420}


def _body(parts: list[dict[str, Any]] | None, finish: str = "STOP", **top: Any) -> dict[str, Any]:
    candidate: dict[str, Any] = {"finishReason": finish, "index": 0}
    if parts is not None:
        candidate["content"] = {"role": "model", "parts": parts}
    return {"candidates": [candidate], "usageMetadata": USAGE, "modelVersion": "gemini-test-001", **top}


# the shapes the provider reads itself
PLAIN = {
    "answer": _body([{"text": ANSWER}]),
    "answer in two parts": _body([{"text": ANSWER[:20]}, {"text": ANSWER[20:]}]),
    "thoughts, then the answer": {
        **_body(
            [{"text": "The tray holds soup.", "thought": True}, {"text": ANSWER, "thoughtSignature": "c2ln"}]
        ),
        "usageMetadata": {**USAGE, "thoughtsTokenCount": 130},
    },
    "truncated": _body([{"text": ANSWER[:15]}], finish="MAX_TOKENS"),
    "truncated before any text": _body([], finish="MAX_TOKENS"),
    "stopped without text": _body([]),
    "no usage": {k: v for k, v in _body([{"text": ANSWER}]).items() if k != "usageMetadata"},
}
# the shapes left to google-genai's reading
SDK = {
    "safety": _body(None, finish="SAFETY"),
    "a candidate without content": _body(None),
    "recitation with text": _body([{"text": ANSWER}], finish="RECITATION"),
    "another finish reason": _body([{"text": ANSWER}], finish="OTHER"),
    "prompt blocked": {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": USAGE},
    "no candidates": {"candidates": [], "usageMetadata": USAGE},
    "a part that is not text": _body([{"functionCall": {"name": "grade", "args": {}}}]),
    "a count as a string": {**_body([{"text": ANSWER}]), "usageMetadata": {"promptTokenCount": "1400"}},
}


def test_which_shapes_the_provider_reads_itself() -> None:
    for name, body in PLAIN.items():
        assert _plain_completion(json.dumps(body), 1.0) is not None, name
    for name, body in SDK.items():
        assert _plain_completion(json.dumps(body), 1.0) is None, name
    assert _plain_completion("<html>not json", 1.0) is None


@pytest.fixture(scope="module")
def raw_server() -> Any:
    with FakeGemini() as server:
        yield server


def _read(server: FakeGemini, bodies: dict[str, dict[str, Any]], *, per_call: bool) -> dict[str, Completion]:
    provider = GeminiProvider(
        "gemini-test-flash",
        base_url=server.base_url,
        credentials=GeminiCredentials(api_key=SecretStr("test-key-not-real")),
        convert_per_call=per_call,
    )
    request = CompletionRequest(
        prompt="Name the dishes; give the % left.",
        image=ImageInput(b"\xff\xd8\xff" + bytes(range(256)), "image/jpeg"),
        settings=GenerationSettings(temperature=0.0),
    )

    async def go() -> dict[str, Completion]:
        out = {}
        try:
            for name, body in bodies.items():
                server.enqueue_fault(Fault.raw(body))
                completion = await provider.complete(request)
                out[name] = dataclasses.replace(completion, latency_ms=0.0)
        finally:
            await provider.aclose()
        return out

    return asyncio.run(go())


@pytest.mark.parametrize("shapes", [PLAIN, SDK], ids=["read by the provider", "read by the SDK"])
def test_every_shape_reads_as_google_genai_reads_it(raw_server: FakeGemini, shapes: dict[str, Any]) -> None:
    provider = _read(raw_server, shapes, per_call=False)
    reference = _read(raw_server, shapes, per_call=True)
    assert provider == reference
    kinds = {name: c.error.kind.value if c.error else None for name, c in provider.items()}
    if shapes is PLAIN:  # what each ordinary shape means, so the comparison is not between two wrongs
        assert provider["answer"].text == provider["answer in two parts"].text == ANSWER
        assert provider["thoughts, then the answer"].text == ANSWER
        assert provider["thoughts, then the answer"].output_tokens == 20 + 130
        assert kinds["truncated"] == kinds["truncated before any text"] == "truncated"
        assert kinds["stopped without text"] == "empty" and provider["no usage"].input_tokens == 0
        assert provider["answer"].model_version == "gemini-test-001"
    else:
        assert kinds["safety"] == kinds["recitation with text"] == kinds["prompt blocked"] == "blocked"
