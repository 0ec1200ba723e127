"""The Lambda entry point, ``lambda_handler.app.handler``: events in, graded JSON out.

Three kinds of event are answered (see README.md for the full contract):

* API Gateway HTTP API (payload 2.0, also Lambda function URLs) and REST API (1.0 proxy): one image
  as JSON ``{"image_base64" | "s3_uri" | "url": ...}`` or as a binary body; a proxy response back.
* S3 ``ObjectCreated:*`` notifications: each new object is graded and its JSON result written to
  ``PROMPTGRADE_OUTPUT_BUCKET`` under ``PROMPTGRADE_OUTPUT_PREFIX``.
* Direct invocation ``{"images": [...]}``: one result or error object per image, in order.

Grading is ``promptgrade.images.prepare_image`` then ``promptgrade.grading.grade_image`` with the
bundle's rendered prompt, task and settings — the code the evaluator measured, not a copy of it.
Everything that does not change between invocations (bundle, rendered prompt, API key, model
client, event loop) is built once per container on first use and reused while the container is warm.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import contextvars
import functools
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import unquote_plus

from pydantic import SecretStr

from lambda_handler import fetch, secrets
from promptgrade.bundle import Bundle, load_bundle
from promptgrade.errors import PromptgradeError
from promptgrade.grading import GradingResult, grade_image
from promptgrade.images import ImageError, prepare_image, sniff_mime
from promptgrade.providers.base import ErrorKind, ImageInput
from promptgrade.providers.gemini import GeminiCredentials, GeminiProvider

DEFAULT_BUNDLE_DIR = Path(__file__).resolve().parent / "bundle"
DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024
# Below API Gateway's 29-30 s integration limit, so a slow model reaches the caller as our 504 with
# a JSON body rather than as the gateway's own bare timeout.
DEFAULT_MODEL_TIMEOUT_S = 25.0
DEFAULT_OUTPUT_PREFIX = "results/"
MAX_BATCH_IMAGES = 100
BATCH_CONCURRENCY = 4
_SOURCES = ("image_base64", "s3_uri", "url")
_RESULT_KEYS = frozenset({"id", "categories", "prompt", "model", "timing_ms", "usage", "error"})
_MODEL_ERRORS: dict[ErrorKind, tuple[int, str]] = {
    ErrorKind.RATE_LIMITED: (503, "model_rate_limited"),
    ErrorKind.QUOTA_EXHAUSTED: (503, "model_quota_exhausted"),
    ErrorKind.TIMEOUT: (504, "model_timeout"),
    ErrorKind.BLOCKED: (502, "model_blocked"),
    ErrorKind.MALFORMED: (502, "model_malformed_response"),
    ErrorKind.TRUNCATED: (502, "model_truncated"),
    ErrorKind.EMPTY: (502, "model_empty_answer"),
    ErrorKind.AUTH: (502, "model_auth_failed"),
    # SERVER_ERROR, CONNECTION and BAD_REQUEST: "model_error"
}

EventKind = Literal["http", "s3", "batch"]
T = TypeVar("T")


# -- errors ------------------------------------------------------------------------------------------
class HandlerError(Exception):
    """Why a request got no grade, as the HTTP status and error code a client can act on."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retry_after_s: float | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        self.retryable = retryable


class InvocationError(Exception):
    """Fails an S3-triggered invocation on purpose, so Lambda retries it and then sends it on-failure."""


# The three typed errors a request can end in; each carries ``status``, ``code`` and ``message``.
_REQUEST_ERRORS = (HandlerError, fetch.FetchError, secrets.SecretError)


# -- logging -----------------------------------------------------------------------------------------
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_log = logging.getLogger("lambda_handler")


