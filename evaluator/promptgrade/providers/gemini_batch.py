"""Gemini's Batch API through ``google-genai``: the same requests as online calls, as one job.

A job's requests are built as the online provider builds them (the same generation config, the same
image and prompt parts), so its answers are the same answers and go into the answer cache under the
same keys. Small jobs go inline (``client.batches.create(src=[InlinedRequest…])``, under the API's
20 MB limit); larger ones as a JSONL file uploaded with ``client.files.upload``, whose lines are the
exact ``generateContent`` bodies the SDK's own converters produce (``gemini_wire``). Results are
matched to requests by key — the inline request's ``metadata.key`` or the file line's ``key`` —
never by position.

This module knows the API and nothing about journals, caches or scoring; it never retries (polling
policy lives in ``promptgrade.batch``) and maps the SDK's answer onto ``Completion`` with the online
provider's own mapping.
"""

from __future__ import annotations

import io
import json
from typing import Any

from google import genai
from google.genai import batches as sdk_batches
from google.genai import errors as genai_errors
from google.genai import types

from promptgrade.errors import ProviderError
from promptgrade.providers.base import Completion, CompletionRequest, ErrorInfo, ErrorKind, redacted
from promptgrade.providers.batch_base import (
    BatchAPIError,
    BatchLimits,
    BatchResult,
    JobStatus,
    jsonl_objects,
)
from promptgrade.providers.gemini import (
    _CONNECTION_ERRORS,
    _TIMEOUT_ERRORS,
    GeminiCredentials,
    _api_error,
    _completion,
    _config,
    _describe,
)
from promptgrade.providers.gemini_wire import RequestTemplates, sdk_parts, template_key

INLINE_LIMIT_BYTES = 20 * 1024 * 1024  # the API's limit on one inline batch request
FILE_LIMIT_BYTES = 2 * 1024**3  # the Files API's limit on one file: a larger job is split
_API_ERRORS: tuple[type[Exception], ...] = (genai_errors.APIError, *_TIMEOUT_ERRORS, *_CONNECTION_ERRORS)
VERTEX_UNSUPPORTED = (
    "Gemini batch mode uses the Gemini Developer API (inline requests or an uploaded JSONL file); "
    "Vertex AI batch prediction needs a GCS or BigQuery source, which promptgrade does not create: "
    "unset GOOGLE_GENAI_USE_VERTEXAI and use GEMINI_API_KEY, or sweep online"
)


