"""What an event asks for: its kind, and the image requests an HTTP, batch or S3 event carries (an SQS
batch's messages are read by ``sqs``).

Everything checkable without the model is checked here, before any work is done: exactly one image
source, the id's shape, base64, and the size limit.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import unquote_plus

from lambda_handler import fetch
from lambda_handler.errors import REQUEST_ERRORS, HandlerError
from lambda_handler.outcomes import Outcome, failure
from promptgrade.images import sniff_mime

EventKind = Literal["http", "s3", "sqs", "batch"]
SOURCES = ("image_base64", "s3_uri", "url")


class Sources(Protocol):
    """What loading an image needs from the container: its S3 client and its URL fetcher.

    ``app.Runtime`` is one; naming only these keeps this module below ``app``, which imports it.
    """

    @property
    def s3(self) -> Any: ...

    @property
    def fetch_url(self) -> Callable[[str], fetch.Fetched]: ...


@dataclass(frozen=True, slots=True)
class ImageRequest:
    id: str
    source: str  # "base64", "body", "s3" or "url": for logs
    load: Callable[[Sources], bytes]


def event_kind(event: Any) -> EventKind | None:
    if not isinstance(event, dict):
        return None
    request_context = event.get("requestContext")
    if isinstance(request_context, dict) and (
        (event.get("version") == "2.0" and isinstance(request_context.get("http"), dict))
        or "httpMethod" in event
    ):
        return "http"
    records = event.get("Records")
    if isinstance(records, list) and records and all(isinstance(r, dict) for r in records):
        sources = {r.get("eventSource") for r in records}
        if sources == {"aws:s3"}:
            return "s3"
        # a record without its messageId cannot be named in batchItemFailures: not an SQS delivery
        if sources == {"aws:sqs"} and all(isinstance(r.get("messageId"), str) for r in records):
            return "sqs"
    if "images" in event:
        return "batch"
    return None


# -- API Gateway -------------------------------------------------------------------------------------
def http_request(event: dict[str, Any], request_id: str, max_bytes: int) -> ImageRequest:
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
    raw = decode_base64(body, None, "the body") if event.get("isBase64Encoded") else body.encode("utf-8")
    is_json = content_type == "application/json" or content_type.endswith("+json")
    looks_like_json = is_json or raw.lstrip()[:1] in (b"{", b"[")
    if (
        content_type.startswith("image/")
        or content_type == "application/octet-stream"
        or (not looks_like_json and sniff_mime(raw) is not None)
    ):
        if len(raw) > max_bytes:
            raise HandlerError(413, "payload_too_large", too_large(len(raw), max_bytes))
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
    return image_request(payload, request_id, max_bytes)


# -- direct invocation -------------------------------------------------------------------------------
def batch_requests(images: list[Any], max_bytes: int) -> list[ImageRequest | Outcome]:
    """One entry per image, in order: its request, or the failure that stops it before any work."""
    entries: list[ImageRequest | Outcome] = []
    for index, item in enumerate(images):
        fallback_id = str(index)
        try:
            if not isinstance(item, dict):
                raise HandlerError(400, "invalid_input", "each image must be a JSON object")
            fallback_id = safe_id(item.get("id"), fallback_id)
            entries.append(image_request(item, str(index), max_bytes))
        except REQUEST_ERRORS as exc:
            entries.append(failure(fallback_id, exc))
    return entries


# -- S3 notifications --------------------------------------------------------------------------------
def s3_requests(
    records: list[Any], output_bucket: str | None, output_prefix: str, max_bytes: int
) -> tuple[list[ImageRequest | Outcome], int]:
    """One entry per new object (its request, or the failure of a record without bucket or key), and
    how many records were skipped: not an ``ObjectCreated:*`` event, or our own output."""
    entries: list[ImageRequest | Outcome] = []
    skipped = 0
    for record in records:
        try:
            name = str(record["eventName"])
            bucket = str(record["s3"]["bucket"]["name"])
            key = unquote_plus(str(record["s3"]["object"]["key"]))
        except (KeyError, TypeError):
            entries.append(
                failure(None, HandlerError(400, "invalid_event", "an S3 record lacks its bucket or key"))
            )
            continue
        # Our own output must not trigger another round: that loop would run until someone noticed the bill.
        if not name.startswith("ObjectCreated:") or (
            bucket == output_bucket and key.startswith(output_prefix)
        ):
            skipped += 1
            continue

        def load(rt: Sources, bucket: str = bucket, key: str = key) -> bytes:
            return fetch.fetch_s3(rt.s3, bucket, key, max_bytes=max_bytes).data

        entries.append(ImageRequest(key, "s3", load))
    return entries, skipped


# -- one image ---------------------------------------------------------------------------------------
def image_request(payload: dict[str, Any], default_id: str, max_bytes: int) -> ImageRequest:
    """One ``{"id"?, "image_base64" | "s3_uri" | "url"}`` object, checked before any work is done."""
    item_id = checked_id(payload.get("id"), default_id)
    given = [key for key in SOURCES if payload.get(key) is not None]
    if len(given) != 1:
        raise HandlerError(400, "invalid_input", "give exactly one of image_base64, s3_uri or url")
    kind = given[0]
    value = payload[kind]
    if not isinstance(value, str) or not value.strip():
        raise HandlerError(400, "invalid_input", f"{kind} must be a non-empty string")
    if kind == "image_base64":
        data = decode_base64(value, max_bytes, "image_base64")
        return ImageRequest(item_id, "base64", lambda _: data)
    if kind == "s3_uri":
        bucket, key = fetch.parse_s3_uri(value)
        return ImageRequest(
            item_id, "s3", lambda rt: fetch.fetch_s3(rt.s3, bucket, key, max_bytes=max_bytes).data
        )
    return ImageRequest(item_id, "url", lambda rt: rt.fetch_url(value).data)


def checked_id(value: Any, default: str) -> str:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value) or len(str(value)) > 256:
        raise HandlerError(400, "invalid_input", "id must be a string (at most 256 characters) or an integer")
    return str(value)


def safe_id(value: Any, default: str) -> str:
    try:
        return checked_id(value, default)
    except HandlerError:
        return default


def decode_base64(text: str, max_bytes: int | None, what: str) -> bytes:
    """Standard or URL-safe base64, padded or not, optionally as a ``data:`` URL; size-checked first."""
    if text.startswith("data:"):
        header, comma, text = text.partition(",")
        if not comma or not header.endswith(";base64"):
            raise HandlerError(400, "invalid_base64", f"{what} is a data: URL without ;base64")
    compact = "".join(text.split()).replace("-", "+").replace("_", "/")
    if max_bytes is not None and len(compact) // 4 * 3 - 2 > max_bytes:
        raise HandlerError(413, "payload_too_large", f"{what}: {too_large(len(compact) // 4 * 3, max_bytes)}")
    try:
        data = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise HandlerError(400, "invalid_base64", f"{what} is not valid base64") from None
    if not data:
        raise HandlerError(400, "invalid_base64", f"{what} is empty")
    if max_bytes is not None and len(data) > max_bytes:
        raise HandlerError(413, "payload_too_large", f"{what}: {too_large(len(data), max_bytes)}")
    return data


def too_large(size: int, limit: int) -> str:
    return f"the image is {size} bytes, over the limit of {limit} bytes"
