"""SQS batches: each message an S3 event notification or a grading request, each result stored once.

The Lambda service hands the function up to a batch of messages and, with ``ReportBatchItemFailures``
on the event source mapping, deletes every message the answer does not list in
``batchItemFailures``. So a message is listed only when a retry may cure it (the model's rate limit,
quota or 5xx, a timeout, S3 failing us); a failure that would fail again the same way (not an image,
a deleted object, a refused URL, a message of neither kind, a bucket the function may not read, an
answer that is no grade) is written as an error object and the message is done — never a retry loop
that ends in the dead-letter queue with nothing learned.

Every image is graded at most once per bundle: its result is looked up (``lambda_handler.store``)
before the model is asked, and the same image twice in one batch waits for the first grading rather
than paying again. Records are graded concurrently, a few at a time (``PROMPTGRADE_SQS_CONCURRENCY``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from lambda_handler import events, fetch, logs
from lambda_handler.errors import REQUEST_ERRORS, HandlerError, RequestError
from lambda_handler.events import ImageRequest
from lambda_handler.outcomes import Outcome, failure
from lambda_handler.store import ResultStore
from promptgrade.stored_results import ResultLayout

# Failures of the environment, not of the message: a later delivery may succeed. (A model error that
# a retry may cure is ``retryable`` already: rate limit, 5xx, timeout, connection.)
TRANSIENT_CODES = frozenset(
    {
        "model_quota_exhausted",  # tomorrow's quota grades it; the DLQ keeps it if that never comes
        "model_auth_failed",  # a key being rotated
        "missing_secret",
        "config_error",
        "internal_error",  # a bug: the DLQ, after maxReceiveCount, is where someone will look
        "s3_error",
        "s3_object_changed",
        "fetch_timeout",
        "result_store_failed",
    }
)
NOT_A_MESSAGE = "the message is neither an S3 event notification nor a grading request"


@dataclass(frozen=True, slots=True)
class Work:
    """One image a message asks for, or the reason it asks for none that can be graded."""

    message_id: str
    index: int
    id: str
    s3: tuple[str, str] | None = None  # (bucket, key) when the image is an S3 object
    request: ImageRequest | None = None
    refused: RequestError | None = None

    @property
    def source(self) -> str:
        if self.s3 is not None:
            return f"s3://{self.s3[0]}/{self.s3[1]}"
        return self.request.source if self.request is not None else "message"


@dataclass(frozen=True, slots=True)
class Message:
    message_id: str
    receive_count: int
    works: list[Work]


@dataclass(frozen=True)
class Context:
    """What grading a batch needs from the container, named so this module stays below ``app``."""

    sources: events.Sources
    grade: Callable[[ImageRequest], Awaitable[Outcome]]  # the one grading path: prepare, ask, vote
    store: ResultStore
    layout: ResultLayout
    stamp: dict[str, Any]  # what every stored result says about the bundle that graded it
    max_image_bytes: int
    output_bucket: str
    output_prefix: str
    allowed_buckets: frozenset[str] | None  # None: any the function's role may read
    concurrency: int
    inflight: dict[str, asyncio.Task[Outcome]] = field(default_factory=dict)


def is_transient(outcome: Outcome) -> bool:
    if outcome.ok:
        return False
    return outcome.retryable or outcome.body.get("error", {}).get("code") in TRANSIENT_CODES


# -- messages -> work ----------------------------------------------------------------------------------
def messages(records: list[Any], context: Context) -> list[Message]:
    found = []
    for record in records:
        message_id = str(record["messageId"])  # event_kind made sure every record has one
        attributes = record.get("attributes") or {}
        try:
            receive_count = int(attributes.get("ApproximateReceiveCount") or 1)
        except (TypeError, ValueError):
            receive_count = 1
        found.append(Message(message_id, receive_count, _works(message_id, record.get("body"), context)))
    return found


def _works(message_id: str, body: Any, context: Context) -> list[Work]:
    try:
        payload = json.loads(body) if isinstance(body, str) else None
    except ValueError:
        payload = None
    if isinstance(payload, dict) and payload.get("Type") == "Notification":  # S3 → SNS → SQS
        try:
            payload = json.loads(payload.get("Message") or "")
        except (TypeError, ValueError):
            payload = None
    if not isinstance(payload, dict):
        return [_refused(message_id, HandlerError(400, "invalid_message", f"{NOT_A_MESSAGE} (not JSON)"))]
    if payload.get("Event") == "s3:TestEvent":  # S3 checking that it may send here: nothing to grade
        return []
    records = payload.get("Records")
    if isinstance(records, list):
        return _s3_works(message_id, records, context)
    if any(payload.get(name) is not None for name in events.SOURCES):
        try:
            request = events.image_request(payload, message_id, context.max_image_bytes)
            s3 = fetch.parse_s3_uri(payload["s3_uri"]) if request.source == "s3" else None
        except REQUEST_ERRORS as exc:
            return [_refused(message_id, exc, events.safe_id(payload.get("id"), message_id))]
        return [Work(message_id, 0, request.id, s3=s3, request=request)]
    return [_refused(message_id, HandlerError(400, "invalid_message", NOT_A_MESSAGE))]


def _s3_works(message_id: str, records: list[Any], context: Context) -> list[Work]:
    """Each new object of an S3 notification; our own output and other events are not work."""
    if not all(isinstance(r, dict) and r.get("eventSource") == "aws:s3" for r in records):
        return [_refused(message_id, HandlerError(400, "invalid_message", NOT_A_MESSAGE))]
    works = []
    for index, record in enumerate(records):
        entries, _skipped = events.s3_requests(
            [record], context.output_bucket, context.output_prefix, context.max_image_bytes
        )
        for entry in entries:
            if isinstance(entry, Outcome):  # a record without bucket or key
                error = HandlerError(400, "invalid_message", "an S3 record lacks its bucket or key")
                works.append(_refused(message_id, error, index=index))
            else:
                bucket = str(record["s3"]["bucket"]["name"])
                works.append(Work(message_id, index, entry.id, s3=(bucket, entry.id), request=entry))
    return works


def _refused(message_id: str, exc: RequestError, item_id: str | None = None, index: int = 0) -> Work:
    return Work(message_id, index, item_id or message_id, refused=exc)


# -- grading -------------------------------------------------------------------------------------------
async def handle(records: list[Any], context: Context) -> dict[str, Any]:
    """Grade every message's images; the answer lists the messages SQS should deliver again."""
    started = time.perf_counter()
    batch = messages(records, context)
    semaphore = asyncio.Semaphore(context.concurrency)

    async def one(work: Work) -> Outcome:
        async with semaphore:
            return await _process(work, context)

    outcomes = await asyncio.gather(*(one(w) for m in batch for w in m.works))
    by_message: dict[str, list[Outcome]] = {}
    for work, outcome in zip((w for m in batch for w in m.works), outcomes, strict=True):
        by_message.setdefault(work.message_id, []).append(outcome)
    retry = [m.message_id for m in batch if any(is_transient(o) for o in by_message.get(m.message_id, []))]
    logs.info(
        "sqs batch done",
        messages=len(batch),
        redelivered=sum(m.receive_count > 1 for m in batch),
        images=len(outcomes),
        graded=sum(o.ok for o in outcomes),
        failed=sum(not o.ok and not is_transient(o) for o in outcomes),
        retried=len(retry),
        total_ms=round((time.perf_counter() - started) * 1000, 1),
    )
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in retry]}


