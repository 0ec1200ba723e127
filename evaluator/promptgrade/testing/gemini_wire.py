"""The Gemini REST API's wire format, shared by the local server's two halves — generateContent
(``gemini_server``) and the Batch API (``gemini_batches``): a request as decoded, the answer and error
bodies, the faults a test can script, and the replies of the request handler.

Standard library only, so it runs anywhere the package does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from promptgrade.testing.scripted import JSONHandler

TOKENS_PER_IMAGE = 258  # what Gemini bills for one image at default media resolution
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

FaultKind = Literal[
    "http_error", "malformed", "safety", "prompt_blocked", "empty", "truncated", "drop", "hang", "raw"
]


@dataclass(frozen=True, slots=True)
class Fault:
    """One scripted misbehaviour; build it with the named constructors, which read like the API's."""

    kind: FaultKind
    status: int = 200
    message: str = ""
    retry_delay: str | None = None  # google.rpc.RetryInfo.retryDelay, e.g. "7s" or "0.5s"
    quota_id: str | None = None  # google.rpc.QuotaFailure violation quotaId
    block_reason: str = "SAFETY"
    text: str | None = None  # the partial text of a truncated answer
    seconds: float = 30.0  # how long a hang lasts (stop() cuts it short)
    body: str | None = None  # a raw 200 response's JSON text

    @classmethod
    def http_error(cls, status: int, message: str = "") -> Fault:
        return cls("http_error", status=status, message=message or f"scripted HTTP {status}")

    @classmethod
    def rate_limited(cls, retry_delay: str | None = "7s", quota_id: str | None = None) -> Fault:
        """A 429; the real API names the limit in QuotaFailure and the wait in RetryInfo."""
        quota = quota_id or "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
        return cls(
            "http_error", status=429, message="Resource exhausted.", retry_delay=retry_delay, quota_id=quota
        )

    @classmethod
    def quota_exhausted(cls, retry_delay: str | None = "3600s") -> Fault:
        return cls.rate_limited(retry_delay, quota_id="GenerateRequestsPerDayPerProjectPerModel-FreeTier")

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        return cls.http_error(
            status, "Internal error encountered." if status == 500 else "The model is overloaded."
        )

    @classmethod
    def malformed(cls) -> Fault:
        """A 200 whose body is not JSON, as a misbehaving proxy or truncated stream produces."""
        return cls("malformed")

    @classmethod
    def safety(cls) -> Fault:
        """The candidate was stopped by a safety filter: finishReason SAFETY and no text."""
        return cls("safety")

    @classmethod
    def prompt_blocked(cls, reason: str = "SAFETY") -> Fault:
        return cls("prompt_blocked", block_reason=reason)

    @classmethod
    def empty(cls) -> Fault:
        return cls("empty")

    @classmethod
    def truncated(cls, text: str | None = None) -> Fault:
        """finishReason MAX_TOKENS; ``text`` defaults to the first half of the scripted answer."""
        return cls("truncated", text=text)

    @classmethod
    def raw(cls, body: dict[str, Any]) -> Fault:
        """A 200 whose body is exactly ``body``: a response shape the other faults do not script
        (thought parts, another finish reason, a part that is not text)."""
        return cls("raw", body=json.dumps(body))

    @classmethod
    def dropped(cls) -> Fault:
        """The socket closes without a response."""
        return cls("drop")

    @classmethod
    def hang(cls, seconds: float = 30.0) -> Fault:
        """No response for ``seconds``, to exercise the client's timeout."""
        return cls("hang", seconds=seconds)


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What the server received, decoded: what a test asserts on instead of raw JSON."""

    model: str
    path: str
    prompt: str
    image_sha256: str | None  # the last image: the tray, in any prompt that shows references first
    mime_type: str | None
    generation_config: dict[str, Any] = field(default_factory=dict)
    has_response_schema: bool = False
    response_schema: dict[str, Any] | None = None
    has_api_key: bool = False
    authorization: str | None = None  # the Authorization header: Vertex AI sends "Bearer <token>"
    received_at: float = 0.0  # time.monotonic() when the request arrived, before any latency or fault
    body: bytes = field(default=b"", repr=False)  # the raw JSON, for tests that compare what was sent
    image_tokens: int = TOKENS_PER_IMAGE  # what this request's image is billed (see FakeGemini.image_tokens)
    image_sha256s: tuple[str, ...] = ()  # every image, in the order sent (references, then the tray)
    tray: bytes = field(default=b"", repr=False, compare=False)  # the last image, decoded: billed by its size


class GeminiReplies(JSONHandler):
    """Replies as the API gives them: JSON (billed when it carries usage) and errors in google.rpc's shape."""

    protocol_version = "HTTP/1.0"  # one request per connection: no stale keep-alive sockets after a fault

    def send_api_error(
        self, status: int, message: str, *, retry_delay: str | None = None, quota_id: str | None = None
    ) -> None:
        details: list[dict[str, Any]] = []
        if quota_id is not None:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{"quotaMetric": "generate_content_requests", "quotaId": quota_id}],
                }
            )
        if retry_delay is not None:
            details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay})
        error: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": STATUS_NAMES.get(status, "UNKNOWN"),
        }
        if details:
            error["details"] = details
        self.send_json(status, {"error": error})

    def send_json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        if (usage := body.get("usageMetadata")) is not None:
            self.server.fake._bill(usage)
        self.send_raw(status, json.dumps(body).encode(), "application/json; charset=UTF-8", headers)


