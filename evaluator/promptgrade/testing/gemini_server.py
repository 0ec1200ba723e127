"""A local server that speaks enough of the Gemini REST API for the real ``google-genai`` client.

Tests and demos point the unmodified SDK at it (``base_url`` or ``GOOGLE_GEMINI_BASE_URL``) so the
whole path — request building, serialisation, HTTP, error bodies, response parsing — runs for real,
offline and for free. Answers are scripted per image (by sha256), and faults the real API produces
(429 with RetryInfo, per-day quota, 5xx, safety blocks, truncation, dropped connections, hangs) can
be queued so error handling is tested against the bytes the SDK actually sees.

Each request is recorded with its arrival time, so a test can measure the gap between a 429 and its
retry at the server rather than around the whole client. Each answer's billed tokens are recorded
too, so a spending limit is checked against what the API would charge, not the client's own tally.
Vertex AI mode is served as well (``/v1beta1/projects/…/publishers/google/models/…``), and ``POST /token``
answers an OAuth token request, so a service-account key file (``GOOGLE_APPLICATION_CREDENTIALS``) whose
``token_uri`` points here gives the SDK a bearer token that its model requests then carry.

Standard library only, so it runs anywhere the package does.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import hashlib
import json
import math
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Literal

from promptgrade.testing.gemini_batches import BatchAPI
from promptgrade.testing.scripted import LoopbackServer, ScriptedAPI

TOKENS_PER_IMAGE = 258  # what Gemini bills for one image at default media resolution
DEFAULT_ANSWER = '{"categories": [], "grade": 0}'
TOKEN_PATH = "/token"  # the OAuth token endpoint, for application-default credentials' token_uri
ACCESS_TOKEN = "fake-gemini-access-token"

_PATH = re.compile(
    r"^/(?P<version>v1|v1beta|v1beta1)/"
    r"(?:projects/[^/]+/locations/[^/]+/)?(?:publishers/[^/]+/)?"
    r"models/(?P<model>[^/:]+):generateContent$"
)
_STATUS_NAMES = {
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
    "http_error", "malformed", "safety", "prompt_blocked", "empty", "truncated", "drop", "hang"
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
    image_sha256: str | None
    mime_type: str | None
    generation_config: dict[str, Any] = field(default_factory=dict)
    has_response_schema: bool = False
    response_schema: dict[str, Any] | None = None
    has_api_key: bool = False
    authorization: str | None = None  # the Authorization header: Vertex AI sends "Bearer <token>"
    received_at: float = 0.0  # time.monotonic() when the request arrived, before any latency or fault
    body: bytes = field(default=b"", repr=False)  # the raw JSON, for tests that compare what was sent
    image_tokens: int = TOKENS_PER_IMAGE  # what this request's image is billed (see FakeGemini.image_tokens)


@dataclass(frozen=True, slots=True)
class Usage:
    """The tokens one answer billed (its usageMetadata): what the real API would charge for."""

    input_tokens: int
    output_tokens: int


Answer = str | Callable[[RequestInfo], str]
Latency = float | Callable[[RequestInfo], float]


class FakeGemini(ScriptedAPI[RequestInfo, Fault]):
    """A scripted Gemini endpoint on 127.0.0.1; every attribute may be changed while it runs."""

    thread_name = "fake-gemini"

    def __init__(
        self,
        *,
        port: int = 0,
        answers: dict[str, str] | None = None,
        default_answer: Answer = DEFAULT_ANSWER,
        latency_s: Latency = 0.0,
        image_tokens: Callable[[RequestInfo], int] | None = None,
    ) -> None:
        super().__init__(_Handler, port=port, answers=answers, default_answer=default_answer)
        # How an image is billed: TOKENS_PER_IMAGE (Gemini 2.x's small-image count) unless a benchmark
        # scripts a model family's rule, e.g. per media_resolution.
        self.image_tokens = image_tokens
        self.latency_s: Latency = latency_s
        self._usage: list[Usage] = []
        self._token_requests = 0
        self.access_token = ACCESS_TOKEN
        # Answers by model id (the model in the request path), before any per-image answer: one
        # server can then play a task model and, say, a reflection model proposing templates.
        self.model_answers: dict[str, Answer] = {}
        self.batches = BatchAPI(self)  # the Batch API and the Files API (gemini_batches)

    @property
    def base_url(self) -> str:
        return self.address

    @property
    def usage(self) -> list[Usage]:
        """The tokens billed by every answer sent, in order (errors and dropped requests bill nothing)."""
        with self._lock:
            return list(self._usage)

    @property
    def token_requests(self) -> int:
        """How many OAuth token refreshes were served at ``TOKEN_PATH``."""
        with self._lock:
            return self._token_requests

    def images_sent(self, model: str | None = None) -> Counter[str]:
        """How many requests carried each image (by sha256), for one model or all: what a test counts
        to prove a split's images were never sent."""
        return Counter(
            r.image_sha256 for r in self.requests if r.image_sha256 and (model is None or r.model == model)
        )

    def _answer(self, request: RequestInfo) -> str:
        scripted = self.model_answers.get(request.model)
        if scripted is None:
            return super()._answer(request)
        return scripted(request) if callable(scripted) else scripted

    # -- used by the handler ---------------------------------------------------------------------
    def _bill(self, usage: dict[str, Any]) -> None:
        with self._lock:
            self._usage.append(Usage(usage["promptTokenCount"], usage["candidatesTokenCount"]))

    def _issue_token(self) -> str:
        with self._lock:
            self._token_requests += 1
            return self.access_token

    def _latency(self, info: RequestInfo) -> float:
        latency = self.latency_s
        return float(latency(info) if callable(latency) else latency)


