"""The results an SQS-fed function keeps in S3: read before a paid call, written once.

A message may be delivered twice (SQS is at-least-once), redelivered after a partial failure, or the
same tray may be uploaded under two names; each must cost at most one grading. So a result is looked
up by its key (``promptgrade.stored_results``) before the model is asked, and written with
``If-None-Match: *``: of two deliveries racing past the lookup, the second write is refused (412)
and that delivery answers with the result already stored, so exactly one result exists.
"""

from __future__ import annotations

import json
from typing import Any

from lambda_handler.errors import HandlerError


def store_error(what: str, key: str, exc: Exception) -> HandlerError:
    """S3 failed us, not the request: a retry may cure it, so the message goes back to the queue."""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code") or type(exc).__name__
    return HandlerError(502, "result_store_failed", f"cannot {what} {key}: {code}", retryable=True)


class ResultStore:
    """JSON objects in one bucket; blocking calls (run them in a thread from the event loop)."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored object, or None if there is none yet."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            body = response["Body"]
            try:
                data = body.read()
            finally:
                body.close()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
                return None
            raise store_error("read", key, exc) from None
        except BotoCoreError as exc:
            raise store_error("read", key, exc) from None
        try:
            found = json.loads(data)
        except ValueError:
            raise HandlerError(502, "result_store_failed", f"{key} is not JSON", retryable=True) from None
        return found if isinstance(found, dict) else None

    def put_new(self, key: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Write ``body`` unless ``key`` exists; returns what is stored there and whether it is ours."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=_json(body),
                ContentType="application/json",
                IfNoneMatch="*",
            )
        except ClientError as exc:
            error = exc.response.get("Error", {}).get("Code")
            # 412: another delivery wrote first; 409: its write was in flight (S3 asks to retry)
            if error in {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}:
                stored = self.get(key)
                if stored is not None:
                    return stored, False
            raise store_error("write", key, exc) from None
        except BotoCoreError as exc:
            raise store_error("write", key, exc) from None
        return body, True

    def put(self, key: str, body: dict[str, Any]) -> None:
        """An object whose content is the same whoever writes it (a marker): last write wins."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=_json(body), ContentType="application/json"
            )
        except (BotoCoreError, ClientError) as exc:
            raise store_error("write", key, exc) from None


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, indent=2, ensure_ascii=False).encode("utf-8")
