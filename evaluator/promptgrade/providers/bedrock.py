"""Amazon Bedrock through boto3's ``bedrock-runtime`` Converse API: Claude, Nova, Llama… behind one call.

boto3 is synchronous, so each call runs in this provider's own thread pool (sized for the sweep's
concurrency, not the 6 threads asyncio's default executor has on 2 cores); the runner's gate still
decides how many are in flight. botocore's retries are off (``total_max_attempts: 1``) so every request is
counted once and the runner's retry policy applies, as for every provider. Structured output is a
forced tool whose input schema is the task's JSON schema; a model that refuses tool use is answered
once more without it (the prompt asks for JSON anyway), and from then on asked without it.

Credentials, region and endpoint come from the standard AWS chain — profile, environment, role,
``AWS_ENDPOINT_URL_BEDROCK_RUNTIME`` / ``AWS_ENDPOINT_URL`` — never from the experiment file.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import botocore.session

from promptgrade.errors import CredentialsError
from promptgrade.providers.base import (
    MAX_ERROR_MESSAGE,
    Completion,
    CompletionRequest,
    ErrorInfo,
    ErrorKind,
    Measures,
    TextPart,
    failed,
)

TOOL_NAME = "answer"
_MAX_THREADS = 64
_FORMATS = {"image/jpeg": "jpeg", "image/png": "png", "image/webp": "webp", "image/gif": "gif"}
# Bedrock's exception names (botocore's error code) → the runner's kinds. Pure data: the error table.
ERROR_KINDS: dict[str, ErrorKind] = {
    "ThrottlingException": ErrorKind.RATE_LIMITED,
    "TooManyRequestsException": ErrorKind.RATE_LIMITED,
    "ServiceQuotaExceededException": ErrorKind.QUOTA_EXHAUSTED,
    "ModelNotReadyException": ErrorKind.SERVER_ERROR,  # the model is being loaded: transient
    "ModelTimeoutException": ErrorKind.TIMEOUT,
    "InternalServerException": ErrorKind.SERVER_ERROR,
    "ServiceUnavailableException": ErrorKind.SERVER_ERROR,
    "ModelErrorException": ErrorKind.SERVER_ERROR,
    "AccessDeniedException": ErrorKind.AUTH,
    "UnrecognizedClientException": ErrorKind.AUTH,
    "ExpiredTokenException": ErrorKind.AUTH,
    "InvalidSignatureException": ErrorKind.AUTH,
    "ValidationException": ErrorKind.BAD_REQUEST,
    "ResourceNotFoundException": ErrorKind.BAD_REQUEST,
}
_STOP_BLOCKED = frozenset({"guardrail_intervened", "content_filtered"})


def _session_reading_aws_region() -> botocore.session.Session:
    """A botocore session whose region, when no ``region`` is given, is ``AWS_REGION`` before
    ``AWS_DEFAULT_REGION`` (the only one botocore reads): AWS_REGION is what Lambda and most tools set.

    botocore's own configuration chain reads the variable, as it reads the rest of the AWS
    environment, so that neither this module nor its callers (the lab, the Lambda) read it themselves.
    """
    return botocore.session.Session(
        session_vars={"region": ("region", ["AWS_REGION", "AWS_DEFAULT_REGION"], None, None)}
    )


def aws_session(model: str, region: str | None) -> boto3.session.Session:
    """The AWS chain's session in ``region`` (else the chain's own); one line naming ``model`` when
    it has no region or no credentials, before any call."""
    session = boto3.session.Session(
        botocore_session=_session_reading_aws_region(), region_name=region or None
    )
    if session.region_name is None:
        raise CredentialsError(
            f"{model}: no AWS region: set `region` on the model, or AWS_REGION / AWS_DEFAULT_REGION"
        )
    if session.get_credentials() is None:
        raise CredentialsError(
            f"{model}: no AWS credentials: set AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "or run where a role provides them"
        )
    return session


class BedrockProvider:
    """``converse`` with the image as an image block, then the rendered prompt as text."""

    name = "bedrock"

    def __init__(
        self, model: str, region: str | None = None, base_url: str | None = None, timeout_s: float = 60
    ) -> None:
        self.model = model
        self.base_url = base_url
        self.timeout_s = timeout_s
        session = aws_session(model, region)
        self.region = session.region_name
        config = botocore.config.Config(
            retries={
                "total_max_attempts": 1,
                "mode": "standard",
            },  # one attempt: retry policy is the runner's
            connect_timeout=min(timeout_s, 10),
            read_timeout=timeout_s,
            max_pool_connections=_MAX_THREADS,
        )
        self._client = session.client("bedrock-runtime", endpoint_url=base_url, config=config)
        self.endpoint = self._client.meta.endpoint_url
        self._threads = ThreadPoolExecutor(max_workers=_MAX_THREADS, thread_name_prefix="bedrock")
        self._tools = True  # False once the model said it cannot use tools

    def __repr__(self) -> str:
        return f"BedrockProvider(model={self.model!r}, region={self.region!r}, endpoint={self.endpoint!r})"

    async def complete(self, request: CompletionRequest) -> Completion:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        structured = request.settings.structured_output and request.response_schema is not None
        try:
            try:
                arguments = converse_arguments(self.model, request, tools=structured and self._tools)
                response = await loop.run_in_executor(
                    self._threads, lambda: self._client.converse(**arguments)
                )
            except botocore.exceptions.ClientError as exc:
                if not (structured and self._tools and _refuses_tools(exc)):
                    raise
                self._tools = False  # e.g. a model without tool use: ask for the JSON in text instead
                arguments = converse_arguments(self.model, request, tools=False)
                response = await loop.run_in_executor(
                    self._threads, lambda: self._client.converse(**arguments)
                )
        except botocore.exceptions.ClientError as exc:
            return failed(client_error(exc), started)
        except (botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectTimeoutError):
            return failed(ErrorInfo(ErrorKind.TIMEOUT, f"no response within {self.timeout_s} s"), started)
        except (
            botocore.exceptions.EndpointConnectionError,
            botocore.exceptions.ConnectionClosedError,
        ) as exc:
            return failed(ErrorInfo(ErrorKind.CONNECTION, _one_line(str(exc))), started)
        except botocore.exceptions.NoCredentialsError as exc:
            return failed(ErrorInfo(ErrorKind.AUTH, _one_line(str(exc))), started)
        except botocore.exceptions.BotoCoreError as exc:  # a response botocore could not read, and the like
            return failed(ErrorInfo(ErrorKind.MALFORMED, _one_line(f"{type(exc).__name__}: {exc}")), started)
        return completion_of(response, (time.perf_counter() - started) * 1000)

    async def aclose(self) -> None:
        """Nothing is bound to the event loop; the pool's threads are reused by a later sweep."""


