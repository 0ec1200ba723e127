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
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from promptgrade.testing.openai_batches import OpenAIBatchAPI, error_body
from promptgrade.testing.scripted import JSONHandler, ScriptedAPI

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
    image_sha256s: tuple[str, ...] = ()  # every image, in the order sent (the last is image_sha256)
    batch_job: str | None = None  # the batch job that carried it (None: an online call)


@dataclass(frozen=True)
class ChatFault:
    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    finish_reason: str | None = None  # with status 200: "length" or "content_filter"

    @classmethod
    def rate_limited(cls, retry_after: str | None = "2") -> ChatFault:
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        return cls(429, error_body("Rate limit reached", "rate_limit_exceeded"), headers)

    @classmethod
    def quota_exhausted(cls) -> ChatFault:
        return cls(429, error_body("You exceeded your current quota", "insufficient_quota"))

    @classmethod
    def http_error(cls, status: int, message: str = "error") -> ChatFault:
        return cls(status, error_body(message, None))

    @classmethod
    def truncated(cls) -> ChatFault:
        return cls(finish_reason="length")

    @classmethod
    def content_filter(cls) -> ChatFault:
        return cls(finish_reason="content_filter")


Answer = str | Callable[[ChatRequest], str]


class FakeOpenAI(ScriptedAPI[ChatRequest, ChatFault]):
    """A started server on 127.0.0.1; ``base_url`` (…/v1) goes to ``openai.AsyncOpenAI(base_url=…)``."""

    thread_name = "fake-openai"

    def __init__(self, *, default_answer: Answer = "{}", latency_s: float = 0.0) -> None:
        super().__init__(_Handler, default_answer=default_answer)
        self.latency_s = latency_s
        self.batches = OpenAIBatchAPI(self)  # the Files and Batch APIs (openai_batches)

    @property
    def base_url(self) -> str:
        return f"{self.address}/v1"

    # -- used by the handler and the Batch API -----------------------------------------------------
    def _parse(self, body: dict[str, Any], batch_job: str | None) -> ChatRequest:
        return parse_chat(body, None, time.monotonic(), batch_job)

    def _reply(
        self, request: ChatRequest, fault: ChatFault | None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        return chat_reply(self, request, fault)


class _Handler(JSONHandler):
    def do_POST(self) -> None:
        received_at = time.monotonic()
        fake = self.server.fake
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path.split("?", 1)[0]
        if fake.batches.post(self, path, body):
            return
        if path != "/v1/chat/completions":
            self.send_json(404, error_body(f"Unknown path {self.path}", None))
            return
        try:
            request = parse_chat(json.loads(body or b"{}"), self.headers.get("Authorization"), received_at)
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            self.send_json(400, error_body(f"Invalid request: {exc}", "invalid_request"))
            return
        fault = fake._record(request)
        if fake.latency_s:
            time.sleep(fake.latency_s)
        status, reply, headers = chat_reply(fake, request, fault)
        self.send_json(status, reply, headers)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if not self.server.fake.batches.get(self, path):
            self.send_json(404, error_body(f"Unknown path {self.path}", None))

    def do_DELETE(self) -> None:
        path = self.path.split("?", 1)[0]
        if not self.server.fake.batches.delete(self, path):
            self.send_json(404, error_body(f"Unknown path {self.path}", None))


def chat_reply(
    fake: ScriptedAPI[ChatRequest, ChatFault], request: ChatRequest, fault: ChatFault | None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """What the server answers one chat request (online, or inside a batch job): status, body, headers."""
    if fault is not None and fault.status != 200:
        return fault.status, fault.body or {}, fault.headers
    text = fake._answer(request)
    finish = fault.finish_reason if fault is not None else "stop"
    content: str | None = None if finish == "content_filter" else text
    prompt_tokens = TOKENS_PER_IMAGE * len(request.image_sha256s) + math.ceil(len(request.prompt) / 4)
    completion_tokens = max(1, math.ceil(len(text) / 4))
    body = {
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
    }
    return 200, body, {}


def parse_chat(
    body: dict[str, Any], authorization: str | None, received_at: float, batch_job: str | None = None
) -> ChatRequest:
    texts: list[str] = []
    order: list[str] = []
    images: list[str] = []
    mime = detail = None
    for message in body["messages"]:
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for part in parts:
            order.append(part.get("type", "?"))
            if part.get("type") == "text":
                texts.append(part["text"])
            elif part.get("type") == "image_url":
                found = _DATA_URL.match(part["image_url"]["url"])
                if found is None:
                    raise ValueError("image_url is not a base64 data: URL")
                images.append(hashlib.sha256(base64.b64decode(found["data"], validate=True)).hexdigest())
                mime, detail = found["mime"], part["image_url"].get("detail")
    params = {
        k: body[k]
        for k in ("temperature", "top_p", "max_tokens", "max_completion_tokens", "seed")
        if k in body
    }
    return ChatRequest(
        model=body["model"],
        prompt="\n".join(texts),
        image_sha256=images[-1] if images else None,
        image_sha256s=tuple(images),
        mime_type=mime,
        detail=detail,
        params=params,
        response_format=body.get("response_format"),
        authorization=authorization,
        received_at=received_at,
        content_order=tuple(order),
        batch_job=batch_job,
    )