class _JsonLines(logging.Handler):
    """One JSON object per line on stdout, which CloudWatch Logs Insights queries field by field.

    Fields come from ``extra={"fields": {...}}``; callers pass identifiers, hashes, codes and timings
    only — never the API key, image bytes or whole events.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry: dict[str, Any] = {
                "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                "level": record.levelname,
                "message": record.getMessage(),
                "request_id": _request_id.get(),
            }
            entry.update(getattr(record, "fields", None) or {})
            if record.exc_info:
                entry["exception"] = logging.Formatter().formatException(record.exc_info)
            sys.stdout.write(json.dumps(entry, default=str) + "\n")
            sys.stdout.flush()
        except Exception:
            self.handleError(record)


def _setup_logging() -> None:
    if not any(isinstance(h, _JsonLines) for h in _log.handlers):
        _log.addHandler(_JsonLines())
    _log.propagate = False  # the runtime's root handler would print every line a second time
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL", "INFO").upper()
    _log.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")


def _info(message: str, **fields: Any) -> None:
    _log.info(message, extra={"fields": fields})


_setup_logging()


# -- configuration -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Config:
    """The function's settings, all from environment variables (README.md lists them)."""

    bundle_dir: Path
    gemini_base_url: str | None
    model_timeout_s: float
    fetch_timeout_s: float
    max_image_bytes: int
    output_bucket: str | None
    output_prefix: str

    @classmethod
    def from_env(cls) -> Config:
        env = os.environ
        return cls(
            bundle_dir=Path(env.get("PROMPTGRADE_BUNDLE_DIR") or DEFAULT_BUNDLE_DIR),
            gemini_base_url=env.get("PROMPTGRADE_GEMINI_BASE_URL") or None,
            model_timeout_s=_positive_env("PROMPTGRADE_MODEL_TIMEOUT_S", float, DEFAULT_MODEL_TIMEOUT_S),
            fetch_timeout_s=_positive_env("PROMPTGRADE_FETCH_TIMEOUT_S", float, fetch.DEFAULT_TIMEOUT_S),
            max_image_bytes=_positive_env("PROMPTGRADE_MAX_IMAGE_BYTES", int, DEFAULT_MAX_IMAGE_BYTES),
            output_bucket=env.get("PROMPTGRADE_OUTPUT_BUCKET") or None,
            output_prefix=env.get("PROMPTGRADE_OUTPUT_PREFIX", DEFAULT_OUTPUT_PREFIX),
        )


def _positive_env(name: str, kind: Callable[[str], T], default: T) -> T:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise HandlerError(500, "config_error", f"{name} must be a positive number")
    return value


# -- the container's state ---------------------------------------------------------------------------
@dataclass
class Runtime:
    """Everything built once per container: the bundle, its rendered prompt, the model client."""

    bundle: Bundle
    prompt_text: str
    provider: GeminiProvider
    max_image_bytes: int
    fetch_url: Callable[[str], fetch.Fetched]
    stale: bool = False  # the model refused the key: rebuild (and re-read the key) next time
    _s3: Any = None

    @classmethod
    def load(cls, config: Config) -> Runtime:
        started = time.perf_counter()
        try:
            bundle = load_bundle(config.bundle_dir)
            prompt_text = bundle.rendered_prompt()
        except PromptgradeError as exc:
            raise HandlerError(500, "config_error", f"the grading bundle cannot be used: {exc}") from None
        manifest = bundle.manifest
        if manifest.provider != "gemini":
            raise HandlerError(
                500, "config_error", f"the bundle's provider {manifest.provider!r} is not gemini"
            )
        if bundle.task.grade.name in _RESULT_KEYS:
            raise HandlerError(
                500,
                "config_error",
                f"the task's grade name {bundle.task.grade.name!r} clashes with a result key",
            )
        credentials = GeminiCredentials(api_key=SecretStr(secrets.api_key()), use_vertexai=False)
        try:
            provider = GeminiProvider(
                model=manifest.model,
                base_url=config.gemini_base_url,
                timeout_s=config.model_timeout_s,
                credentials=credentials,
            )
        except PromptgradeError as exc:  # CredentialsError: e.g. a blank key
            raise secrets.SecretError(f"the configured API key cannot be used: {exc.message}") from None
        runtime = cls(
            bundle=bundle,
            prompt_text=prompt_text,
            provider=provider,
            max_image_bytes=config.max_image_bytes,
            fetch_url=functools.partial(
                fetch.fetch_url, max_bytes=config.max_image_bytes, timeout_s=config.fetch_timeout_s
            ),
        )
        _info(
            "container ready",
            prompt_name=manifest.prompt.name,
            prompt_version=manifest.prompt.version,
            prompt_sha256=manifest.prompt.sha256,
            model=manifest.model,
            init_ms=_ms_since(started),
        )
        return runtime

    @property
    def s3(self) -> Any:
        """boto3 is imported on first S3 use: an API call with an inline image never pays for it."""
        with _s3_lock:  # batch items load in threads, and boto3's default session is not thread-safe
            if self._s3 is None:
                import boto3

                self._s3 = boto3.client("s3")
        return self._s3

    @property
    def max_side(self) -> int:
        return self.bundle.manifest.image_max_side