class GeminiBatches:
    """One model's batch jobs; synchronous (a handful of calls per job, not one per request)."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        timeout_s: float = 120,
        credentials: GeminiCredentials | None = None,
        inline_limit_bytes: int = INLINE_LIMIT_BYTES,
    ) -> None:
        """``inline_limit_bytes``: the largest job sent inline (``PROMPTGRADE_BATCH_INLINE_BYTES``, read by
        the lab's caller; a test forces the file route with a small one)."""
        credentials = credentials if credentials is not None else GeminiCredentials.from_env()
        credentials.check()
        if credentials.use_vertexai:
            raise ProviderError(VERTEX_UNSUPPORTED)
        self.model = model
        self.base_url = base_url
        self.inline_limit = inline_limit_bytes
        self._secret = credentials.api_key.get_secret_value() if credentials.api_key else None
        options = types.HttpOptions(
            base_url=base_url,
            timeout=max(1, round(timeout_s * 1000)),
            retry_options=types.HttpRetryOptions(attempts=1),  # polling policy is ours
        )
        self._client = genai.Client(vertexai=False, api_key=self._secret, http_options=options)

    @property
    def limits(self) -> BatchLimits:
        """No count limit; a job larger than one file is split (a job inline or in one file is one job)."""
        return BatchLimits(max_bytes=FILE_LIMIT_BYTES)

    # -- submitting ---------------------------------------------------------------------------
    def create(self, requests: list[tuple[str, CompletionRequest]], display_name: str) -> tuple[str, str]:
        """Submit one job; returns (job name, route). Not idempotent: journal the intent first."""
        # a tenth kept free: the size is estimated, and an inline request over the limit is refused whole
        route = "inline" if _inline_size(requests) <= 0.9 * self.inline_limit else "file"
        try:
            if route == "inline":
                src: Any = [
                    types.InlinedRequest(
                        contents=_contents(request), config=_config(request), metadata={"key": key}
                    )
                    for key, request in requests
                ]
            else:
                src = self._upload(requests, display_name)
            job = self._client.batches.create(
                model=self.model, src=src, config=types.CreateBatchJobConfig(display_name=display_name)
            )
        except _API_ERRORS as exc:
            raise self._error("creating a batch job", exc) from None
        if not job.name:
            raise BatchAPIError("the Batch API created a job without a name")
        return job.name, route

    def _upload(self, requests: list[tuple[str, CompletionRequest]], display_name: str) -> str:
        """The JSONL source: one ``{"key", "request"}`` line per request, bodies by the SDK's converters."""
        templates = RequestTemplates(self._client._api_client, self.model)
        buffer = io.BytesIO()
        for key, request in requests:
            settings_key = (request.settings, json.dumps(request.response_schema, sort_keys=True))
            template = templates.request(request, _config(request), template_key(request, settings_key))
            line = {"key": key, "request": template.fill(request.image.data)}
            buffer.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
        buffer.seek(0)
        uploaded = self._client.files.upload(
            file=buffer,
            config=types.UploadFileConfig(mime_type="application/jsonl", display_name=display_name),
        )
        if not uploaded.name:
            raise BatchAPIError("the Files API stored the requests file without a name")
        return uploaded.name

    # -- following ----------------------------------------------------------------------------
    def status(self, name: str) -> JobStatus:
        job, raw = self._get(name)
        return _status(job, raw)

    def find(self, display_name: str) -> str | None:
        """The job created under ``display_name``, if the API has one (a submit cut short by a kill)."""
        try:
            for job in self._client.batches.list(config=types.ListBatchJobsConfig(page_size=100)):
                if job.display_name == display_name and job.name:
                    return job.name
        except _API_ERRORS as exc:
            raise self._error("listing batch jobs", exc) from None
        return None

    def cancel(self, name: str) -> None:
        try:
            self._client.batches.cancel(name=name)
        except _API_ERRORS as exc:
            raise self._error(f"cancelling {name}", exc) from None

    def results(self, name: str) -> tuple[JobStatus, list[BatchResult]]:
        """The job's status and every result it returned (none unless it finished)."""
        job, raw = self._get(name)
        status = _status(job, raw)
        dest = job.dest
        out: list[BatchResult] = []
        if dest is not None and dest.inlined_responses:
            for item in dest.inlined_responses:
                key = (item.metadata or {}).get("key", "")
                out.append(BatchResult(key, self._answer(item.response, _job_error(item.error))))
        elif dest is not None and dest.file_name:
            try:
                data = self._client.files.download(file=dest.file_name)
            except _API_ERRORS as exc:
                raise self._error(f"downloading {dest.file_name}", exc) from None
            for line in jsonl_objects(data):
                response = line.get("response")
                parsed = (
                    types.GenerateContentResponse._from_response(response=response, kwargs={})
                    if response
                    else None
                )
                out.append(
                    BatchResult(str(line.get("key", "")), self._answer(parsed, _job_error(line.get("error"))))
                )
        return status, out

    def _get(self, name: str) -> tuple[types.BatchJob, dict[str, Any]]:
        """The job, read by the SDK's converters; the raw body too, for ``batchStats`` (which the SDK's
        BatchJob does not carry for the Developer API). Falls back to the public ``get`` if the private
        converter is gone (then without counts)."""
        try:
            converter = sdk_batches._BatchJob_from_mldev
            response = self._client._api_client.request("get", f"batches/{name.split('/')[-1]}", {}, None)
            raw = json.loads(response.body) if response.body else {}
            return types.BatchJob._from_response(response=converter(raw), kwargs={}), raw
        except AttributeError:
            pass
        except _API_ERRORS as exc:
            raise self._error(f"reading {name}", exc) from None
        try:
            return self._client.batches.get(name=name), {}
        except _API_ERRORS as exc:
            raise self._error(f"reading {name}", exc) from None

    def _answer(self, response: types.GenerateContentResponse | None, error: ErrorInfo | None) -> Completion:
        if error is not None or response is None:
            info = error or ErrorInfo(ErrorKind.EMPTY, "the job returned neither an answer nor an error")
            return redacted(Completion(text=None, error=info), self._secret)
        return redacted(_completion(response, 0.0), self._secret)

    def _error(self, doing: str, exc: Exception) -> BatchAPIError:
        if isinstance(exc, genai_errors.APIError):
            info = _api_error(exc)
        elif isinstance(exc, _TIMEOUT_ERRORS):
            info = ErrorInfo(ErrorKind.TIMEOUT, _describe(exc))
        else:
            info = ErrorInfo(ErrorKind.CONNECTION, _describe(exc))
        message = info.message.replace(self._secret, "***") if self._secret else info.message
        return BatchAPIError(f"{self.model}: {doing}: {message}", info)

    def close(self) -> None:
        self._client.close()


def _contents(request: CompletionRequest) -> list[types.PartUnion]:
    return sdk_parts(request)


def _inline_size(requests: list[tuple[str, CompletionRequest]]) -> int:
    """The inline request's size, near enough: base64 images, prompts, each request's response schema
    (repeated in every request's config) and a margin for the rest of the config."""
    schemas: dict[int, int] = {}

    def schema_size(request: CompletionRequest) -> int:
        schema = request.response_schema
        if schema is None:
            return 0
        if id(schema) not in schemas:
            schemas[id(schema)] = len(json.dumps(schema))
        return schemas[id(schema)]

    return sum(
        sum(len(image.data) for image in r.images) * 4 // 3
        + len(r.prompt.encode())
        + schema_size(r)
        + len(key)
        + 1024
        for key, r in requests
    )


def _job_error(error: Any) -> ErrorInfo | None:
    """A request's error inside a job (a google.rpc.Status): as the online provider would classify it."""
    if error is None:
        return None
    if isinstance(error, types.JobError):
        code, message = error.code, error.message
    elif isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
    else:
        code, message = None, str(error)
    return ErrorInfo(
        ErrorKind.BATCH_FAILED, f"the batch job failed this request: {code} {message}".strip(), code
    )


def _status(job: types.BatchJob, raw: dict[str, Any]) -> JobStatus:
    state = job.state.value if job.state is not None else "JOB_STATE_UNSPECIFIED"
    stats = (raw.get("metadata") or {}).get("batchStats") or {}
    counts = {k: int(v) for k, v in stats.items() if str(v).isdigit()}
    error = job.error.message if job.error is not None else None
    return JobStatus(job.name or "", state, counts, error)
