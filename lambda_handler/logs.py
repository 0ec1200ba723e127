"""The function's logs: one JSON object per line on stdout, tagged with the invocation's request id.

Set up on import: the ``lambda_handler`` logger gets the JSON-lines handler once and stops propagating.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
log = logging.getLogger("lambda_handler")


class JsonLines(logging.Handler):
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
                "request_id": request_id.get(),
            }
            entry.update(getattr(record, "fields", None) or {})
            if record.exc_info:
                entry["exception"] = logging.Formatter().formatException(record.exc_info)
            sys.stdout.write(json.dumps(entry, default=str) + "\n")
            sys.stdout.flush()
        except Exception:
            self.handleError(record)


def setup() -> None:
    if not any(isinstance(h, JsonLines) for h in log.handlers):
        log.addHandler(JsonLines())
    log.propagate = False  # the runtime's root handler would print every line a second time
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL", "INFO").upper()
    log.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")


def info(message: str, **fields: Any) -> None:
    log.info(message, extra={"fields": fields})


setup()
