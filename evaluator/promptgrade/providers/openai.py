"""OpenAI-compatible chat servers through the official ``openai`` SDK: OpenAI, Azure OpenAI's v1
endpoint, vLLM, Ollama, LM Studio, llama.cpp server, OpenRouter — one provider, a different base URL.

As for Gemini, the SDK does the HTTP and this module maps its answer and errors onto ``Completion`` and
``ErrorKind``: the SDK's own retries are off (``max_retries=0``), because retry policy, limits, cache
and budget live once, in the runner; a 429's ``retry-after`` travels in ``ErrorInfo.retry_after_s``.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import time
from typing import Any

import openai

from promptgrade.errors import CredentialsError
from promptgrade.providers.base import (
    Completion,
    CompletionRequest,
    ErrorInfo,
    ErrorKind,
    ImageInput,
    Measures,
    TextPart,
    failed,
    redacted,
    status_kind,
)

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
NO_KEY = "no-key-needed"  # the SDK insists on a key; a local server without auth ignores it
# media_resolution, the experiment's one image setting, as OpenAI's image "detail"
_DETAIL = {"low": "low", "medium": "auto", "high": "high"}
# 429 bodies whose error code means "no more today": stop and resume later, as Gemini's per-day quota
_QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})


class OpenAIProvider:
    """Chat Completions with the image as a base64 ``data:`` URL: one HTTP request per ``complete``."""

    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        timeout_s: float = 60,
        api_key_env: str | None = None,
        api_key: str | None = None,
    ) -> None:
        """The caller resolves where things come from, so that the lab and the Lambda each decide:
        ``api_key`` is the key itself (the lab's from the variable ``api_key_env`` names, else
        ``OPENAI_API_KEY``; the Lambda's from its secret store), ``base_url`` the server (the lab's falls
        back to ``OPENAI_BASE_URL``). ``api_key_env`` only names that variable when it was unset."""
        self.model = model
        self.base_url = base_url or None
        self.timeout_s = timeout_s
        if not api_key:
            _no_key(api_key_env, self.base_url)
        self._secret = api_key or None
        self._bound: tuple[asyncio.AbstractEventLoop, openai.AsyncOpenAI] | None = None

    def _client(self) -> openai.AsyncOpenAI:
        """One client per event loop: its HTTP pool belongs to the loop (a sweep closes it at the end)."""
        loop = asyncio.get_running_loop()
        if self._bound is None or self._bound[0] is not loop:
            client = openai.AsyncOpenAI(
                api_key=self._secret or NO_KEY, base_url=self.base_url, timeout=self.timeout_s, max_retries=0
            )
            self._bound = (loop, client)
        return self._bound[1]

    def __repr__(self) -> str:
        return (
            f"OpenAIProvider(model={self.model!r}, base_url={self.base_url!r}, timeout_s={self.timeout_s!r})"
        )

    async def complete(self, request: CompletionRequest) -> Completion:
        started = time.perf_counter()
        try:
            response = await self._client().chat.completions.create(**chat_arguments(self.model, request))
        except openai.APIStatusError as exc:
            return self._failed(status_error(exc), started)
        except openai.APITimeoutError:
            return self._failed(
                ErrorInfo(ErrorKind.TIMEOUT, f"no response within {self.timeout_s} s"), started
            )
        except openai.APIConnectionError as exc:
            return self._failed(ErrorInfo(ErrorKind.CONNECTION, _describe(exc)), started)
        except (openai.APIResponseValidationError, ValueError) as exc:
            return self._failed(ErrorInfo(ErrorKind.MALFORMED, _describe(exc)), started)
        return self._redacted(completion_of(response, (time.perf_counter() - started) * 1000))

    async def aclose(self) -> None:
        bound, self._bound = self._bound, None
        if bound is not None:
            await bound[1].close()

    def _failed(self, error: ErrorInfo, started: float) -> Completion:
        return failed(error, started, self._secret)

    def _redacted(self, completion: Completion) -> Completion:
        return redacted(completion, self._secret)


def _no_key(api_key_env: str | None, base_url: str | None) -> None:
    """No key was found: fine for a server of one's own (vLLM, Ollama…), never for a variable the
    experiment names (a typo would otherwise pass silently), nor for OpenAI itself, which needs one."""
    if api_key_env is not None:
        raise CredentialsError(f"api_key_env names {api_key_env}, which is not set: export {api_key_env}=...")
    if base_url is None:
        raise CredentialsError(
            f"No OpenAI credentials: set {DEFAULT_KEY_ENV}, or a base_url (or OPENAI_BASE_URL) for a server "
            "of your own that needs no key."
        )


def chat_arguments(model: str, request: CompletionRequest) -> dict[str, Any]:
    """The request as Chat Completions arguments: image first, then the prompt (as sent to Gemini)."""
    settings = request.settings
    detail = _DETAIL[settings.media_resolution] if settings.media_resolution is not None else None
    arguments: dict[str, Any] = {
        "model": model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": part.text}
                    if isinstance(part, TextPart)
                    else {"type": "image_url", "image_url": _image_url(part, detail)}
                    for part in request.content()
                ],
            }
        ],
    }
    optional = {
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "max_tokens": settings.max_output_tokens,
        "seed": settings.seed,
    }
    arguments.update({key: value for key, value in optional.items() if value is not None})
    if settings.structured_output and request.response_schema is not None:
        arguments["response_format"] = {
            "type": "json_schema",
            # strict mode would demand additionalProperties=false and every field required; the parser
            # checks the answer anyway, so the schema guides rather than binds
            "json_schema": {"name": "answer", "schema": request.response_schema, "strict": False},
        }
    return arguments


def _image_url(image: ImageInput, detail: str | None) -> dict[str, Any]:
    url: dict[str, Any] = {
        "url": f"data:{image.mime_type};base64,{base64.b64encode(image.data).decode('ascii')}"
    }
    if detail is not None:
        url["detail"] = detail
    return url


def completion_of(response: Any, latency_ms: float) -> Completion:
    """A ChatCompletion as a Completion; a refusal or a content filter is an answer, not a fault."""
    usage = getattr(response, "usage", None)
    common: Measures = {
        "input_tokens": (usage.prompt_tokens or 0) if usage else 0,
        "output_tokens": (usage.completion_tokens or 0) if usage else 0,
        "latency_ms": latency_ms,
        "model_version": getattr(response, "model", None),
    }
    if not response.choices:
        return Completion(text=None, error=ErrorInfo(ErrorKind.EMPTY, "no choices in the response"), **common)
    choice = response.choices[0]
    finish = choice.finish_reason
    message = choice.message
    text = message.content if message is not None else None
    refusal = getattr(message, "refusal", None) if message is not None else None
    if finish == "content_filter" or refusal:
        reason = f"refused: {refusal}" if refusal else "answer blocked: finish reason content_filter"
        return Completion(
            text=None, finish_reason=finish, error=ErrorInfo(ErrorKind.BLOCKED, reason), **common
        )
    if finish == "length":
        error = ErrorInfo(ErrorKind.TRUNCATED, "answer stopped at max_output_tokens")
        return Completion(text=text, finish_reason=finish, error=error, **common)
    if not text:
        error = ErrorInfo(ErrorKind.EMPTY, f"no text in the answer (finish reason {finish})")
        return Completion(text=None, finish_reason=finish, error=error, **common)
    return Completion(text=text, finish_reason=finish, **common)


def status_error(exc: openai.APIStatusError) -> ErrorInfo:
    """The error table: HTTP status (and, for 429, the body's code and retry-after) → ErrorKind."""
    code = exc.status_code
    message = _one_line(f"HTTP {code}: {exc.message}")
    if code == 429:
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
        kind = ErrorKind.QUOTA_EXHAUSTED if error.get("code") in _QUOTA_CODES else ErrorKind.RATE_LIMITED
        return ErrorInfo(kind, message, code, retry_after(exc.response.headers))
    return ErrorInfo(status_kind(code), message, code)


def retry_after(headers: Any) -> float | None:
    """``retry-after-ms`` (OpenAI's), else ``retry-after`` in seconds or as an HTTP date."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _describe(exc: BaseException) -> str:
    detail = str(exc)
    return _one_line(f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__)