_runtime: Runtime | None = None
_s3_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def runtime(config: Config | None = None) -> Runtime:
    """The container's Runtime, built on first use; a failed build is retried on the next call."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime.load(config or Config.from_env())
    return _runtime


def reset() -> None:
    """Forget the container's state (bundle, model client, API key): for tests and after key rotation."""
    global _runtime
    if _runtime is not None:
        with contextlib.suppress(Exception):
            _run(_runtime.provider.aclose())
    _runtime = None
    secrets.forget()


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on one loop for the container's life: the SDK keeps its HTTP session per loop, so a warm
    invocation reuses the open connection instead of a new TLS handshake."""
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    return _loop.run_until_complete(coroutine)


# -- one image ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ImageRequest:
    id: str
    source: str  # "base64", "body", "s3" or "url": for logs
    load: Callable[[Runtime], bytes]


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    body: dict[str, Any]
    retry_after_s: float | None = None
    retryable: bool = False

    @property
    def ok(self) -> bool:
        return self.status == 200


def _failure(item_id: str | None, exc: HandlerError | fetch.FetchError | secrets.SecretError) -> Outcome:
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        error["retry_after_s"] = retry_after
    body = {"error": error} if item_id is None else {"id": item_id, "error": error}
    return Outcome(exc.status, body, retry_after, bool(getattr(exc, "retryable", False)))


def _prepare(data: bytes, item_id: str, runtime: Runtime) -> ImageInput:
    if len(data) > runtime.max_image_bytes:
        raise HandlerError(413, "payload_too_large", _too_large(len(data), runtime.max_image_bytes))
    try:
        return prepare_image(data, max_side=runtime.max_side, source=item_id)
    except ImageError as exc:
        if sniff_mime(data) is None:
            raise HandlerError(415, "unsupported_media_type", exc.message) from None
        raise HandlerError(400, "invalid_image", exc.message) from None


def _result_body(item_id: str, result: GradingResult, runtime: Runtime, started: float) -> dict[str, Any]:
    """The result a client reads, or the HandlerError saying why there is none (never a guessed grade)."""
    completion, prediction = result.completion, result.prediction
    if prediction is None:
        error = completion.error
        if error is None:
            reason = result.failure.message if result.failure else "no answer"
            raise HandlerError(
                502, "unparseable_answer", f"the model's answer is not a valid grade: {reason}"
            )
        status, code = _MODEL_ERRORS.get(error.kind, (502, "model_error"))
        raise HandlerError(
            status,
            code,
            f"the model call failed: {result.error_message or error.kind.value}",
            retry_after_s=error.retry_after_s,
            retryable=error.transient,
        )
    manifest = runtime.bundle.manifest
    return {
        "id": item_id,
        "categories": list(prediction.categories),
        runtime.bundle.task.grade.name: prediction.grade,
        "prompt": {
            "name": manifest.prompt.name,
            "version": manifest.prompt.version,
            "sha256": manifest.prompt.sha256,
        },
        "model": manifest.model,
        "timing_ms": {"total": _ms_since(started), "model": round(completion.latency_ms, 1)},
        "usage": {"input_tokens": completion.input_tokens, "output_tokens": completion.output_tokens},
    }


async def _grade(runtime: Runtime, request: ImageRequest) -> Outcome:
    started = time.perf_counter()
    image: ImageInput | None = None
    result: GradingResult | None = None
    try:

        def load_and_prepare() -> ImageInput:
            return _prepare(request.load(runtime), request.id, runtime)

        image = await asyncio.to_thread(load_and_prepare)
        result = await grade_image(
            runtime.prompt_text, runtime.bundle.task, runtime.bundle.settings, image, runtime.provider
        )
        outcome = Outcome(200, _result_body(request.id, result, runtime, started))
    except _REQUEST_ERRORS as exc:
        outcome = _failure(request.id, exc)
    except Exception:  # one image's surprise must not cost the rest of a batch their results
        _log.exception("unexpected error", extra={"fields": {"id": request.id}})
        error = HandlerError(500, "internal_error", "internal error; the function's logs have the details")
        outcome = _failure(request.id, error)
    code = outcome.body.get("error", {}).get("code")
    if code == "model_auth_failed":
        runtime.stale = True
    completion = result.completion if result is not None else None
    _info(
        "graded" if outcome.ok else "not graded",
        id=request.id,
        source=request.source,
        status=outcome.status,
        error_code=code,
        prompt_sha256=runtime.bundle.manifest.prompt.sha256,
        model=runtime.bundle.manifest.model,
        image_sha256=image.sha256 if image else None,
        total_ms=_ms_since(started),
        model_ms=round(completion.latency_ms, 1) if completion else None,
        input_tokens=completion.input_tokens if completion else None,
        output_tokens=completion.output_tokens if completion else None,
    )
    return outcome


async def _grade_all(runtime: Runtime, entries: list[ImageRequest | Outcome]) -> list[Outcome]:
    """Grade concurrently, a few at a time, keeping the input order; prepared failures pass through."""
    semaphore = asyncio.Semaphore(BATCH_CONCURRENCY)

    async def one(entry: ImageRequest | Outcome) -> Outcome:
        if isinstance(entry, Outcome):
            return entry
        async with semaphore:
            return await _grade(runtime, entry)

    return list(await asyncio.gather(*(one(entry) for entry in entries)))


# -- inputs ------------------------------------------------------------------------------------------
def _image_request(payload: dict[str, Any], default_id: str, config: Config) -> ImageRequest:
    """One ``{"id"?, "image_base64" | "s3_uri" | "url"}`` object, checked before any work is done."""
    item_id = _item_id(payload.get("id"), default_id)
    given = [key for key in _SOURCES if payload.get(key) is not None]
    if len(given) != 1:
        raise HandlerError(400, "invalid_input", "give exactly one of image_base64, s3_uri or url")
    kind = given[0]
    value = payload[kind]
    if not isinstance(value, str) or not value.strip():
        raise HandlerError(400, "invalid_input", f"{kind} must be a non-empty string")
    if kind == "image_base64":
        data = _decode_base64(value, config.max_image_bytes, "image_base64")
        return ImageRequest(item_id, "base64", lambda _: data)
    if kind == "s3_uri":
        bucket, key = fetch.parse_s3_uri(value)
        limit = config.max_image_bytes
        return ImageRequest(
            item_id, "s3", lambda rt: fetch.fetch_s3(rt.s3, bucket, key, max_bytes=limit).data
        )
    return ImageRequest(item_id, "url", lambda rt: rt.fetch_url(value).data)


def _item_id(value: Any, default: str) -> str:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value) or len(str(value)) > 256:
        raise HandlerError(400, "invalid_input", "id must be a string (at most 256 characters) or an integer")
    return str(value)


def _decode_base64(text: str, max_bytes: int | None, what: str) -> bytes:
    """Standard or URL-safe base64, padded or not, optionally as a ``data:`` URL; size-checked first."""
    if text.startswith("data:"):
        header, comma, text = text.partition(",")
        if not comma or not header.endswith(";base64"):
            raise HandlerError(400, "invalid_base64", f"{what} is a data: URL without ;base64")
    compact = "".join(text.split()).replace("-", "+").replace("_", "/")
    if max_bytes is not None and len(compact) // 4 * 3 - 2 > max_bytes:
        raise HandlerError(
            413, "payload_too_large", f"{what}: {_too_large(len(compact) // 4 * 3, max_bytes)}"
        )
    try:
        data = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise HandlerError(400, "invalid_base64", f"{what} is not valid base64") from None
    if not data:
        raise HandlerError(400, "invalid_base64", f"{what} is empty")
    if max_bytes is not None and len(data) > max_bytes:
        raise HandlerError(413, "payload_too_large", f"{what}: {_too_large(len(data), max_bytes)}")
    return data


def _too_large(size: int, limit: int) -> str:
    return f"the image is {size} bytes, over the limit of {limit} bytes"


# -- API Gateway -------------------------------------------------------------------------------------
def _http_request(event: dict[str, Any], request_id: str, config: Config) -> ImageRequest:
    headers = event.get("headers") or {}
    if not isinstance(headers, dict):
        raise HandlerError(400, "invalid_event", "the event's headers are not an object")
    content_type = ""
    for name, value in headers.items():
        if str(name).lower() == "content-type":
            content_type = str(value).split(";", 1)[0].strip().lower()
    body = event.get("body")
    if body is None or body == "":
        raise HandlerError(400, "invalid_request", "the request has no body")
    if not isinstance(body, str):
        raise HandlerError(400, "invalid_event", "the event's body is not a string")
    raw = _decode_base64(body, None, "the body") if event.get("isBase64Encoded") else body.encode("utf-8")
    is_json = content_type == "application/json" or content_type.endswith("+json")
    looks_like_json = is_json or raw.lstrip()[:1] in (b"{", b"[")
    if (
        content_type.startswith("image/")
        or content_type == "application/octet-stream"
        or (not looks_like_json and sniff_mime(raw) is not None)
    ):
        if len(raw) > config.max_image_bytes:
            raise HandlerError(413, "payload_too_large", _too_large(len(raw), config.max_image_bytes))
        return ImageRequest(request_id, "body", lambda _: raw)
    if not looks_like_json:
        raise HandlerError(
            415,
            "unsupported_media_type",
            f"send JSON (application/json) or an image, not {content_type or 'an untyped body'}",
        )
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise HandlerError(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise HandlerError(400, "invalid_json", "the body must be a JSON object")
    return _image_request(payload, request_id, config)


def _handle_http(event: dict[str, Any], context: Any, config: Config) -> dict[str, Any]:
    request_context = event.get("requestContext") or {}
    method = event.get("httpMethod") or (request_context.get("http") or {}).get("method")
    if str(method).upper() != "POST":
        return _http_response(
            _failure(None, HandlerError(405, "method_not_allowed", "use POST")), {"allow": "POST"}
        )
    request_id = str(request_context.get("requestId") or getattr(context, "aws_request_id", "") or "request")
    request = _http_request(event, request_id, config)
    outcome = _run(_grade(runtime(config), request))
    if not outcome.ok:  # over HTTP the error is the whole answer; the id matters in batches and S3
        outcome = replace(outcome, body={"error": outcome.body["error"]})
    return _http_response(outcome)


def _http_response(outcome: Outcome, headers: dict[str, str] | None = None) -> dict[str, Any]:
    all_headers = {"content-type": "application/json", "cache-control": "no-store", **(headers or {})}
    if outcome.retry_after_s is not None:
        all_headers["retry-after"] = str(max(1, math.ceil(outcome.retry_after_s)))
    return {
        "statusCode": outcome.status,
        "headers": all_headers,
        "body": json.dumps(outcome.body, separators=(",", ":")),
        "isBase64Encoded": False,
    }


# -- direct invocation -------------------------------------------------------------------------------
def _handle_batch(event: dict[str, Any], config: Config) -> dict[str, Any]:
    images = event.get("images")
    if not isinstance(images, list):
        return _failure(None, HandlerError(400, "invalid_event", "images must be a list")).body
    if len(images) > MAX_BATCH_IMAGES:
        error = HandlerError(413, "too_many_images", f"at most {MAX_BATCH_IMAGES} images per invocation")
        return _failure(None, error).body
    entries: list[ImageRequest | Outcome] = []
    for index, item in enumerate(images):
        fallback_id = str(index)
        try:
            if not isinstance(item, dict):
                raise HandlerError(400, "invalid_input", "each image must be a JSON object")
            fallback_id = _safe_id(item.get("id"), fallback_id)
            entries.append(_image_request(item, str(index), config))
        except _REQUEST_ERRORS as exc:
            entries.append(_failure(fallback_id, exc))
    if all(isinstance(entry, Outcome) for entry in entries):
        return {"results": [entry.body for entry in entries if isinstance(entry, Outcome)]}
    return {"results": [outcome.body for outcome in _run(_grade_all(runtime(config), entries))]}


def _safe_id(value: Any, default: str) -> str:
    try:
        return _item_id(value, default)
    except HandlerError:
        return default


# -- S3 notifications --------------------------------------------------------------------------------
def _handle_s3(event: dict[str, Any], config: Config) -> dict[str, Any]:
    """Grade each new object and write its result (or error) as JSON next to the others.

    A failure that a retry may cure (rate limit, model timeout, 5xx, a failed write) fails the whole
    invocation after the others are written, so Lambda's asynchronous retries and on-failure
    destination take over; a permanent one (not an image, unparseable answer) is written and counted.
    """
    if not config.output_bucket:
        raise HandlerError(
            500, "config_error", "PROMPTGRADE_OUTPUT_BUCKET is not set: results have nowhere to go"
        )
    current = runtime(config)
    entries: list[ImageRequest | Outcome] = []
    skipped = 0
    limit = config.max_image_bytes
    for record in event["Records"]:
        try:
            name = str(record["eventName"])
            bucket = str(record["s3"]["bucket"]["name"])
            key = unquote_plus(str(record["s3"]["object"]["key"]))
        except (KeyError, TypeError):
            entries.append(
                _failure(None, HandlerError(400, "invalid_event", "an S3 record lacks its bucket or key"))
            )
            continue
        # Our own output must not trigger another round: that loop would run until someone noticed the bill.
        if not name.startswith("ObjectCreated:") or (
            bucket == config.output_bucket and key.startswith(config.output_prefix)
        ):
            skipped += 1
            continue

        def load(rt: Runtime, bucket: str = bucket, key: str = key) -> bytes:
            return fetch.fetch_s3(rt.s3, bucket, key, max_bytes=limit).data

        entries.append(ImageRequest(key, "s3", load))
    outcomes = _run(_grade_all(current, entries))
    summary: dict[str, Any] = {"ok": 0, "failed": 0, "skipped": skipped, "outputs": [], "errors": []}
    retry = False
    for outcome in outcomes:
        item_id = outcome.body.get("id")
        code = outcome.body.get("error", {}).get("code")
        if item_id is not None:  # a record without a key has nowhere to be written
            if _write_result(current, config, item_id, outcome.body):
                summary["outputs"].append(f"{config.output_prefix}{item_id}.json")
            else:
                code, retry = code or "output_write_failed", True
        if code is None:
            summary["ok"] += 1
        else:
            summary["failed"] += 1
            summary["errors"].append({"key": item_id, "code": code})
            retry = retry or outcome.retryable
    _info("s3 batch done", **{k: v for k, v in summary.items() if k != "outputs"})
    if retry:
        codes = ", ".join(sorted({e["code"] for e in summary["errors"]}))
        raise InvocationError(
            f"{summary['failed']} of {len(outcomes)} objects failed, some retryably ({codes}); "
            "failing the invocation so Lambda retries it"
        )
    return summary


def _write_result(runtime: Runtime, config: Config, key: str, body: dict[str, Any]) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        runtime.s3.put_object(
            Bucket=config.output_bucket,
            Key=f"{config.output_prefix}{key}.json",
            Body=json.dumps(body, indent=2).encode("utf-8"),
            ContentType="application/json",
        )
    except (BotoCoreError, ClientError) as exc:
        _log.error("cannot write result", extra={"fields": {"key": key, "error_type": type(exc).__name__}})
        return False
    return True


# -- entry point -------------------------------------------------------------------------------------
def _event_kind(event: Any) -> EventKind | None:
    if not isinstance(event, dict):
        return None
    request_context = event.get("requestContext")
    if isinstance(request_context, dict) and (
        (event.get("version") == "2.0" and isinstance(request_context.get("http"), dict))
        or "httpMethod" in event
    ):
        return "http"
    records = event.get("Records")
    if (
        isinstance(records, list)
        and records
        and all(isinstance(r, dict) and r.get("eventSource") == "aws:s3" for r in records)
    ):
        return "s3"
    if "images" in event:
        return "batch"
    return None


def handler(event: Any, context: Any) -> dict[str, Any]:
    """Answer an API Gateway request, an S3 notification or a direct batch (see the module docstring)."""
    started = time.perf_counter()
    _request_id.set(getattr(context, "aws_request_id", None))
    kind = _event_kind(event)
    try:
        if kind is None:
            message = 'not an API Gateway request, an S3 notification or an {"images": [...]} batch'
            raise HandlerError(400, "invalid_event", message)
        config = Config.from_env()
        if kind == "http":
            response = _handle_http(event, context, config)
        elif kind == "batch":
            response = _handle_batch(event, config)
        else:
            response = _handle_s3(event, config)
    except _REQUEST_ERRORS as exc:
        response = _failed_invocation(kind, exc)
    except InvocationError:
        raise
    except Exception:
        _log.exception("unexpected error", extra={"fields": {"kind": kind}})
        error = HandlerError(500, "internal_error", "internal error; the function's logs have the details")
        response = _failed_invocation(kind, error)
    finally:
        if _runtime is not None and _runtime.stale:
            reset()
    _info(
        "request done", kind=kind or "unknown", status=response.get("statusCode"), total_ms=_ms_since(started)
    )
    return response


def _failed_invocation(
    kind: EventKind | None, exc: HandlerError | fetch.FetchError | secrets.SecretError
) -> dict[str, Any]:
    """Answer a failure that left no per-image result, in the shape the caller of ``kind`` reads."""
    fields = {"kind": kind, "status": exc.status, "error_code": exc.code}
    if exc.status >= 500:
        _log.error("invocation failed", extra={"fields": fields})
    else:
        _info("request refused", **fields)
    if kind == "s3":
        # S3 only sees that the invocation failed; the message (no secrets in it) lands in the logs.
        raise InvocationError(f"{exc.code}: {exc.message}") from None
    if kind == "batch":
        return _failure(None, exc).body
    return _http_response(_failure(None, exc))


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