@dataclass
class _Record:
    """Where a permanent failure of one work item is written (None: it already is)."""

    key: str | None


async def _process(work: Work, context: Context) -> Outcome:
    """One image: its stored answer if there is one, else graded and stored; a permanent failure is
    stored where the next delivery (or a backfill) finds it, so it is never tried again."""
    record = _Record(context.layout.error(work.message_id, work.index))
    try:
        outcome = await _attempt(work, context, record)
    except REQUEST_ERRORS as exc:
        outcome = failure(work.id, exc)
    except Exception:  # one image's surprise must not send the whole batch back: only its message
        logs.log.exception(
            "unexpected error", extra={"fields": {"id": work.id, "message_id": work.message_id}}
        )
        error = HandlerError(500, "internal_error", "internal error; the function's logs have the details")
        outcome = failure(work.id, error)
    if record.key is not None and not outcome.ok and not is_transient(outcome):
        await _record_failure(outcome, work, record.key, context)
    return outcome


async def _attempt(work: Work, context: Context, record: _Record) -> Outcome:
    if work.refused is not None:
        raise work.refused
    if work.s3 is None:
        assert work.request is not None
        data = await asyncio.to_thread(work.request.load, context.sources)
        return await _graded(data, work, context)
    head = await asyncio.to_thread(_head, work.s3, context)
    marker = record.key = context.layout.source(head.bucket, head.key, head.etag)
    seen = await asyncio.to_thread(context.store.get, marker)
    if seen is not None:
        record.key = None
        return _from_marker(work, seen)
    fetch.check_size(head, context.max_image_bytes)
    fetched = await asyncio.to_thread(
        fetch.get_s3, context.sources.s3, head, max_bytes=context.max_image_bytes
    )
    outcome = await _graded(fetched.data, work, context)
    if outcome.ok:
        pointer = {"source": work.source, "etag": head.etag, "result": outcome.body.get("key")}
        await asyncio.to_thread(context.store.put, marker, pointer)
    return outcome


