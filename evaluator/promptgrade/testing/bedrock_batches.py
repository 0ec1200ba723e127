"""Amazon Bedrock's batch inference control plane for the local Bedrock server (``FakeBedrock.batches``).

What boto3's ``bedrock`` client sends (rest-json): ``POST /model-invocation-job`` (create), ``GET
/model-invocation-job/{jobIdentifier}`` (get), ``POST /model-invocation-job/{jobIdentifier}/stop`` and
``GET /model-invocation-jobs`` (list, with ``nameContains``). A created job reads its JSONL input from
S3 — a real S3 endpoint, moto's server, set as ``s3_endpoint`` — and each ``modelInput`` (Converse
format) is answered by the server's own scripting (answers per image, queued faults) and recorded once,
when the job is created, marked with the job's ARN. When the job ends, its output records
(``{"recordId", "modelInput", "modelOutput" | "error"}``, not in input order) and ``manifest.json.out``
are written back under ``<output s3Uri>/<job id>/``, as Bedrock writes them.

Scripted (``batch_scripts``): each job's life, its final state, results lost, invented or repeated.
Bedrock's rules are enforced as the service does: a job with fewer records than ``min_records`` fails
validation, a model in ``needs_profile`` is refused without an inference profile, the role must be an
IAM role ARN, and a repeated ``clientRequestToken`` returns the job it created before.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from promptgrade.testing.batch_scripts import JobScript, ScriptedJobs, phase, tampered

ACCOUNT = "123456789012"
STATES = {  # the script's phases in this API's words (a finished job with failed records: partial)
    "PENDING": "Submitted",
    "RUNNING": "InProgress",
    "SUCCEEDED": "Completed",
    "FAILED": "Failed",
    "CANCELLED": "Stopped",
    "EXPIRED": "Expired",
}
_ROLE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/\S+$")
_S3 = re.compile(r"^s3://([^/]+)/?(.*)$")


class ConverseScripting(Protocol):
    """What the jobs use of the server they belong to (a ``FakeBedrock``)."""

    def _parse(self, model_id: str, body: dict[str, Any], batch_job: str | None) -> Any: ...

    def _record(self, request: Any) -> Any: ...

    def _reply(self, request: Any, fault: Any) -> tuple[int, dict[str, Any], str | None]: ...


class Replies(Protocol):
    """The handler's replies: JSON, or a rest-json error (``x-amzn-ErrorType``)."""

    def send_json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None: ...

    def error(self, status: int, error_type: str, message: str) -> None: ...


@dataclass
class InvocationJob:
    arn: str
    request: dict[str, Any]  # the create request's body, as sent
    created: float
    script: JobScript
    results: list[dict[str, Any]]  # one output record per input record, in input order
    message: str | None = None  # why validation failed (then the job fails, whatever its script)
    cancelled_at: float | None = None
    written: bool = False
    polled_at: list[float] = field(default_factory=list)

    @property
    def job_id(self) -> str:
        return self.arn.rsplit("/", 1)[-1]

    def status(self, now: float) -> str:
        current = phase(self.created, self.script, self.cancelled_at, now)
        if self.message is not None and current not in ("PENDING", "CANCELLED"):
            return "Failed"
        if current == "SUCCEEDED" and any("error" in r for r in self.results):
            return "PartiallyCompleted"
        return STATES[current]


