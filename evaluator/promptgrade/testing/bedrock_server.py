"""A local stand-in for Amazon Bedrock's Converse API, for tests and offline demos.

boto3's ``bedrock-runtime`` client is pointed at it with ``endpoint_url`` (or
``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``) and sends the real rest-json bytes — ``POST
/model/{modelId}/converse`` with the image as base64 in an image block — so the real client is tested,
never a stubbed one. Answers are scripted per image (sha256 of the bytes); Bedrock's exceptions
(``ThrottlingException``, ``ValidationException``…), stop reasons and a model without tool use can be
queued. The SigV4 signature is not checked. The same server plays the control plane's batch inference
jobs (``bedrock_batches``, which reads and writes S3 through boto3); the Converse half needs only the
standard library.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from promptgrade.testing.bedrock_batches import BedrockBatchAPI
from promptgrade.testing.scripted import JSONHandler, ScriptedAPI

TOKENS_PER_IMAGE = 1600  # scripted: roughly what a Claude model bills a ~768-px image


@dataclass(frozen=True)
class ConverseRequest:
    model_id: str
    prompt: str
    image_sha256: str | None
    image_format: str | None
    inference: dict[str, Any] = field(default_factory=dict)
    tool_config: dict[str, Any] | None = None
    authorization: str | None = None
    content_order: tuple[str, ...] = ()
    image_sha256s: tuple[str, ...] = ()  # every image, in the order sent (the last is image_sha256)
    batch_job: str | None = None  # the batch inference job that carried it (None: an online call)


@dataclass(frozen=True)
class ConverseFault:
    status: int = 200
    error_type: str | None = None
    message: str = ""
    stop_reason: str | None = None  # with status 200: max_tokens, guardrail_intervened, content_filtered

    @classmethod
    def exception(cls, error_type: str, status: int = 400, message: str = "scripted") -> ConverseFault:
        return cls(status, error_type, message)

    @classmethod
    def throttled(cls) -> ConverseFault:
        return cls(429, "ThrottlingException", "Too many requests, please wait before trying again.")

    @classmethod
    def stopped(cls, reason: str) -> ConverseFault:
        return cls(stop_reason=reason)


Answer = str | Callable[[ConverseRequest], str]


class FakeBedrock(ScriptedAPI[ConverseRequest, ConverseFault]):
    """A started Converse server on 127.0.0.1; ``endpoint_url`` goes to boto3."""

    thread_name = "fake-bedrock"

    def __init__(self, *, default_answer: Answer = "{}", latency_s: float = 0.0) -> None:
        super().__init__(_Handler, default_answer=default_answer)
        self.latency_s = latency_s
        self.tools_supported = True  # False: a tool config is a ValidationException, as for some models
        self.batches = BedrockBatchAPI(self)  # the control plane's batch inference jobs (bedrock_batches)

    def stop(self) -> None:
        super().stop()
        self.batches.close()

    @property
    def endpoint_url(self) -> str:
        """The runtime's endpoint (``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``), and the control plane's
        (``AWS_ENDPOINT_URL_BEDROCK``): one server plays both."""
        return self.address

    # -- used by the handler and the batch jobs ----------------------------------------------------
    def _parse(self, model_id: str, body: dict[str, Any], batch_job: str | None) -> ConverseRequest:
        return _parse(model_id, body, None, batch_job)

    def _reply(
        self, request: ConverseRequest, fault: ConverseFault | None
    ) -> tuple[int, dict[str, Any], str | None]:
        """What the server answers one Converse request (online, or inside a batch job): status,
        body, and the error type of an error."""
        if fault is not None and fault.status != 200:
            return fault.status, {"message": fault.message}, fault.error_type or "InternalServerException"
        if request.tool_config is not None and not self.tools_supported:
            return 400, {"message": "This model doesn't support tool use."}, "ValidationException"
        text = self._answer(request)
        stop = fault.stop_reason if fault is not None and fault.stop_reason else None
        if request.tool_config is not None:
            name = request.tool_config["toolChoice"]["tool"]["name"]
            content: list[dict[str, Any]] = [
                {"toolUse": {"toolUseId": "tooluse_1", "name": name, "input": json.loads(text)}}
            ]
            stop = stop or "tool_use"
        else:
            content = [{"text": text}]
            stop = stop or "end_turn"
        prompt_tokens = TOKENS_PER_IMAGE * len(request.image_sha256s) + math.ceil(len(request.prompt) / 4)
        output_tokens = max(1, math.ceil(len(text) / 4))
        body = {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop,
            "usage": {
                "inputTokens": prompt_tokens,
                "outputTokens": output_tokens,
                "totalTokens": prompt_tokens + output_tokens,
            },
            "metrics": {"latencyMs": int(self.latency_s * 1000)},
        }
        return 200, body, None


class _Handler(JSONHandler):
    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self.send_json(
            status, body, {"x-amzn-RequestId": "00000000-0000-0000-0000-000000000000", **(headers or {})}
        )

    def do_POST(self) -> None:
        fake = self.server.fake
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path.split("?", 1)[0]
        if fake.batches.post(self, path, body):
            return
        if not (path.startswith("/model/") and path.endswith("/converse")):
            self.error(404, "UnknownOperationException", f"no such operation: {path}")
            return
        model_id = urllib.parse.unquote(path.removeprefix("/model/").removesuffix("/converse"))
        try:
            request = _parse(model_id, json.loads(body or b"{}"), self.headers.get("Authorization"))
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            self.error(400, "ValidationException", f"malformed request: {exc}")
            return
        fault = fake._record(request)
        if fake.latency_s:
            time.sleep(fake.latency_s)
        status, reply, error_type = fake._reply(request, fault)
        if error_type is not None:
            self.error(status, error_type, str(reply["message"]))
        else:
            self._send(status, reply)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if not self.server.fake.batches.get(self, path):
            self.error(404, "UnknownOperationException", f"no such operation: {path}")

    def error(self, status: int, error_type: str, message: str) -> None:
        self._send(
            status, {"message": message}, {"x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/"}
        )


def _parse(
    model_id: str, body: dict[str, Any], authorization: str | None, batch_job: str | None = None
) -> ConverseRequest:
    texts: list[str] = []
    order: list[str] = []
    images: list[str] = []
    image_format = None
    for message in body["messages"]:
        for block in message["content"]:
            kind = next(iter(block))
            order.append(kind)
            if kind == "text":
                texts.append(block["text"])
            elif kind == "image":
                data = base64.b64decode(block["image"]["source"]["bytes"], validate=True)
                images.append(hashlib.sha256(data).hexdigest())
                image_format = block["image"]["format"]
    return ConverseRequest(
        model_id=model_id,
        prompt="\n".join(texts),
        image_sha256=images[-1] if images else None,
        image_sha256s=tuple(images),
        image_format=image_format,
        inference=body.get("inferenceConfig") or {},
        tool_config=body.get("toolConfig"),
        authorization=authorization,
        content_order=tuple(order),
        batch_job=batch_job,
    )
