"""OpenAI's Batch API through the official ``openai`` SDK: the online requests, as one uploaded file.

A job is a JSONL file uploaded with ``purpose="batch"`` whose lines are ``{"custom_id", "method",
"url", "body"}``: ``custom_id`` is the request's cache key and ``body`` is exactly what the online
provider sends to ``/v1/chat/completions`` (``openai.chat_arguments``), so the answers are the online
answers and go into the answer cache under the online keys. ``client.batches.create`` /
``retrieve`` / ``cancel`` / ``list`` follow the job; its output and error files are read back by
``custom_id`` (their order is not the input's). ``base_url`` is honoured, so any server speaking the
API (a gateway, vLLM's batch runner behind one) takes the same jobs.

Limits (OpenAI's documentation): at most 50,000 requests and 200 MB per input file, one file per job;
the executor splits a larger candidate into several jobs. A server that does not offer the Batch API
(404 on ``/v1/files`` or ``/v1/batches``) is one line naming the model.

This module knows the API and nothing about journals, caches or scoring; it never retries.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, Final

import openai
from openai.types.chat import ChatCompletion

from promptgrade.providers.base import Completion, CompletionRequest, ErrorInfo, ErrorKind, redacted
from promptgrade.providers.batch_base import (
    CANCELLED,
    COUNT_FAILED,
    COUNT_REQUESTS,
    COUNT_SUCCEEDED,
    EXPIRED,
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    BatchAPIError,
    BatchLimits,
    BatchResult,
    JobStatus,
    jsonl_objects,
)
from promptgrade.providers.openai import _describe, _no_key, chat_arguments, completion_of, status_error

ENDPOINT: Final = "/v1/chat/completions"
MAX_REQUESTS = 50_000  # per input file (and so per job)
MAX_BYTES = 200 * 1024 * 1024  # per input file
DISPLAY_NAME = "promptgrade_display_name"  # the job's metadata key holding the journal's display name
# the API's states, in the executor's words; "cancelling" and "finalizing" are still running
STATES = {
    "validating": PENDING,
    "in_progress": RUNNING,
    "finalizing": RUNNING,
    "cancelling": RUNNING,
    "completed": SUCCEEDED,
    "failed": FAILED,
    "expired": EXPIRED,
    "cancelled": CANCELLED,
}


class OpenAIBatches:
    """One model's batch jobs on one OpenAI-compatible server; synchronous."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        timeout_s: float = 120,
        api_key: str | None = None,
        api_key_env: str | None = None,
    ) -> None:
        """As ``OpenAIProvider``: ``api_key`` is the key the lab resolved (from ``api_key_env``'s
        variable, else ``OPENAI_API_KEY``), ``base_url`` the server (None: OpenAI)."""
        self.model = model
        self.base_url = base_url or None
        if not api_key:
            _no_key(api_key_env, self.base_url)
        self._secret = api_key or None
        self._client = openai.OpenAI(
            api_key=api_key or "no-key-needed", base_url=self.base_url, timeout=timeout_s, max_retries=0
        )

    @property
    def limits(self) -> BatchLimits:
        return BatchLimits(max_requests=MAX_REQUESTS, max_bytes=MAX_BYTES)

    # -- submitting ---------------------------------------------------------------------------
    def create(self, requests: list[tuple[str, CompletionRequest]], display_name: str) -> tuple[str, str]:
        """Upload the requests file, then create the job; returns (batch id, "file"). Not idempotent."""
        lines = (
            json.dumps(
                {"custom_id": key, "method": "POST", "url": ENDPOINT, "body": chat_arguments(self.model, r)},
                separators=(",", ":"),
            )
            for key, r in requests
        )
        data = "\n".join(lines).encode() + b"\n"
        try:
            uploaded = self._client.files.create(file=(f"{display_name}.jsonl", data), purpose="batch")
        except openai.OpenAIError as exc:
            raise self._error("uploading the requests file", exc) from None
        try:
            batch = self._client.batches.create(
                input_file_id=uploaded.id,
                endpoint=ENDPOINT,
                completion_window="24h",
                metadata={DISPLAY_NAME: display_name},
            )
        except openai.OpenAIError as exc:
            self._forget_file(uploaded.id)  # no job reads it: not left behind in the account's storage
            raise self._error("creating a batch job", exc) from None
        return batch.id, "file"

    def _forget_file(self, file_id: str) -> None:
        # a stray file costs storage, not a request: the refusal is what the user must see
        with contextlib.suppress(openai.OpenAIError):
            self._client.files.delete(file_id)

    # -- following ----------------------------------------------------------------------------
    def find(self, display_name: str) -> str | None:
        """The job created under ``display_name`` (its metadata), if the server has one."""
        try:
            for batch in self._client.batches.list(limit=100):
                if (batch.metadata or {}).get(DISPLAY_NAME) == display_name:
                    return batch.id
        except openai.OpenAIError as exc:
            raise self._error("listing batch jobs", exc) from None
        return None

    def status(self, name: str) -> JobStatus:
        try:
            batch = self._client.batches.retrieve(name)
        except openai.OpenAIError as exc:
            raise self._error(f"reading {name}", exc) from None
        return _status(batch)

    def cancel(self, name: str) -> None:
        try:
            self._client.batches.cancel(name)
        except openai.OpenAIError as exc:
            raise self._error(f"cancelling {name}", exc) from None

    def results(self, name: str) -> tuple[JobStatus, list[BatchResult]]:
        """The job's status and every line of its output and error files, by ``custom_id``."""
        try:
            batch = self._client.batches.retrieve(name)
        except openai.OpenAIError as exc:
            raise self._error(f"reading {name}", exc) from None
        status = _status(batch)
        out: list[BatchResult] = []
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            try:
                data = self._client.files.content(file_id).content
            except openai.OpenAIError as exc:
                raise self._error(f"downloading {file_id}", exc) from None
            out.extend(
                BatchResult(str(line.get("custom_id", "")), self._answer(line))
                for line in jsonl_objects(data)
            )
        return status, out

    def _answer(self, line: dict[str, Any]) -> Completion:
        """One output or error line: the chat completion, or why the job did not answer this request."""
        response = line.get("response") or {}
        code = response.get("status_code")
        body = response.get("body")
        if code == 200 and isinstance(body, dict):
            try:
                return redacted(completion_of(ChatCompletion.model_validate(body), 0.0), self._secret)
            except ValueError as exc:
                return Completion(text=None, error=ErrorInfo(ErrorKind.MALFORMED, _describe(exc)))
        error = line.get("error") or (body.get("error") if isinstance(body, dict) else None) or {}
        message = error.get("message") if isinstance(error, dict) else str(error)
        label = code if code is not None else (error.get("code") if isinstance(error, dict) else None)
        described = " ".join(f"{label or ''} {message or 'no answer and no error'}".split())
        info = ErrorInfo(
            ErrorKind.BATCH_FAILED,
            f"the batch job failed this request: {described}",
            code if isinstance(code, int) else None,
        )
        return redacted(Completion(text=None, error=info), self._secret)

    def _error(self, doing: str, exc: openai.OpenAIError) -> BatchAPIError:
        if isinstance(exc, openai.APIStatusError):
            info = status_error(exc)
            if exc.status_code in (404, 405):
                where = self.base_url or "OpenAI"
                return BatchAPIError(
                    f"{self.model}: {doing}: the server at {where} does not offer the Batch API "
                    f"(HTTP {exc.status_code} on /v1/files or /v1/batches): sweep this model online "
                    "(drop --batch, or `batch: true` on it)",
                    info,
                )
        elif isinstance(exc, openai.APITimeoutError):
            info = ErrorInfo(ErrorKind.TIMEOUT, _describe(exc))
        else:
            info = ErrorInfo(ErrorKind.CONNECTION, _describe(exc))
        message = info.message.replace(self._secret, "***") if self._secret else info.message
        return BatchAPIError(f"{self.model}: {doing}: {message}", info)

    def close(self) -> None:
        self._client.close()


def _status(batch: Any) -> JobStatus:
    counts = batch.request_counts
    stats = (
        {
            COUNT_REQUESTS: counts.total,
            COUNT_SUCCEEDED: counts.completed,
            COUNT_FAILED: counts.failed,
        }
        if counts is not None
        else {}
    )
    errors = getattr(batch.errors, "data", None) or []
    error = "; ".join(e.message or e.code or "" for e in errors) or None
    return JobStatus(batch.id, STATES.get(batch.status, PENDING), stats, error)