class _Handler(BaseHTTPRequestHandler):
    server: LoopbackServer
    protocol_version = "HTTP/1.0"  # one request per connection: no stale keep-alive sockets after a fault

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: test output should show assertions, not access logs."""

    def do_POST(self) -> None:
        received_at = time.monotonic()
        fake = self.server.fake
        path = self.path.split("?", 1)[0]
        match = _PATH.match(path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if path == TOKEN_PATH:
            token = {"access_token": fake._issue_token(), "expires_in": 3600, "token_type": "Bearer"}
            self._send_json(200, token)
            return
        if match is None:
            if not fake.batches.post(self, path, body):
                self._send_error(404, f"Method not found: {path}")
            return
        try:
            info = _parse_request(match["model"], path, json.loads(body or b"{}"), self.headers, received_at)
            billed = fake.image_tokens(info) if fake.image_tokens is not None else TOKENS_PER_IMAGE
            info = dataclasses.replace(info, body=body, image_tokens=billed)
        except (ValueError, TypeError, AttributeError, binascii.Error) as exc:
            self._send_error(400, f"Invalid JSON payload received. {exc}")
            return
        fault = fake._record(info)
        delay = fake._latency(info)
        if delay > 0 and fake._stopping.wait(delay):
            return
        if fault is None:
            self._send_json(200, _answer_body(info, fake._answer(info)))
        else:
            self._play(fault, info)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if not self.server.fake.batches.get(self, path):
            self._send_error(404, f"Method not found: {path}")

    def _play(self, fault: Fault, info: RequestInfo) -> None:
        fake = self.server.fake
        if fault.kind == "http_error":
            self._send_error(
                fault.status, fault.message, retry_delay=fault.retry_delay, quota_id=fault.quota_id
            )
        elif fault.kind == "malformed":
            self._send_raw(200, b"<html><body>upstream returned garbage", "text/html")
        elif fault.kind == "safety":
            candidate = {"finishReason": "SAFETY", "index": 0, "safetyRatings": _BLOCKED_RATINGS}
            self._send_json(200, _envelope(info, [candidate], output_tokens=0))
        elif fault.kind == "prompt_blocked":
            body = _envelope(info, None, output_tokens=0)
            body["promptFeedback"] = {"blockReason": fault.block_reason, "safetyRatings": _BLOCKED_RATINGS}
            self._send_json(200, body)
        elif fault.kind == "empty":
            self._send_json(200, _envelope(info, [], output_tokens=0))
        elif fault.kind == "truncated":
            answer = fake._answer(info)
            text = fault.text if fault.text is not None else answer[: max(1, len(answer) // 2)]
            self._send_json(200, _answer_body(info, text, finish_reason="MAX_TOKENS"))
        elif fault.kind == "drop":
            self.close_connection = True  # return without writing: the client sees a disconnect
        elif fault.kind == "hang" and not fake._stopping.wait(fault.seconds):
            self._send_json(200, _answer_body(info, fake._answer(info)))

    def _send_error(
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
            "status": _STATUS_NAMES.get(status, "UNKNOWN"),
        }
        if details:
            error["details"] = details
        self._send_json(status, {"error": error})

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        if (usage := body.get("usageMetadata")) is not None:
            self.server.fake._bill(usage)
        self._send_raw(status, json.dumps(body).encode(), "application/json; charset=UTF-8")

    def _send_raw(
        self, status: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout); nothing to tell it


_BLOCKED_RATINGS = [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]


def _get(obj: dict[str, Any], camel: str) -> Any:
    """The SDK sends camelCase; hand-written clients often send snake_case. Accept both."""
    if camel in obj:
        return obj[camel]
    return obj.get(re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower())


def _b64decode(data: str) -> bytes:
    """Standard or URL-safe base64, padded or not: the API accepts all of them."""
    data = data.strip().replace("-", "+").replace("_", "/")
    return base64.b64decode(data + "=" * (-len(data) % 4), validate=True)


def _parse_request(
    model: str, path: str, body: dict[str, Any], headers: Any, received_at: float
) -> RequestInfo:
    texts: list[str] = []
    image_sha256 = mime_type = None
    for content in _get(body, "contents") or []:
        for part in _get(content, "parts") or []:
            if (text := _get(part, "text")) is not None:
                texts.append(text)
            inline = _get(part, "inlineData")
            if inline is not None and image_sha256 is None:
                image_sha256 = hashlib.sha256(_b64decode(_get(inline, "data") or "")).hexdigest()
                mime_type = _get(inline, "mimeType")
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
        image_sha256=image_sha256,
        mime_type=mime_type,
        generation_config=config,
        has_response_schema=schema is not None,
        response_schema=schema,
        has_api_key=bool(headers.get("x-goog-api-key")),
        authorization=headers.get("Authorization"),
        received_at=received_at,
    )


def _estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def _envelope(
    info: RequestInfo, candidates: list[dict[str, Any]] | None, *, output_tokens: int
) -> dict[str, Any]:
    prompt_tokens = (info.image_tokens if info.image_sha256 else 0) + _estimate_tokens(info.prompt)
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


def _answer_body(info: RequestInfo, text: str, finish_reason: str = "STOP") -> dict[str, Any]:
    candidate = {
        "content": {"role": "model", "parts": [{"text": text}]},
        "finishReason": finish_reason,
        "index": 0,
    }
    return _envelope(info, [candidate], output_tokens=max(1, _estimate_tokens(text)))


def main(argv: list[str] | None = None) -> None:
    """Serve until Ctrl-C, so a demo or a notebook can point the real SDK at scripted answers."""
    parser = argparse.ArgumentParser(prog="python -m promptgrade.testing.gemini_server", description=__doc__)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--answers", type=Path, help="JSON file mapping image sha256 to answer text")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each response")
    parser.add_argument("--default-answer", default=DEFAULT_ANSWER, help="answer for images not in --answers")
    args = parser.parse_args(argv)
    answers = json.loads(args.answers.read_text()) if args.answers else {}
    fake = FakeGemini(
        port=args.port, answers=answers, default_answer=args.default_answer, latency_s=args.latency
    )
    with fake:
        print(f"Fake Gemini API listening on {fake.base_url} ({len(answers)} scripted answers)", flush=True)
        print(f"GOOGLE_GEMINI_BASE_URL={fake.base_url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("stopped")


if __name__ == "__main__":
    main()