def converse_arguments(model: str, request: CompletionRequest, *, tools: bool) -> dict[str, Any]:
    settings = request.settings
    inference = {
        "temperature": settings.temperature,
        "topP": settings.top_p,
        "maxTokens": settings.max_output_tokens,
    }
    arguments: dict[str, Any] = {
        "modelId": model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"text": part.text}
                    if isinstance(part, TextPart)
                    else {
                        "image": {
                            "format": _FORMATS.get(part.mime_type, "jpeg"),
                            "source": {"bytes": part.data},
                        }
                    }
                    for part in request.content()
                ],
            }
        ],
    }
    if config := {k: v for k, v in inference.items() if v is not None}:
        arguments["inferenceConfig"] = config
    if tools and request.response_schema is not None:
        arguments["toolConfig"] = {
            "tools": [
                {
                    "toolSpec": {
                        "name": TOOL_NAME,
                        "description": "Record the answer: the categories and the grade.",
                        "inputSchema": {"json": request.response_schema},
                    }
                }
            ],
            "toolChoice": {"tool": {"name": TOOL_NAME}},
        }
    return arguments


def completion_of(response: Mapping[str, Any], latency_ms: float) -> Completion:
    """A Converse response as a Completion: a forced tool's input is the answer's JSON."""
    usage = response.get("usage") or {}
    common: Measures = {
        "input_tokens": int(usage.get("inputTokens") or 0),
        "output_tokens": int(usage.get("outputTokens") or 0),
        "latency_ms": latency_ms,
    }
    stop = response.get("stopReason")
    content = ((response.get("output") or {}).get("message") or {}).get("content") or []
    texts = [block["text"] for block in content if isinstance(block.get("text"), str)]
    tool_inputs = [
        block["toolUse"].get("input") for block in content if isinstance(block.get("toolUse"), dict)
    ]
    text = json.dumps(tool_inputs[0]) if tool_inputs else ("".join(texts) or None)
    if stop in _STOP_BLOCKED:
        return Completion(
            text=None,
            finish_reason=stop,
            error=ErrorInfo(ErrorKind.BLOCKED, f"answer blocked: {stop}"),
            **common,
        )
    if stop == "max_tokens":
        error = ErrorInfo(ErrorKind.TRUNCATED, "answer stopped at max_output_tokens")
        return Completion(text=text, finish_reason=stop, error=error, **common)
    if text is None:
        error = ErrorInfo(ErrorKind.EMPTY, f"no text in the answer (stop reason {stop})")
        return Completion(text=None, finish_reason=stop, error=error, **common)
    return Completion(text=text, finish_reason=stop, **common)


def client_error(exc: botocore.exceptions.ClientError) -> ErrorInfo:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "")) or "UnknownError"
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    kind = ERROR_KINDS.get(code)
    if kind is None:
        kind = ErrorKind.SERVER_ERROR if isinstance(status, int) and status >= 500 else ErrorKind.BAD_REQUEST
    message = _one_line(f"{code}: {error.get('Message', '')}")[:MAX_ERROR_MESSAGE]
    return ErrorInfo(kind, message, status if isinstance(status, int) else None)


def _refuses_tools(exc: botocore.exceptions.ClientError) -> bool:
    error = exc.response.get("Error", {})
    return error.get("Code") == "ValidationException" and "tool" in str(error.get("Message", "")).lower()


def _one_line(text: str) -> str:
    return " ".join(text.split())
