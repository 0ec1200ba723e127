"""The OpenAI Files and Batch APIs for the local OpenAI-compatible server (``FakeOpenAI.batches``).

What the official ``openai`` client sends and reads: ``POST /v1/files`` (multipart, ``purpose=batch``),
``GET /v1/files/{id}/content``, ``DELETE /v1/files/{id}``, ``POST /v1/batches``, ``GET
/v1/batches/{id}``, ``POST /v1/batches/{id}/cancel`` and ``GET /v1/batches``. Each line of a job's
input file is answered by the server's own scripting (answers per image, queued faults) and recorded
once, when the job is created, marked with the job's id — so a test counts what was sent as a batch
and what online, whatever happened to the client in between. Answers go to the output file, failed
requests (a queued 5xx, say) to the error file, both keyed by ``custom_id``; the job's life and any
tampering with its results are scripted (``batch_scripts``). ``offered = False`` plays a server
without the Batch API: 404 on every one of these paths.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, Protocol

from promptgrade.testing.batch_scripts import JobScript, ScriptedJobs, phase, tampered
from promptgrade.testing.scripted import JSONHandler

STATES = {  # the script's phases in this API's words
    "PENDING": "validating",
    "RUNNING": "in_progress",
    "SUCCEEDED": "completed",
    "FAILED": "failed",
    "CANCELLED": "cancelled",
    "EXPIRED": "expired",
}


class ChatScripting(Protocol):
    """What the Batch API uses of the server it belongs to (a ``FakeOpenAI``): each line is decoded,
    recorded and answered as an online request would be."""

    def _parse(self, body: dict[str, Any], batch_job: str | None) -> Any: ...

    def _record(self, request: Any) -> Any: ...

    def _reply(self, request: Any, fault: Any) -> tuple[int, dict[str, Any], dict[str, str]]: ...


@dataclass
class OpenAIBatchJob:
    id: str
    input_file_id: str
    created: float
    script: JobScript
    results: list[dict[str, Any]]  # one output line per request, in input order
    metadata: dict[str, str]
    endpoint: str
    cancelled_at: float | None = None
    written: tuple[str | None, str | None] | None = None  # (output file, error file), once done
    polled_at: list[float] = field(default_factory=list)

    def state(self, now: float) -> str:
        return STATES[phase(self.created, self.script, self.cancelled_at, now)]


@dataclass
class OpenAIBatchAPI(ScriptedJobs[OpenAIBatchJob]):
    """The batch half of a ``FakeOpenAI``. Attributes may change while it runs."""

    fake: ChatScripting
    offered: bool = True
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # id → (purpose, bytes)

    # -- routing (called by the server's handler) ----------------------------------------------
    def post(self, handler: JSONHandler, path: str, body: bytes) -> bool:
        parts = path.strip("/").split("/")
        if parts[:2] not in (["v1", "files"], ["v1", "batches"]):
            return False
        if not self.offered:
            _not_found(handler, path)
        elif parts == ["v1", "files"]:
            self._upload(handler, body)
        elif parts == ["v1", "batches"]:
            self._create(handler, body)
        elif len(parts) == 4 and parts[1] == "batches" and parts[3] == "cancel":
            self._cancel(handler, parts[2])
        else:
            _not_found(handler, path)
        return True

    def get(self, handler: JSONHandler, path: str) -> bool:
        parts = path.strip("/").split("/")
        if parts[:2] not in (["v1", "files"], ["v1", "batches"]):
            return False
        if not self.offered:
            _not_found(handler, path)
        elif parts == ["v1", "batches"]:
            with self._lock:
                jobs = list(self.jobs.values())
            data = [self._batch(job) for job in reversed(jobs)]  # newest first, as the API lists
            handler.send_json(200, {"object": "list", "data": data, "has_more": False})
        elif len(parts) == 3 and parts[1] == "batches" and parts[2] in self.jobs:
            job = self.jobs[parts[2]]
            with self._lock:
                job.polled_at.append(time.monotonic())
            handler.send_json(200, self._batch(job))
        elif len(parts) == 4 and parts[1] == "files" and parts[3] == "content" and parts[2] in self.files:
            handler.send_raw(200, self.files[parts[2]][1], "application/octet-stream")
        else:
            _not_found(handler, path)
        return True

    def delete(self, handler: JSONHandler, path: str) -> bool:
        parts = path.strip("/").split("/")
        if not self.offered or len(parts) != 3 or parts[:2] != ["v1", "files"] or parts[2] not in self.files:
            return False
        with self._lock:
            del self.files[parts[2]]
        handler.send_json(200, {"id": parts[2], "object": "file", "deleted": True})
        return True

    # -- the API ------------------------------------------------------------------------------
    def _upload(self, handler: JSONHandler, body: bytes) -> None:
        """``multipart/form-data`` with ``purpose`` and ``file``, as the SDK uploads it."""
        head = f"Content-Type: {handler.headers.get('Content-Type', '')}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + body)
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                fields[name] = (part.get_filename(), payload)
        if "file" not in fields or "purpose" not in fields:
            handler.send_json(400, error_body("file and purpose are required", "invalid_request"))
            return
        purpose = fields["purpose"][1].decode()
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        with self._lock:
            self.files[file_id] = (purpose, fields["file"][1])
        handler.send_json(
            200, _file(file_id, fields["file"][0] or "upload.jsonl", purpose, fields["file"][1])
        )

    def _create(self, handler: JSONHandler, body: bytes) -> None:
        try:
            request = json.loads(body)
            source = self.files[request["input_file_id"]]
        except (ValueError, KeyError, TypeError):
            handler.send_json(400, error_body("input_file_id is not an uploaded file", "invalid_request"))
            return
        if source[0] != "batch":
            handler.send_json(400, error_body("the input file's purpose is not batch", "invalid_request"))
            return
        batch_id = f"batch_{uuid.uuid4().hex[:24]}"
        results = []
        for line in source[1].decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            chat = self.fake._parse(item["body"], batch_id)
            status, reply, _ = self.fake._reply(chat, self.fake._record(chat))
            results.append(
                {
                    "id": f"batch_req_{uuid.uuid4().hex[:24]}",
                    "custom_id": item["custom_id"],
                    "response": {"status_code": status, "request_id": uuid.uuid4().hex, "body": reply},
                    "error": None,
                }
            )
        job = self._register(
            batch_id,
            lambda script: OpenAIBatchJob(
                batch_id,
                request["input_file_id"],
                time.monotonic(),
                script,
                results,
                dict(request.get("metadata") or {}),
                request.get("endpoint", ""),
            ),
        )
        handler.send_json(200, self._batch(job))

    def _cancel(self, handler: JSONHandler, batch_id: str) -> None:
        job = self.jobs.get(batch_id)
        if job is None:
            _not_found(handler, batch_id)
            return
        if job.state(time.monotonic()) in ("validating", "in_progress"):
            job.cancelled_at = time.monotonic()
        handler.send_json(200, self._batch(job))

    def _batch(self, job: OpenAIBatchJob) -> dict[str, Any]:
        state = job.state(time.monotonic())
        done = state in ("completed", "failed", "cancelled", "expired")
        output, errors = self._write(job, state) if done else (None, None)
        failed = sum(r["response"]["status_code"] != 200 for r in job.results)
        finished_ok = state == "completed"
        return {
            "id": job.id,
            "object": "batch",
            "endpoint": job.endpoint,
            "errors": (
                {
                    "object": "list",
                    "data": [{"code": "invalid_file", "message": "scripted validation failure"}],
                }
                if state == "failed"
                else None
            ),
            "input_file_id": job.input_file_id,
            "completion_window": "24h",
            "status": state,
            "output_file_id": output,
            "error_file_id": errors,
            "created_at": int(time.time()),
            "request_counts": {
                "total": len(job.results),
                "completed": len(job.results) - failed if finished_ok else 0,
                "failed": failed if finished_ok else 0,
            },
            "metadata": job.metadata,
        }

    def _write(self, job: OpenAIBatchJob, state: str) -> tuple[str | None, str | None]:
        """The output and error files of a finished job, written once."""
        with self._lock:
            if job.written is not None:
                return job.written
            lines: list[dict[str, Any]] = []
            if state == "completed":
                lines = tampered(job.results, job.script, "custom_id")
            elif state == "expired":  # what did not run before the window closed is in the error file
                lines = [
                    {**r, "response": None, "error": {"code": "batch_expired", "message": "window expired"}}
                    for r in job.results
                ]
            ok = [line for line in lines if (line.get("response") or {}).get("status_code") == 200]
            bad = [line for line in lines if line not in ok]
            written = []
            for chosen in (ok, bad):
                if not chosen:
                    written.append(None)
                    continue
                file_id = f"file-{uuid.uuid4().hex[:24]}"
                self.files[file_id] = ("batch_output", "".join(json.dumps(x) + "\n" for x in chosen).encode())
                written.append(file_id)
            job.written = (written[0], written[1])
            return job.written


def _file(file_id: str, name: str, purpose: str, data: bytes) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": len(data),
        "created_at": int(time.time()),
        "filename": name,
        "purpose": purpose,
        "status": "processed",
    }


def error_body(message: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}


def _not_found(handler: JSONHandler, what: str) -> None:
    handler.send_json(404, error_body(f"Not found: {what}", "not_found"))
