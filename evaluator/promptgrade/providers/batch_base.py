"""What every batch back-end (Gemini, Bedrock, OpenAI) offers the batch executor, and the values that cross.

One executor and one journal drive every provider's batch service, so the services' differences stop
here: each back-end speaks its own API and answers in one vocabulary — a job's state as one of the
``JOB_STATE_*`` words below (the journal has always stored Gemini's, so old journals still read), its
counts under ``COUNT_*`` names, its results matched to requests by the cache key each request was sent
under, and its size rules as ``BatchLimits`` the executor splits by before anything is submitted.

A back-end never retries and never waits: polling policy, the journal and the answer cache are the
executor's. Standard library only, so that importing the protocol loads no SDK.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from promptgrade.errors import ProviderError
from promptgrade.providers.base import Completion, CompletionRequest, ErrorInfo

# The states a job is reported in, whatever its API calls them.
PENDING = "JOB_STATE_PENDING"
RUNNING = "JOB_STATE_RUNNING"
SUCCEEDED = "JOB_STATE_SUCCEEDED"
PARTIALLY_SUCCEEDED = "JOB_STATE_PARTIALLY_SUCCEEDED"
FAILED = "JOB_STATE_FAILED"
CANCELLED = "JOB_STATE_CANCELLED"
EXPIRED = "JOB_STATE_EXPIRED"
TERMINAL = frozenset({SUCCEEDED, PARTIALLY_SUCCEEDED, FAILED, CANCELLED, EXPIRED})

# A job's counts, whatever its API calls them (Gemini's batchStats names).
COUNT_REQUESTS = "requestCount"
COUNT_SUCCEEDED = "successfulRequestCount"
COUNT_FAILED = "failedRequestCount"


@dataclass(frozen=True)
class JobStatus:
    name: str
    state: str  # one of the JOB_STATE_* above
    stats: dict[str, int] = field(default_factory=dict)  # COUNT_* names (and any others the API gives)
    error: str | None = None  # why the job as a whole failed or ended, in the API's words

    @property
    def done(self) -> bool:
        return self.state in TERMINAL


@dataclass(frozen=True)
class BatchResult:
    """One result of a job: the answer (or the API's error for that request), by its key."""

    key: str
    completion: Completion


class BatchAPIError(ProviderError):
    """The batch service refused or failed a call (not one request inside a job)."""

    def __init__(self, message: str, info: ErrorInfo | None = None) -> None:
        self.info = info
        super().__init__(message)


@dataclass(frozen=True)
class BatchLimits:
    """What one job may hold, as the provider documents it: the executor splits a candidate's requests
    into jobs that keep to it, and holds back a remainder under ``min_requests`` (never sent)."""

    max_requests: int | None = None
    max_bytes: int | None = None  # of the job's input file (estimated: ``request_bytes``)
    min_requests: int = 1

    def tightened(self, max_requests: int | None) -> BatchLimits:
        """These limits with a lower per-job maximum (the lab's ``PROMPTGRADE_BATCH_MAX_REQUESTS``)."""
        if max_requests is None or (self.max_requests is not None and self.max_requests <= max_requests):
            return self
        return BatchLimits(max_requests, self.max_bytes, self.min_requests)


class BatchBackend(Protocol):
    """One model's batch jobs at one provider; synchronous (a handful of calls per job).

    ``base_url`` is the endpoint the model's *online* requests go to: the answers are cached under the
    keys online calls would use, so both executors fill and read one cache.
    """

    model: str
    base_url: str | None

    @property
    def limits(self) -> BatchLimits: ...

    def create(self, requests: list[tuple[str, CompletionRequest]], display_name: str) -> tuple[str, str]:
        """Submit one job of (cache key, request); returns (job name, route). Not idempotent: the
        executor journals the intent first."""
        ...

    def find(self, display_name: str) -> str | None:
        """The job created under ``display_name``, if the service has one (a create cut short by a kill)."""
        ...

    def status(self, name: str) -> JobStatus: ...

    def results(self, name: str) -> tuple[JobStatus, list[BatchResult]]:
        """The job's status and every result it returned (none unless it finished)."""
        ...

    def cancel(self, name: str) -> None: ...

    def close(self) -> None: ...


def request_bytes(request: CompletionRequest) -> int:
    """A request's size in a JSONL input file, near enough to split by: base64 images, the prompt, its
    response schema and a margin for the rest of the body."""
    images = sum(len(image.data) for image in request.images)
    schema = len(json.dumps(request.response_schema)) if request.response_schema is not None else 0
    return images * 4 // 3 + len(request.prompt.encode()) + schema + 1024


def jsonl_objects(data: bytes) -> Iterator[dict[str, Any]]:
    """The JSON objects of a results file, one per line; an unreadable line is skipped (its request
    then shows as missing from the results, with that reason)."""
    for line in data.decode("utf-8", errors="replace").splitlines():
        if line.strip():
            try:
                parsed = json.loads(line)
            except ValueError:
                continue
            if isinstance(parsed, dict):
                yield parsed