@dataclass
class BedrockBatchAPI(ScriptedJobs[InvocationJob]):
    """The batch half of a ``FakeBedrock``. Attributes may change while it runs."""

    fake: ConverseScripting
    s3_endpoint: str | None = None  # where jobs read and write (moto's server in tests)
    region: str = "us-east-1"
    min_records: int = 100  # "Minimum number of records per batch inference job"
    needs_profile: set[str] = field(default_factory=set)  # model ids refused without an inference profile
    report_counts: bool = False  # record counts in GetModelInvocationJob (else only in the manifest)
    _client: Any = None  # the S3 client (``_s3``)

    def _s3(self) -> Any:
        """One S3 client for the server's life (``close`` releases it): a client per call would leave
        its pooled connections to be closed whenever the garbage collector gets to them."""
        with self._lock:
            if self._client is None:
                import boto3  # only a test of batch jobs needs it: the Converse half is standard library

                self._client = boto3.client(
                    "s3",
                    endpoint_url=self.s3_endpoint,
                    region_name=self.region,
                    aws_access_key_id="testing",
                    aws_secret_access_key="testing",
                )
            return self._client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- routing (called by the server's handler) ----------------------------------------------
    def post(self, handler: Replies, path: str, body: bytes) -> bool:
        if path == "/model-invocation-job":
            self._create(handler, json.loads(body or b"{}"))
            return True
        if path.startswith("/model-invocation-job/") and path.endswith("/stop"):
            job = self._job(path.removeprefix("/model-invocation-job/").removesuffix("/stop"))
            if job is None:
                handler.error(404, "ResourceNotFoundException", "The specified job was not found.")
            else:
                if job.status(time.monotonic()) in ("Submitted", "InProgress"):
                    job.cancelled_at = time.monotonic()
                handler.send_json(200, {})
            return True
        return False

    def get(self, handler: Replies, path: str) -> bool:
        if path == "/model-invocation-jobs":
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(getattr(handler, "path", "")).query)
            contains = query.get("nameContains", [""])[0]
            with self._lock:
                jobs = [j for j in self.jobs.values() if contains in j.request.get("jobName", "")]
            handler.send_json(200, {"invocationJobSummaries": [self._describe(job) for job in jobs]})
            return True
        if path.startswith("/model-invocation-job/"):
            job = self._job(path.removeprefix("/model-invocation-job/"))
            if job is None:
                handler.error(404, "ResourceNotFoundException", "The specified job was not found.")
            else:
                with self._lock:
                    job.polled_at.append(time.monotonic())
                handler.send_json(200, self._describe(job))
            return True
        return False

    def _job(self, identifier: str) -> InvocationJob | None:
        identifier = urllib.parse.unquote(identifier)
        with self._lock:
            return next((j for j in self.jobs.values() if identifier in (j.arn, j.job_id)), None)

    # -- the API ------------------------------------------------------------------------------
    def _create(self, handler: Replies, request: dict[str, Any]) -> None:
        model = str(request.get("modelId", ""))
        token = request.get("clientRequestToken")
        with self._lock:
            repeated = next(
                (j for j in self.jobs.values() if token and j.request.get("clientRequestToken") == token),
                None,
            )
        if repeated is not None:  # idempotent: the job this token created
            handler.send_json(200, {"jobArn": repeated.arn})
            return
        if model in self.needs_profile:
            handler.error(
                400,
                "ValidationException",
                f"Invocation of model ID {model} with on-demand throughput isn't supported. Retry your request "
                "with the ID or ARN of an inference profile that contains this model.",
            )
            return
        if not _ROLE.match(str(request.get("roleArn", ""))):
            handler.error(400, "ValidationException", "roleArn is not a valid IAM role ARN")
            return
        arn = f"arn:aws:bedrock:{self.region}:{ACCOUNT}:model-invocation-job/{uuid.uuid4().hex[:12]}"
        records, message = self._read_input(request)
        if message is None and len(records) < self.min_records:
            message = (
                f"The number of records ({len(records)}) is below the minimum of {self.min_records} records per "
                "batch inference job."
            )
        results = [] if message is not None else [self._run(model, arn, record) for record in records]
        self._register(
            arn, lambda script: InvocationJob(arn, request, time.monotonic(), script, results, message)
        )
        handler.send_json(200, {"jobArn": arn})

    def _read_input(self, request: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        uri = str(request.get("inputDataConfig", {}).get("s3InputDataConfig", {}).get("s3Uri", ""))
        found = _S3.match(uri)
        if found is None:
            return [], f"The input S3 URI {uri!r} is not valid."
        try:
            data = self._s3().get_object(Bucket=found[1], Key=found[2])["Body"].read()
        except Exception as exc:  # any S3 refusal: the job fails validation, as Bedrock's does
            return [], f"Unable to read the input data at {uri}: {exc}"
        return [json.loads(line) for line in data.decode().splitlines() if line.strip()], None

    def _run(self, model: str, arn: str, record: dict[str, Any]) -> dict[str, Any]:
        request = self.fake._parse(model, record["modelInput"], arn)
        status, reply, error_type = self.fake._reply(request, self.fake._record(request))
        out = {"recordId": record.get("recordId", uuid.uuid4().hex[:11]), "modelInput": record["modelInput"]}
        if error_type is None:
            return {**out, "modelOutput": reply}
        return {
            **out,
            "error": {"errorCode": status, "errorMessage": f"{error_type}: {reply.get('message')}"},
        }

    def _describe(self, job: InvocationJob) -> dict[str, Any]:
        status = job.status(time.monotonic())
        if status in ("Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"):
            self._write(job, status)
        request = job.request
        described: dict[str, Any] = {
            "jobArn": job.arn,
            "jobName": request.get("jobName"),
            "modelId": request.get("modelId"),
            "clientRequestToken": request.get("clientRequestToken"),
            "roleArn": request.get("roleArn"),
            "status": status,
            "submitTime": _timestamp(job.created),
            "lastModifiedTime": _timestamp(time.monotonic()),
            "inputDataConfig": request.get("inputDataConfig"),
            "outputDataConfig": request.get("outputDataConfig"),
            "modelInvocationType": request.get("modelInvocationType", "InvokeModel"),
        }
        if status == "Failed":
            described["message"] = job.message or "scripted failure"
        if self.report_counts:
            described.update(_counts(job.results if status in ("Completed", "PartiallyCompleted") else []))
        return described

    def _write(self, job: InvocationJob, status: str) -> None:
        """The job's output records and manifest, written once under ``<output s3Uri>/<job id>/``."""
        with self._lock:
            if job.written:
                return
            job.written = True
        uri = str(job.request.get("outputDataConfig", {}).get("s3OutputDataConfig", {}).get("s3Uri", ""))
        found = _S3.match(uri)
        if found is None:
            return
        bucket, prefix = found[1], "/".join(p for p in (found[2].strip("/"), job.job_id) if p)
        answered = job.results if status in ("Completed", "PartiallyCompleted") else []
        lines = list(reversed(tampered(answered, job.script, "recordId")))  # Bedrock keeps no order
        input_uri = str(job.request.get("inputDataConfig", {}).get("s3InputDataConfig", {}).get("s3Uri", ""))
        name = input_uri.rsplit("/", 1)[-1] or "input.jsonl"
        s3 = self._s3()
        if lines:
            body = "".join(json.dumps(line) + "\n" for line in lines).encode()
            s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}.out", Body=body)
        s3.put_object(
            Bucket=bucket, Key=f"{prefix}/manifest.json.out", Body=json.dumps(_counts(answered)).encode()
        )


def _counts(results: list[dict[str, Any]]) -> dict[str, int]:
    errors = sum("error" in r for r in results)
    return {
        "totalRecordCount": len(results),
        "processedRecordCount": len(results),
        "successRecordCount": len(results) - errors,
        "errorRecordCount": errors,
    }


def _timestamp(monotonic: float) -> str:
    wall = time.time() - (time.monotonic() - monotonic)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))
