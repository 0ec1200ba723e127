"""A local stand-in for an OpenAI-compatible Chat Completions server, for tests and offline demos.

It speaks the wire protocol the official ``openai`` SDK speaks (``POST /v1/chat/completions``), so the
real client is tested against real bytes, never a monkeypatched SDK: answers are scripted per image
(by the sha256 of the ``data:`` URL's bytes), and faults — 429 with ``retry-after``, 5xx, an
exhausted quota, a content filter, a truncated answer — can be queued. Standard library only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKENS_PER_IMAGE = 85  # what OpenAI bills a low-detail image; scripted, not a rule
_DATA_URL = re.compile(r"^data:(?P<mime>[\w/+.-]+);base64,(?P<data>.*)$", re.DOTALL)


@dataclass(frozen=True)
class ChatRequest:
    """What the server received, decoded: what a test asserts on instead of raw JSON."""

    model: str
    prompt: str
    image_sha256: str | None
    mime_type: str | None
    detail: str | None
    params: dict[str, Any] = field(default_factory=dict)  # temperature, top_p, max_tokens, seed…
    response_format: dict[str, Any] | None = None
    authorization: str | None = None
    received_at: float = 0.0
    content_order: tuple[str, ...] = ()  # the content parts' types, in the order sent


@dataclass(frozen=True)
class ChatFault:
    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    finish_reason: str | None = None  # with status 200: "length" or "content_filter"

    @classmethod
    def rate_limited(cls, retry_after: str | None = "2") -> ChatFault:
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        return cls(429, _error("Rate limit reached", "rate_limit_exceeded"), headers)

    @classmethod
    def quota_exhausted(cls) -> ChatFault:
        return cls(429, _error("You exceeded your current quota", "insufficient_quota"))

    @classmethod
    def http_error(cls, status: int, message: str = "error") -> ChatFault:
        return cls(status, _error(message, None))

    @classmethod
    def truncated(cls) -> ChatFault:
        return cls(finish_reason="length")

    @classmethod
    def content_filter(cls) -> ChatFault:
        return cls(finish_reason="content_filter")


Answer = str | Callable[[ChatRequest], str]


class FakeOpenAI:
    """A started server on 127.0.0.1; ``base_url`` (…/v1) goes to ``openai.AsyncOpenAI(base_url=…)``."""

    def __init__(self, *, default_answer: Answer = "{}", latency_s: float = 0.0) -> None:
        self.default_answer: Answer = default_answer
        self.latency_s = latency_s
        self.answers: dict[str, str] = {}
        self._lock = threading.Lock()
        self._requests: list[ChatRequest] = []
        self._faults: deque[ChatFault] = deque()
        self._image_faults: dict[str, deque[ChatFault]] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> FakeOpenAI:
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True, name="fake-openai"
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the server first (use it as a context manager)"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def requests(self) -> list[ChatRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self._requests)

    def enqueue_fault(self, fault: ChatFault, *, image_sha256: str | None = None, times: int = 1) -> None:
        with self._lock:
            queue = (
                self._faults if image_sha256 is None else self._image_faults.setdefault(image_sha256, deque())
            )
            queue.extend([fault] * times)

    def _record(self, request: ChatRequest) -> ChatFault | None:
        with self._lock:
            self._requests.append(request)
            own = self._image_faults.get(request.image_sha256 or "")
            if own:
                return own.popleft()
            return self._faults.popleft() if self._faults else None

    def _answer(self, request: ChatRequest) -> str:
        scripted = self.answers.get(request.image_sha256 or "")
        if scripted is not None:
            return scripted
        answer = self.default_answer
        return answer(request) if callable(answer) else answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], fake: FakeOpenAI
    ) -> None:
        super().__init__(address, handler)
        self.fake = fake


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: test output should show assertions, not access logs."""

    def do_POST(self) -> None:
        received_at = time.monotonic()
        fake = self.server.fake
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.split("?", 1)[0] != "/v1/chat/completions":
            self._send(404, _error(f"Unknown path {self.path}", None))
            return
        try:
            request = _parse(json.loads(body or b"{}"), self.headers.get("Authorization"), received_at)
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            self._send(400, _error(f"Invalid request: {exc}", "invalid_request"))
            return
        fault = fake._record(request)
        if fake.latency_s:
            time.sleep(fake.latency_s)
        if fault is not None and fault.status != 200:
            self._send(fault.status, fault.body or {}, fault.headers)
            return
        text = fake._answer(request)
        finish = fault.finish_reason if fault is not None else "stop"
        content: str | None = None if finish == "content_filter" else text
        prompt_tokens = (TOKENS_PER_IMAGE if request.image_sha256 else 0) + math.ceil(len(request.prompt) / 4)
        completion_tokens = max(1, math.ceil(len(text) / 4))
        self._send(
            200,
            {
                "id": "chatcmpl-" + uuid.uuid4().hex[:24],
                "object": "chat.completion",
                "created": int(time.time()),
                "model": request.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "finish_reason": finish,
                        "logprobs": None,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
        )

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass


def _error(message: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}


def _parse(body: dict[str, Any], authorization: str | None, received_at: float) -> ChatRequest:
    texts: list[str] = []
    order: list[str] = []
    image_sha256 = mime = detail = None
    for message in body["messages"]:
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for part in parts:
            order.append(part.get("type", "?"))
            if part.get("type") == "text":
                texts.append(part["text"])
            elif part.get("type") == "image_url" and image_sha256 is None:
                found = _DATA_URL.match(part["image_url"]["url"])
                if found is None:
                    raise ValueError("image_url is not a base64 data: URL")
                image_sha256 = hashlib.sha256(base64.b64decode(found["data"], validate=True)).hexdigest()
                mime, detail = found["mime"], part["image_url"].get("detail")
    params = {
        k: body[k]
        for k in ("temperature", "top_p", "max_tokens", "max_completion_tokens", "seed")
        if k in body
    }
    return ChatRequest(
        model=body["model"],
        prompt="\n".join(texts),
        image_sha256=image_sha256,
        mime_type=mime,
        detail=detail,
        params=params,
        response_format=body.get("response_format"),
        authorization=authorization,
        received_at=received_at,
        content_order=tuple(order),
    )