def _head(s3: tuple[str, str], context: Context) -> fetch.Head:
    bucket, key = s3
    if context.allowed_buckets is not None and bucket not in context.allowed_buckets:
        raise HandlerError(400, "s3_bucket_not_allowed", f"this function does not grade objects of {bucket}")
    return fetch.head_s3(context.sources.s3, bucket, key)


async def _graded(data: bytes, work: Work, context: Context) -> Outcome:
    """The image's result, paid for at most once: the same image in flight in this batch is awaited."""
    image_sha256 = hashlib.sha256(data).hexdigest()
    task = context.inflight.get(image_sha256)
    if task is None:
        task = asyncio.ensure_future(_grade_new(data, image_sha256, work, context))
        context.inflight[image_sha256] = task
    outcome = await asyncio.shield(task)
    if outcome.ok or outcome.body.get("id") == work.id:
        return outcome
    return Outcome(outcome.status, outcome.body | {"id": work.id}, outcome.retry_after_s, outcome.retryable)


async def _grade_new(data: bytes, image_sha256: str, work: Work, context: Context) -> Outcome:
    key = context.layout.image(image_sha256)
    earlier = await asyncio.to_thread(context.store.get, key)
    if earlier is not None:
        logs.info("already graded", id=work.id, image_sha256=image_sha256, model_calls=0)
        return Outcome(200, earlier | {"key": key})
    outcome = await context.grade(ImageRequest(work.id, work.source, lambda _: data))
    if not outcome.ok:
        return outcome
    record = (
        outcome.body
        | context.stamp
        | {
            "image_sha256": image_sha256,
            "source": work.source,
            "graded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    stored, ours = await asyncio.to_thread(context.store.put_new, key, record)
    agreement = stored.get("agreement")
    if ours and isinstance(agreement, int | float) and agreement < 1:
        flag = {
            "image_sha256": image_sha256,
            "agreement": agreement,
            "needs_review": stored.get("needs_review"),
        }
        await asyncio.to_thread(context.store.put, context.layout.review(agreement, image_sha256), flag)
    if not ours:
        logs.info("graded twice", id=work.id, image_sha256=image_sha256, kept="the first result")
    return Outcome(200, stored | {"key": key})


def _from_marker(work: Work, seen: dict[str, Any]) -> Outcome:
    """An object graded (or refused) before: its answer again, at no cost."""
    if "error" in seen:
        return Outcome(int(seen.get("status") or 400), {"id": work.id, "error": seen["error"]})
    logs.info("already graded", id=work.id, source=work.source, model_calls=0)
    return Outcome(200, {"id": work.id, "key": seen.get("result")})


async def _record_failure(outcome: Outcome, work: Work, key: str, context: Context) -> None:
    record = {
        "id": work.id,
        "source": work.source,
        "message_id": work.message_id,
        "status": outcome.status,
        "error": outcome.body.get("error"),
        **context.stamp,
    }
    try:
        await asyncio.to_thread(context.store.put, key, record)
    except HandlerError as exc:  # the failure stays in the logs; the message is still done
        logs.log.error("cannot record a failure", extra={"fields": {"id": work.id, "code": exc.code}})
