"""What a caller gets back: one image's outcome, a failure as its JSON body, the API Gateway response."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from lambda_handler.errors import RequestError


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    body: dict[str, Any]
    retry_after_s: float | None = None
    retryable: bool = False

    @property
    def ok(self) -> bool:
        return self.status == 200


def failure(item_id: str | None, exc: RequestError) -> Outcome:
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        error["retry_after_s"] = retry_after
    body = {"error": error} if item_id is None else {"id": item_id, "error": error}
    return Outcome(exc.status, body, retry_after, bool(getattr(exc, "retryable", False)))


def http_response(outcome: Outcome, headers: dict[str, str] | None = None) -> dict[str, Any]:
    all_headers = {"content-type": "application/json", "cache-control": "no-store", **(headers or {})}
    if outcome.retry_after_s is not None:
        all_headers["retry-after"] = str(max(1, math.ceil(outcome.retry_after_s)))
    return {
        "statusCode": outcome.status,
        "headers": all_headers,
        "body": json.dumps(outcome.body, separators=(",", ":")),
        "isBase64Encoded": False,
    }
