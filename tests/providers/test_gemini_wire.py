"""Per-candidate request templates send exactly what google-genai's generate_content would send.

The provider converts the first request of a (prompt, settings) once with the SDK's own converters and
copies that body for later images (``providers/gemini_wire.py``). The server compares raw bytes: the
same requests, once through the templates and once through the SDK's public call per request.
"""

from __future__ import annotations

import asyncio
import json

from pydantic import SecretStr

from promptgrade.providers import CompletionRequest, GenerationSettings, ImageInput
from promptgrade.providers.gemini import GeminiCredentials, GeminiProvider
from promptgrade.testing.gemini_server import FakeGemini

SCHEMA = {
    "type": "object",
    "properties": {"categories": {"type": "array", "items": {"type": "string"}}, "grade": {"type": "number"}},
    "required": ["categories", "grade"],
}
SETTINGS = [
    GenerationSettings(temperature=0.0, max_output_tokens=256, seed=7),
    GenerationSettings(temperature=0.7, structured_output=True, media_resolution="low", thinking_budget=0),
]


def requests() -> list[CompletionRequest]:
    """Two prompts × two settings × images of two types, interleaved as a sweep's workers would send them."""
    out = []
    for n in range(6):
        data = b"\xff\xd8\xff" + bytes(range(256)) * 4 + n.to_bytes(4, "big")  # both base64 alphabets
        image = ImageInput(data, "image/png" if n % 3 == 0 else "image/jpeg")
        for settings in SETTINGS:
            for prompt in ("Name the dishes.", "Name the dishes; give the % left."):
                out.append(
                    CompletionRequest(
                        prompt=prompt,
                        image=image,
                        settings=settings,
                        response_schema=SCHEMA if settings.structured_output else None,
                    )
                )
    return out


def sent(server: FakeGemini, *, per_call: bool) -> list[tuple[str, bytes]]:
    provider = GeminiProvider(
        "gemini-test-flash",
        base_url=server.base_url,
        credentials=GeminiCredentials(api_key=SecretStr("test-key-not-real")),
        convert_per_call=per_call,
    )
    assert provider.converts_once is not per_call

    async def go() -> None:
        try:
            for request in requests():  # one at a time: the server's order is the requests' order
                completion = await provider.complete(request)
                assert completion.error is None, completion
        finally:
            await provider.aclose()

    before = len(server.requests)
    asyncio.run(go())
    return [(r.path, r.body) for r in server.requests[before:]]


def test_templates_send_the_bytes_the_sdk_sends(gemini_server: FakeGemini) -> None:
    gemini_server.default_answer = '{"categories": ["soup"], "grade": 40}'
    templated = sent(gemini_server, per_call=False)
    public = sent(gemini_server, per_call=True)
    assert len(templated) == len(requests()) == 24
    assert templated == public
    # and the images really differ per request: a template that kept its first image would fail here
    images = {json.loads(body)["contents"][0]["parts"][0]["inlineData"]["data"] for _, body in templated}
    assert len(images) == 6


def test_answers_read_through_templates_equal_the_sdk_reading(gemini_server: FakeGemini) -> None:
    gemini_server.default_answer = '{"categories": ["soup", "stew"], "grade": 12.5}'

    def answers(per_call: bool) -> list[tuple[str | None, int, int, str | None]]:
        provider = GeminiProvider(
            "gemini-test-flash",
            base_url=gemini_server.base_url,
            credentials=GeminiCredentials(api_key=SecretStr("test-key-not-real")),
            convert_per_call=per_call,
        )

        async def go() -> list[tuple[str | None, int, int, str | None]]:
            try:
                out = []
                for request in requests()[:4]:
                    c = await provider.complete(request)
                    out.append((c.text, c.input_tokens, c.output_tokens, c.finish_reason))
                return out
            finally:
                await provider.aclose()

        return asyncio.run(go())

    assert answers(per_call=False) == answers(per_call=True)