def _get(obj: dict[str, Any], camel: str) -> Any:
    """The SDK sends camelCase; hand-written clients often send snake_case. Accept both."""
    if camel in obj:
        return obj[camel]
    return obj.get(re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower())


def _b64decode(data: str) -> bytes:
    """Standard or URL-safe base64, padded or not: the API accepts all of them."""
    data = data.strip().replace("-", "+").replace("_", "/")
    return base64.b64decode(data + "=" * (-len(data) % 4), validate=True)


def inline_images(body: dict[str, Any]) -> list[bytes]:
    """The bytes of every inline image of a ``generateContent`` body, in the order sent."""
    return [
        _b64decode(_get(inline, "data") or "")
        for content in _get(body, "contents") or []
        for part in _get(content, "parts") or []
        if (inline := _get(part, "inlineData")) is not None
    ]


def parse_request(
    model: str, path: str, body: dict[str, Any], headers: Any, received_at: float
) -> RequestInfo:
    texts: list[str] = []
    mime_type = None
    for content in _get(body, "contents") or []:
        for part in _get(content, "parts") or []:
            if (text := _get(part, "text")) is not None:
                texts.append(text)
            inline = _get(part, "inlineData")
            if inline is not None:
                mime_type = _get(inline, "mimeType")
    decoded = inline_images(body)
    images = [hashlib.sha256(data).hexdigest() for data in decoded]
    config = _get(body, "generationConfig") or {}
    schema = next(
        (
            value
            for key in ("responseJsonSchema", "responseSchema")
            if (value := _get(config, key)) is not None
        ),
        None,
    )
    return RequestInfo(
        model=model,
        path=path,
        prompt="\n".join(texts),
        image_sha256=images[-1] if images else None,
        mime_type=mime_type,
        image_sha256s=tuple(images),
        tray=decoded[-1] if decoded else b"",
        generation_config=config,
        has_response_schema=schema is not None,
        response_schema=schema,
        has_api_key=bool(headers.get("x-goog-api-key")),
        authorization=headers.get("Authorization"),
        received_at=received_at,
    )


def _estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def envelope(
    info: RequestInfo, candidates: list[dict[str, Any]] | None, *, output_tokens: int
) -> dict[str, Any]:
    prompt_tokens = info.image_tokens * len(info.image_sha256s) + _estimate_tokens(info.prompt)
    body: dict[str, Any] = {
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": prompt_tokens + output_tokens,
        },
        "modelVersion": info.model,
        "responseId": uuid.uuid4().hex[:22],
    }
    if candidates is not None:
        body["candidates"] = candidates
    return body


def answer_body(info: RequestInfo, text: str, finish_reason: str = "STOP") -> dict[str, Any]:
    candidate = {
        "content": {"role": "model", "parts": [{"text": text}]},
        "finishReason": finish_reason,
        "index": 0,
    }
    return envelope(info, [candidate], output_tokens=max(1, _estimate_tokens(text)))
