"""The Gemini Batch API for the local server: jobs, the resumable file upload and result downloads.

What the real ``google-genai`` client sends and reads (``client.batches`` and ``client.files``):
``POST models/{model}:batchGenerateContent`` with inline requests or a ``files/…`` JSONL source,
``GET batches/{id}`` (the job, with ``batchStats`` and, once done, its output), ``GET batches``,
``POST batches/{id}:cancel``, the two-step resumable upload under ``/upload/v1beta/files`` and
``GET files/{id}:download``. Each inner request is answered by the server's own scripting (answers per
image, queued faults), and recorded once, when the job is created — so a test can assert that a
request was never sent twice, whatever happened to the client in between.

A job's life is scripted in seconds (pending, then running, then its final state), so a test waits a
fraction of a second, not a day. ``script`` sets what the next created job does: expire, fail, or
lose and invent result keys (to test that results are matched to requests by key).
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs, urlsplit

from promptgrade.testing.batch_scripts import JobScript, ScriptedJobs, phase
from promptgrade.testing.gemini_wire import (
    STATUS_NAMES,
    Fault,
    GeminiReplies,
    RequestInfo,
    answer_body,
    envelope,
    parse_request,
)

INLINE_LIMIT_BYTES = 20 * 1024 * 1024  # the API's limit on an inline batch request
__all__ = ["BatchAPI", "BatchJob", "JobScript"]  # JobScript: testing.batch_scripts', shared by every stand-in


class Scripting(Protocol):
    """What the Batch API uses of the server it belongs to (a ``FakeGemini``): each inner request is
    recorded, answered and billed as an online one would be, and uploads are served at its address."""

    @property
    def base_url(self) -> str: ...

    def _record(self, request: RequestInfo) -> Fault | None: ...

    def _answer(self, request: RequestInfo) -> str: ...

    def _priced(self, request: RequestInfo) -> RequestInfo: ...

    def _bill(self, usage: dict[str, Any]) -> None: ...


@dataclass
class BatchJob:
    name: str
    model: str
    display_name: str
    created: float
    script: JobScript
    route: Literal["inline", "file"]
    results: list[dict[str, Any]]  # {"key"|"metadata", "response"|"error"} per request, in order
    cancelled_at: float | None = None
    polled_at: list[float] = field(default_factory=list)  # time.monotonic() of each GET batches/{id}

    def state(self, now: float) -> str:
        return phase(self.created, self.script, self.cancelled_at, now)


@dataclass
class BatchAPI(ScriptedJobs[BatchJob]):
    """The batch half of a ``FakeGemini``: ``fake.batches``. Attributes may change while it runs."""

    fake: Scripting
    inline_limit_bytes: int = INLINE_LIMIT_BYTES
    files: dict[str, bytes] = field(default_factory=dict)
    poll_faults: deque[Fault] = field(default_factory=deque)  # for GET batches/{id}, e.g. a 429
    _uploads: dict[str, dict[str, Any]] = field(default_factory=dict)

    def polls(self) -> int:
        with self._lock:
            return sum(len(job.polled_at) for job in self.jobs.values())

    # -- routing (called by the server's handler) ----------------------------------------------
    def post(self, handler: GeminiReplies, path: str, body: bytes) -> bool:
        if path.startswith("/upload/"):
            self._upload(handler, body)
            return True
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[1] == "models" and parts[2].endswith(":batchGenerateContent"):
            self._create(handler, parts[2].removesuffix(":batchGenerateContent"), body)
            return True
        if len(parts) == 3 and parts[1] == "batches" and parts[2].endswith(":cancel"):
            job = self.jobs.get(f"batches/{parts[2].removesuffix(':cancel')}")
            if job is None:
                handler.send_api_error(404, "batch not found")
            else:
                if job.state(time.monotonic()) in ("PENDING", "RUNNING"):
                    job.cancelled_at = time.monotonic()
                handler.send_json(200, {})
            return True
        return False

    def get(self, handler: GeminiReplies, path: str) -> bool:
        parts = path.strip("/").split("/")
        if len(parts) == 2 and parts[1] == "batches":
            with self._lock:
                jobs = list(self.jobs.values())
            handler.send_json(200, {"operations": [self._operation(job) for job in jobs]})
            return True
        if len(parts) == 3 and parts[1] == "batches":
            job = self.jobs.get(f"batches/{parts[2]}")
            if job is None:
                handler.send_api_error(404, "batch not found")
                return True
            with self._lock:
                job.polled_at.append(time.monotonic())
                fault = self.poll_faults.popleft() if self.poll_faults else None
            if fault is not None:
                handler.send_api_error(
                    fault.status, fault.message, retry_delay=fault.retry_delay, quota_id=fault.quota_id
                )
            else:
                handler.send_json(200, self._operation(job))
            return True
        if len(parts) == 3 and parts[1] == "files" and parts[2].endswith(":download"):
            data = self.files.get(f"files/{parts[2].removesuffix(':download')}")
            if data is None:
                handler.send_api_error(404, "file not found")
            else:
                handler.send_raw(200, data, "application/octet-stream")
            return True
        return False

    # -- the API ------------------------------------------------------------------------------
    def _create(self, handler: GeminiReplies, model: str, body: bytes) -> None:
        try:
            batch = json.loads(body)["batch"]
            source = batch["inputConfig"]
        except (ValueError, KeyError, TypeError) as exc:
            handler.send_api_error(400, f"Invalid batch request: {exc}")
            return
        if "requests" in source:
            if len(body) > self.inline_limit_bytes:
                handler.send_api_error(
                    400, f"Request payload size exceeds the limit: {self.inline_limit_bytes} bytes."
                )
                return
            items = [(item.get("metadata"), None, item["request"]) for item in source["requests"]["requests"]]
            route: Literal["inline", "file"] = "inline"
        else:
            data = self.files.get(source.get("fileName", ""))
            if data is None:
                handler.send_api_error(400, f"file {source.get('fileName')!r} not found")
                return
            lines = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
            items = [(None, line["key"], line["request"]) for line in lines]
            route = "file"
        now = time.monotonic()
        results: list[dict[str, Any]] = []
        for metadata, key, request in items:
            path = f"/v1beta/models/{model}:batchGenerateContent"  # how a test tells batch from online
            info = self.fake._priced(parse_request(model, path, request, {}, now))
            info = dataclasses.replace(info, body=json.dumps(request).encode())
            answer = self._respond(info, self.fake._record(info))
            results.append({**answer, **({"key": key} if key is not None else {"metadata": metadata})})
        name = f"batches/{uuid.uuid4().hex[:12]}"
        job = self._register(
            name,
            lambda script: BatchJob(name, model, batch.get("displayName", ""), now, script, route, results),
        )
        handler.send_json(200, self._operation(job))

    def _respond(self, info: RequestInfo, fault: Fault | None) -> dict[str, Any]:
        """One inner request's result: an answer as generateContent gives it, or its error."""
        if fault is None:
            body = answer_body(info, self.fake._answer(info))
        elif fault.kind == "http_error":
            status = STATUS_NAMES.get(fault.status, "UNKNOWN")
            return {"error": {"code": fault.status, "message": fault.message, "status": status}}
        elif fault.kind == "safety":
            candidate = {"finishReason": "SAFETY", "index": 0}
            body = envelope(info, [candidate], output_tokens=0)
        else:
            body = answer_body(info, self.fake._answer(info))
        self.fake._bill(body["usageMetadata"])
        return {"response": body}

    def _operation(self, job: BatchJob) -> dict[str, Any]:
        now = time.monotonic()
        state = job.state(now)
        done = state not in ("PENDING", "RUNNING")
        finished = len(job.results) if state == "SUCCEEDED" else 0
        failed = sum("error" in r for r in job.results) if state == "SUCCEEDED" else 0
        stats = {
            "requestCount": str(len(job.results)),
            "successfulRequestCount": str(finished - failed),
            "failedRequestCount": str(failed),
            "pendingRequestCount": str(len(job.results) - finished),
        }
        metadata: dict[str, Any] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
            "model": f"models/{job.model}",
            "displayName": job.display_name,
            "state": f"BATCH_STATE_{state}",
            "createTime": _timestamp(job.created),
            "updateTime": _timestamp(now),
            "batchStats": stats,
        }
        if state == "SUCCEEDED":
            results = job.results[: len(job.results) - job.script.drop_results]
            for index in range(job.script.unknown_results):
                extra = dict(job.results[0]) if job.results else {"response": {}}
                tag = f"unknown-{index}"
                extra.update({"key": tag} if job.route == "file" else {"metadata": {"key": tag}})
                results = [*results, extra]
            results = [*results, *job.results[: job.script.duplicate_results]]
            if job.route == "inline":
                metadata["output"] = {"inlinedResponses": {"inlinedResponses": results}}
            else:
                file = f"files/batch-{job.name.split('/')[1]}-responses"
                self.files[file] = "".join(json.dumps(r) + "\n" for r in results).encode()
                metadata["output"] = {"responsesFile": file}
        return {"name": job.name, "metadata": metadata, "done": done}

    def _upload(self, handler: GeminiReplies, body: bytes) -> None:
        """The resumable upload: ``start`` returns a session URL, then one chunk ``upload, finalize``."""
        command = handler.headers.get("X-Goog-Upload-Command", "")
        if "start" in command:
            session = uuid.uuid4().hex
            meta = json.loads(body or b"{}").get("file", {})
            with self._lock:
                self._uploads[session] = {"data": b"", "meta": meta}
            url = f"{self.fake.base_url}/upload/v1beta/files?upload_id={session}"
            handler.send_raw(
                200, b"{}", "application/json", {"x-goog-upload-url": url, "x-goog-upload-status": "active"}
            )
            return
        session = parse_qs(urlsplit(handler.path).query).get("upload_id", [""])[0]
        upload = self._uploads.get(session)
        if upload is None:
            handler.send_api_error(404, "upload session not found")
            return
        upload["data"] += body
        if "finalize" not in command:
            handler.send_raw(200, b"", "text/plain", {"x-goog-upload-status": "active"})
            return
        name = f"files/{uuid.uuid4().hex[:12]}"
        self.files[name] = upload["data"]
        file = {
            "name": name,
            "mimeType": upload["meta"].get("mimeType", "application/jsonl"),
            "sizeBytes": str(len(upload["data"])),
            "state": "ACTIVE",
            "uri": f"{self.fake.base_url}/v1beta/{name}",
        }
        payload = json.dumps({"file": file}).encode()
        handler.send_raw(200, payload, "application/json", {"x-goog-upload-status": "final"})


def _timestamp(monotonic: float) -> str:
    wall = time.time() - (time.monotonic() - monotonic)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1e6):06d}Z"
