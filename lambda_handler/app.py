"""The Lambda entry point, ``lambda_handler.app.handler``: events in, graded JSON out.

Four kinds of event are answered (see README.md for the full contract):

* API Gateway HTTP API (payload 2.0, also Lambda function URLs) and REST API (1.0 proxy): one image
  as JSON ``{"image_base64" | "s3_uri" | "url": ...}`` or as a binary body; a proxy response back.
* S3 ``ObjectCreated:*`` notifications: each new object is graded and its JSON result written to
  ``PROMPTGRADE_OUTPUT_BUCKET`` under ``PROMPTGRADE_OUTPUT_PREFIX``.
* SQS batches (``sqs``): each message an S3 notification or one grading request; every image graded
  at most once per bundle, its result stored under (bundle sha256, image sha256), and
  ``{"batchItemFailures": [...]}`` naming only the messages a retry may cure.
* Direct invocation ``{"images": [...]}``: one result or error object per image, in order.

Grading is ``promptgrade.images.prepare_image`` then ``promptgrade.grading.grade_image`` with the
bundle's rendered prompt (its text, and the reference images it shows before or around the tray, in
order), task and settings — the code the evaluator measured, not a copy of it, so for the same tray
the request is byte for byte the sweep's. A bundle measured with ``samples: k`` asks k times at once
and reduces the answers with ``promptgrade.grading.vote``, as the sweep did. Everything that does not
change between invocations (bundle and its verified reference images, rendered prompt, API key, model
client, event loop) is built once per container on first use and reused while the container is warm.

This module holds the entry point, the container's state, grading and the event handlers; ``sqs``
grades a queue's batch (and ``store`` keeps its results), ``events`` turns events into image requests, ``outcomes`` shapes what callers get back, ``errors``
holds the typed errors and ``logs`` the JSON-lines logging.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from lambda_handler import events, fetch, logs, providers, secrets, sqs
from lambda_handler.errors import REQUEST_ERRORS, HandlerError, InvocationError, RequestError, model_error
from lambda_handler.events import EventKind, ImageRequest, too_large
from lambda_handler.outcomes import Outcome, failure, http_response
from lambda_handler.store import ResultStore
from promptgrade.bundle import Bundle, load_bundle
from promptgrade.errors import PromptgradeError
from promptgrade.grading import GradingResult, Voted, grade_image, vote
from promptgrade.images import ImageError, prepare_image, sniff_mime
from promptgrade.providers.base import ImageInput, Provider
from promptgrade.references import RenderedPrompt
from promptgrade.stored_results import ResultLayout, bundle_sha256

# HandlerError, InvocationError, EventKind, ImageRequest and Outcome stay importable from here too.

DEFAULT_BUNDLE_DIR = Path(__file__).resolve().parent / "bundle"
DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024
# Below API Gateway's 29-30 s integration limit, so a slow model reaches the caller as our 504 with
# a JSON body rather than as the gateway's own bare timeout.
DEFAULT_MODEL_TIMEOUT_S = 25.0
DEFAULT_OUTPUT_PREFIX = "results/"
MAX_BATCH_IMAGES = 100
BATCH_CONCURRENCY = 4
# the images of one SQS batch graded at once (each asks k samples): the mapping's maximum concurrency
# times this is the most calls in flight, which is what the provider's rate limit sees
DEFAULT_SQS_CONCURRENCY = 4
_RESULT_KEYS = frozenset({"id", "categories", "prompt", "model", "timing_ms", "usage", "error"})
# what a stored (SQS) result adds: the bundle that graded it, the image and where it came from
_STORED_KEYS = frozenset({"bundle", "provider", "image_sha256", "source", "graded_at", "key"})
_VOTE_KEYS = frozenset({"agreement", "needs_review"})  # results of a bundle with samples > 1 only

T = TypeVar("T")
# The bundle's provider SDK is imported during the init phase, as the other modules are.
providers.preload(Path(os.environ.get("PROMPTGRADE_BUNDLE_DIR") or DEFAULT_BUNDLE_DIR))


# -- configuration -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Config:
    """The function's settings, all from environment variables (README.md lists them)."""

    bundle_dir: Path
    model_timeout_s: float
    fetch_timeout_s: float
    max_image_bytes: int
    output_bucket: str | None
    output_prefix: str
    input_buckets: frozenset[str] | None = None  # SQS: the buckets whose objects it grades (None: any)
    sqs_concurrency: int = DEFAULT_SQS_CONCURRENCY

    @classmethod
    def from_env(cls) -> Config:
        env = os.environ
        buckets = env.get("PROMPTGRADE_INPUT_BUCKETS", "")
        return cls(
            bundle_dir=Path(env.get("PROMPTGRADE_BUNDLE_DIR") or DEFAULT_BUNDLE_DIR),
            model_timeout_s=_positive_env("PROMPTGRADE_MODEL_TIMEOUT_S", float, DEFAULT_MODEL_TIMEOUT_S),
            fetch_timeout_s=_positive_env("PROMPTGRADE_FETCH_TIMEOUT_S", float, fetch.DEFAULT_TIMEOUT_S),
            max_image_bytes=_positive_env("PROMPTGRADE_MAX_IMAGE_BYTES", int, DEFAULT_MAX_IMAGE_BYTES),
            output_bucket=env.get("PROMPTGRADE_OUTPUT_BUCKET") or None,
            output_prefix=env.get("PROMPTGRADE_OUTPUT_PREFIX", DEFAULT_OUTPUT_PREFIX),
            input_buckets=frozenset(b.strip() for b in buckets.split(",") if b.strip()) or None,
            sqs_concurrency=_positive_env("PROMPTGRADE_SQS_CONCURRENCY", int, DEFAULT_SQS_CONCURRENCY),
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
    prompt: RenderedPrompt
    provider: Provider
    max_image_bytes: int
    fetch_url: Callable[[str], fetch.Fetched]
    stale: bool = False  # the model refused the key: rebuild (and re-read the key) next time
    _s3: Any = None

    @classmethod
    def load(cls, config: Config) -> Runtime:
        started = time.perf_counter()
        try:  # a template or reference image that drifted since promotion is refused here
            bundle = load_bundle(config.bundle_dir)
            prompt = bundle.render()
        except PromptgradeError as exc:
            raise HandlerError(500, "config_error", f"the grading bundle cannot be used: {exc}") from None
        manifest = bundle.manifest
        if bundle.task.grade.name in _RESULT_KEYS | _STORED_KEYS | (
            _VOTE_KEYS if manifest.samples > 1 else frozenset()
        ):
            raise HandlerError(
                500,
                "config_error",
                f"the task's grade name {bundle.task.grade.name!r} clashes with a result key",
            )
        provider = providers.build(manifest, config.model_timeout_s)
        runtime = cls(
            bundle=bundle,
            prompt=prompt,
            provider=provider,
            max_image_bytes=config.max_image_bytes,
            fetch_url=functools.partial(
                fetch.fetch_url, max_bytes=config.max_image_bytes, timeout_s=config.fetch_timeout_s
            ),
        )
        logs.info(
            "container ready",
            prompt_name=manifest.prompt.name,
            prompt_version=manifest.prompt.version,
            prompt_sha256=manifest.prompt.sha256,
            references=len(prompt.references),
            model=manifest.model,
            samples=manifest.samples,
            init_ms=_ms_since(started),
        )
        return runtime

    @property
    def prompt_text(self) -> str:
        """The prompt's words (its text parts, joined), as the logs and benchmarks show them."""
        return self.prompt.text

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

    @functools.cached_property
    def bundle_sha256(self) -> str:
        return bundle_sha256(self.bundle.manifest)

    @property
    def stamp(self) -> dict[str, Any]:
        """What a stored result says of the bundle that graded it, beside the prompt and model."""
        manifest = self.bundle.manifest
        return {
            "bundle": {
                "sha256": self.bundle_sha256,
                "format_version": manifest.format_version,
                "promoted_at": manifest.provenance.promoted_at,
                "run_id": manifest.provenance.run_id,
            },
            "provider": manifest.provider,
        }


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
def _prepare(data: bytes, item_id: str, runtime: Runtime) -> ImageInput:
    if len(data) > runtime.max_image_bytes:
        raise HandlerError(413, "payload_too_large", too_large(len(data), runtime.max_image_bytes))
    try:
        return prepare_image(data, max_side=runtime.max_side, source=item_id)
    except ImageError as exc:
        if sniff_mime(data) is None:
            raise HandlerError(415, "unsupported_media_type", exc.message) from None
        raise HandlerError(400, "invalid_image", exc.message) from None


async def _ask(runtime: Runtime, image: ImageInput) -> Voted:
    """The bundle's k samples of the tray, asked at once (the tray waits for the slowest, not for the
    sum), then the sweep's vote. Each sample is one call with the model timeout, as a single grade is:
    the function never retries a model call itself. One sample votes alone, so k = 1 is one call."""
    bundle = runtime.bundle
    calls = [
        asyncio.ensure_future(
            grade_image(runtime.prompt, bundle.task, bundle.settings, image, runtime.provider)
        )
        for _ in range(bundle.manifest.samples)
    ]
    try:
        return vote(await asyncio.gather(*calls))
    except BaseException:  # a surprise in one call: the others are not left running on the warm loop
        for call in calls:
            call.cancel()
        raise


def _no_grade(samples: tuple[GradingResult, ...]) -> HandlerError:
    """Why a tray none of whose samples answered has no grade: as one failed call is answered. Of
    several samples, the first failure a retry may cure is told (an S3 event is then retried, and may
    be answered); else the first sample's."""
    failed = next((r for r in samples if r.completion.error and r.completion.error.transient), samples[0])
    error = failed.completion.error
    if error is None:
        reason = failed.failure.message if failed.failure else "no answer"
        return HandlerError(502, "unparseable_answer", f"the model's answer is not a valid grade: {reason}")
    status, code = model_error(error.kind)
    return HandlerError(
        status,
        code,
        f"the model call failed: {failed.error_message or error.kind.value}",
        retry_after_s=error.retry_after_s,
        retryable=error.transient,
    )


def _result_body(item_id: str, voted: Voted, runtime: Runtime, started: float) -> dict[str, Any]:
    """The result a client reads, or the HandlerError saying why there is none (never a guessed grade).

    Tokens are the samples' sum and the model time the slowest sample's (``vote`` merges them). A
    bundle with samples adds how far they agreed and whether a person should look; with one sample
    the result is as it always was (its agreement would be 1 by construction, telling nothing).
    """
    completion, prediction = voted.result.completion, voted.result.prediction
    if prediction is None:
        raise _no_grade(voted.samples)
    manifest = runtime.bundle.manifest
    body: dict[str, Any] = {
        "id": item_id,
        "categories": list(prediction.categories),
        runtime.bundle.task.grade.name: prediction.grade,
    }
    if manifest.samples > 1:
        body["agreement"] = voted.agreement
        body["needs_review"] = voted.abstained(manifest.abstain_below)
    return body | {
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
    voted: Voted | None = None
    try:

        def load_and_prepare() -> ImageInput:
            return _prepare(request.load(runtime), request.id, runtime)

        image = await asyncio.to_thread(load_and_prepare)
        voted = await _ask(runtime, image)
        outcome = Outcome(200, _result_body(request.id, voted, runtime, started))
    except REQUEST_ERRORS as exc:
        outcome = failure(request.id, exc)
    except Exception:  # one image's surprise must not cost the rest of a batch their results
        logs.log.exception("unexpected error", extra={"fields": {"id": request.id}})
        error = HandlerError(500, "internal_error", "internal error; the function's logs have the details")
        outcome = failure(request.id, error)
    code = outcome.body.get("error", {}).get("code")
    if code == "model_auth_failed":
        runtime.stale = True
    completion = voted.result.completion if voted is not None else None
    logs.info(
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
        **(_vote_fields(voted, runtime) if voted is not None and len(voted.samples) > 1 else {}),
    )
    return outcome


def _vote_fields(voted: Voted, runtime: Runtime) -> dict[str, Any]:
    """How the samples voted, for the logs: ``answered`` tells an agreement of 1 among three samples
    from one of 1 where two samples failed (the vote counts only those that answered)."""
    return {
        "samples": len(voted.samples),
        "answered": sum(r.prediction is not None for r in voted.samples),
        "agreement": voted.agreement,
        "needs_review": voted.abstained(runtime.bundle.manifest.abstain_below),
    }


async def _grade_all(runtime: Runtime, entries: list[ImageRequest | Outcome]) -> list[Outcome]:
    """Grade concurrently, a few at a time, keeping the input order; prepared failures pass through."""
    semaphore = asyncio.Semaphore(BATCH_CONCURRENCY)

    async def one(entry: ImageRequest | Outcome) -> Outcome:
        if isinstance(entry, Outcome):
            return entry
        async with semaphore:
            return await _grade(runtime, entry)

    return list(await asyncio.gather(*(one(entry) for entry in entries)))


# -- API Gateway -------------------------------------------------------------------------------------
def _handle_http(event: dict[str, Any], context: Any, config: Config) -> dict[str, Any]:
    request_context = event.get("requestContext") or {}
    method = event.get("httpMethod") or (request_context.get("http") or {}).get("method")
    if str(method).upper() != "POST":
        return http_response(
            failure(None, HandlerError(405, "method_not_allowed", "use POST")), {"allow": "POST"}
        )
    request_id = str(request_context.get("requestId") or getattr(context, "aws_request_id", "") or "request")
    request = events.http_request(event, request_id, config.max_image_bytes)
    outcome = _run(_grade(runtime(config), request))
    if not outcome.ok:  # over HTTP the error is the whole answer; the id matters in batches and S3
        outcome = replace(outcome, body={"error": outcome.body["error"]})
    return http_response(outcome)


# -- direct invocation -------------------------------------------------------------------------------
def _handle_batch(event: dict[str, Any], config: Config) -> dict[str, Any]:
    images = event.get("images")
    if not isinstance(images, list):
        return failure(None, HandlerError(400, "invalid_event", "images must be a list")).body
    if len(images) > MAX_BATCH_IMAGES:
        error = HandlerError(413, "too_many_images", f"at most {MAX_BATCH_IMAGES} images per invocation")
        return failure(None, error).body
    entries = events.batch_requests(images, config.max_image_bytes)
    if all(isinstance(entry, Outcome) for entry in entries):
        return {"results": [entry.body for entry in entries if isinstance(entry, Outcome)]}
    return {"results": [outcome.body for outcome in _run(_grade_all(runtime(config), entries))]}


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
    entries, skipped = events.s3_requests(
        event["Records"], config.output_bucket, config.output_prefix, config.max_image_bytes
    )
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
    logs.info("s3 batch done", **{k: v for k, v in summary.items() if k != "outputs"})
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
        logs.log.error(
            "cannot write result", extra={"fields": {"key": key, "error_type": type(exc).__name__}}
        )
        return False
    return True


# -- SQS -----------------------------------------------------------------------------------------------
def _handle_sqs(event: dict[str, Any], config: Config) -> dict[str, Any]:
    """Grade a queue's batch (``sqs``), each result stored once under the output prefix."""
    if not config.output_bucket:
        raise HandlerError(
            500, "config_error", "PROMPTGRADE_OUTPUT_BUCKET is not set: results have nowhere to go"
        )
    current = runtime(config)
    context = sqs.Context(
        sources=current,
        grade=functools.partial(_grade, current),
        store=ResultStore(current.s3, config.output_bucket),
        layout=ResultLayout(config.output_prefix, current.bundle_sha256),
        stamp=current.stamp,
        max_image_bytes=config.max_image_bytes,
        output_bucket=config.output_bucket,
        output_prefix=config.output_prefix,
        allowed_buckets=config.input_buckets,
        concurrency=config.sqs_concurrency,
    )
    return _run(sqs.handle(event["Records"], context))


# -- entry point -------------------------------------------------------------------------------------
def handler(event: Any, context: Any) -> dict[str, Any]:
    """Answer an API Gateway request, an S3 notification, an SQS batch or a direct batch (see the module
    docstring)."""
    started = time.perf_counter()
    logs.request_id.set(getattr(context, "aws_request_id", None))
    kind = events.event_kind(event)
    try:
        if kind is None:
            message = 'not an API Gateway request, an S3 or SQS event, or an {"images": [...]} batch'
            raise HandlerError(400, "invalid_event", message)
        config = Config.from_env()
        if kind == "http":
            response = _handle_http(event, context, config)
        elif kind == "batch":
            response = _handle_batch(event, config)
        elif kind == "sqs":
            response = _handle_sqs(event, config)
        else:
            response = _handle_s3(event, config)
    except REQUEST_ERRORS as exc:
        response = _failed_invocation(kind, exc)
    except InvocationError:
        raise
    except Exception:
        logs.log.exception("unexpected error", extra={"fields": {"kind": kind}})
        error = HandlerError(500, "internal_error", "internal error; the function's logs have the details")
        response = _failed_invocation(kind, error)
    finally:
        if _runtime is not None and _runtime.stale:
            reset()
    logs.info(
        "request done", kind=kind or "unknown", status=response.get("statusCode"), total_ms=_ms_since(started)
    )
    return response


def _failed_invocation(kind: EventKind | None, exc: RequestError) -> dict[str, Any]:
    """Answer a failure that left no per-image result, in the shape the caller of ``kind`` reads."""
    fields = {"kind": kind, "status": exc.status, "error_code": exc.code}
    if exc.status >= 500:
        logs.log.error("invocation failed", extra={"fields": fields})
    else:
        logs.info("request refused", **fields)
    if kind in ("s3", "sqs"):
        # S3 only sees that the invocation failed (SQS then delivers the whole batch again); the
        # message (no secrets in it) lands in the logs.
        raise InvocationError(f"{exc.code}: {exc.message}") from None
    if kind == "batch":
        return failure(None, exc).body
    return http_response(failure(None, exc))


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
