"""The provider protocol and the values that cross it.

A provider knows its API and nothing about scoring, caching or MLflow. It never raises for an API
failure: it returns a ``Completion`` whose ``error`` says what happened and whether a retry may help,
so that retry policy lives once, in the runner (and the Lambda), not in every provider.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, NotRequired, Protocol, TypedDict, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True, slots=True)
class ImageInput:
    """Image bytes ready to send; ``sha256`` identifies them in caches and logs instead of the bytes."""

    data: bytes = field(repr=False)
    mime_type: str
    sha256: str = ""
    # (width, height) when known from preparation: the token estimate then never re-opens the image
    size: tuple[int, int] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.sha256:
            object.__setattr__(self, "sha256", hashlib.sha256(self.data).hexdigest())


class GenerationSettings(BaseModel):
    """Per-candidate generation settings; ``None`` leaves the provider's default in place."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_output_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    structured_output: bool = False
    media_resolution: Literal["low", "medium", "high"] | None = None
    thinking_budget: int | None = Field(None, ge=-1)

    def as_params(self) -> dict[str, Any]:
        """Flat, stable params for MLflow and cache keys (unset settings are omitted)."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


@dataclass(frozen=True, slots=True)
class TextPart:
    """A run of prompt text between images."""

    text: str


Part = TextPart | ImageInput  # one element of a prompt as the model receives it, in order


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """One call: the tray (``image``), the prompt's text, and — for a prompt that shows reference
    images — the whole prompt as ``parts`` in order (text and images, the tray among them).

    Without ``parts`` a request is what it has always been: the tray, then the text. Every provider
    sends ``content()``; the cache key, the token estimate and the trace read the same sequence.
    """

    prompt: str  # the text parts joined: what token estimates and logs read
    image: ImageInput  # the tray being graded
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    response_schema: dict[str, Any] | None = None
    parts: tuple[Part, ...] = ()

    def content(self) -> tuple[Part, ...]:
        """The prompt in the order the model receives it."""
        return self.parts or (self.image, TextPart(self.prompt))

    @property
    def images(self) -> tuple[ImageInput, ...]:
        return tuple(part for part in self.content() if isinstance(part, ImageInput))


class ErrorKind(StrEnum):
    """Why a call produced no usable text. Transient kinds may be retried; the others are answers."""

    RATE_LIMITED = "rate_limited"  # 429 with a per-minute limit: retry after the server's delay
    QUOTA_EXHAUSTED = "quota_exhausted"  # 429 for a per-day quota: stop, resume tomorrow
    SERVER_ERROR = "server_error"  # 5xx
    TIMEOUT = "timeout"
    CONNECTION = "connection"  # reset, refused, DNS
    BAD_REQUEST = "bad_request"  # 400/404: our request is wrong; retrying will not help
    AUTH = "auth"  # 401/403
    BLOCKED = "blocked"  # safety or prompt block: an answer, not a fault
    EMPTY = "empty"  # no candidates / no text
    TRUNCATED = "truncated"  # stopped at max tokens
    MALFORMED = "malformed"  # the API's own response could not be read
    # a batch job returned no answer for this request (failed, expired, cancelled, missing from the
    # results): never cached, never retried online; the next batch run resubmits it
    BATCH_FAILED = "batch_failed"

    @property
    def transient(self) -> bool:
        return self in {
            ErrorKind.RATE_LIMITED,
            ErrorKind.SERVER_ERROR,
            ErrorKind.TIMEOUT,
            ErrorKind.CONNECTION,
        }


def status_kind(status: int) -> ErrorKind:
    """An HTTP error status other than 429 (whose meaning each API words in its body) as an ErrorKind."""
    if status == 408:
        return ErrorKind.TIMEOUT
    if status in (401, 403):
        return ErrorKind.AUTH
    if status >= 500:
        return ErrorKind.SERVER_ERROR
    return ErrorKind.BAD_REQUEST


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    kind: ErrorKind
    message: str
    status_code: int | None = None
    retry_after_s: float | None = None  # the server's RetryInfo delay, which the SDK ignores

    @property
    def transient(self) -> bool:
        return self.kind.transient


@dataclass(frozen=True, slots=True)
class Completion:
    """What one call produced: text, or an error; always its cost and timing."""

    text: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: float = 0.0
    finish_reason: str | None = None
    error: ErrorInfo | None = None
    model_version: str | None = None


class Measures(TypedDict):
    """What a response's mapper measures before it knows which ``Completion`` the answer is: typed, so
    that spreading it into ``Completion(..., **measures)`` is checked field by field."""

    input_tokens: int
    output_tokens: int
    latency_ms: float
    model_version: NotRequired[str | None]


@runtime_checkable
class Provider(Protocol):
    """A model behind one async call. ``name`` is the provider (``gemini``), ``model`` its model id.

    ``aclose`` releases what the provider bound to the running event loop (an SDK's HTTP session):
    whoever owns the loop (a sweep, the optimizer, the Lambda's container) calls it before the loop
    ends, on every provider, so a provider with nothing to release still says so.
    """

    name: str
    model: str
    # the endpoint it calls when not the provider's public API (a gateway, a self-hosted server): part
    # of the answer cache's key, since the same model name behind another endpoint is another model
    base_url: str | None

    async def complete(self, request: CompletionRequest) -> Completion: ...

    async def aclose(self) -> None: ...


MAX_ERROR_MESSAGE = 200  # an error message is a line in a table and a log: long bodies are cut


def failed(error: ErrorInfo, started: float, secret: str | None = None) -> Completion:
    """A call that produced no answer, timed from ``started`` (``time.perf_counter()``)."""
    completion = Completion(text=None, latency_ms=(time.perf_counter() - started) * 1000, error=error)
    return redacted(completion, secret)


def redacted(completion: Completion, secret: str | None) -> Completion:
    """Keep a key out of every message, whatever echoed it, and bound the message's length.

    Redact before shortening: a key cut in half by the length limit would otherwise slip through.
    """
    error = completion.error
    if error is None:
        return completion
    message = error.message.replace(secret, "***") if secret else error.message
    if len(message) > MAX_ERROR_MESSAGE:
        message = message[: MAX_ERROR_MESSAGE - 1] + "…"
    return dataclasses.replace(completion, error=dataclasses.replace(error, message=message))
