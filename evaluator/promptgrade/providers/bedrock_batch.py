"""Amazon Bedrock batch inference through boto3's ``bedrock`` and ``s3`` clients.

A job is one JSONL file of ``{"recordId", "modelInput"}`` records under the model's ``batch_s3_uri``
(``<prefix>/<display name>/input/records.jsonl``), created with ``CreateModelInvocationJob`` as the
service role ``batch_role_arn`` and ``modelInvocationType="Converse"``: each ``modelInput`` is the
online provider's own Converse request (``bedrock.converse_arguments``: every part in order, the image
as bytes — base64 in JSON — the forced tool for structured output) without the model id, which the
job names. ``recordId`` is the request's cache key, so the answers, read back from the job's output
prefix (``<prefix>/<display name>/output/<job id>/…jsonl.out``) by ``recordId`` — Bedrock does not
keep the input's order — go into the answer cache under the online keys. A record with ``error``
instead of ``modelOutput`` is that request's ``batch_failed`` error. The job's
``manifest.json.out`` counts (or ``GetModelInvocationJob``'s) are the counts shown while waiting.

Bedrock's documented limits, per model quota: at least 100 records per job (the lab's
``PROMPTGRADE_BEDROCK_BATCH_MIN_RECORDS``, for an account whose quota differs), at most 50,000 records
per job and per file, at most 1 GB per input file. The executor splits by them before anything is
uploaded and holds back a set smaller than the minimum.

Credentials, region and endpoints come from the AWS chain as for the online provider
(``AWS_ENDPOINT_URL_BEDROCK`` and ``AWS_ENDPOINT_URL_S3`` are botocore's own); this module never
retries the control plane (``CreateModelInvocationJob`` carries the journal's display name as its
``clientRequestToken`` too, so even a retried create is one job).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import botocore.config
import botocore.exceptions

from promptgrade.errors import ProviderError
from promptgrade.providers.base import Completion, CompletionRequest, ErrorInfo, ErrorKind
from promptgrade.providers.batch_base import (
    CANCELLED,
    COUNT_FAILED,
    COUNT_REQUESTS,
    COUNT_SUCCEEDED,
    EXPIRED,
    FAILED,
    PARTIALLY_SUCCEEDED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    BatchAPIError,
    BatchLimits,
    BatchResult,
    JobStatus,
    jsonl_objects,
)
from promptgrade.providers.bedrock import (
    _one_line,
    aws_session,
    client_error,
    completion_of,
    converse_arguments,
)

MIN_RECORDS = 100  # "Minimum number of records per batch inference job" (a per-model quota's default)
MAX_RECORDS = 50_000  # "Records per batch inference job" and "Records per input file per batch inference job"
MAX_FILE_BYTES = 1024**3  # "Batch inference input file size": 1 GB
INPUT_FILE = "records.jsonl"
MANIFEST = "manifest.json.out"
STATES = {
    "Submitted": PENDING,
    "Validating": PENDING,
    "Scheduled": PENDING,
    "InProgress": RUNNING,
    "Stopping": RUNNING,
    "Completed": SUCCEEDED,
    "PartiallyCompleted": PARTIALLY_SUCCEEDED,
    "Failed": FAILED,
    "Stopped": CANCELLED,
    "Expired": EXPIRED,
}
_S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<prefix>.*))?$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/\S+$")
_AWS_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)


def check_fields(model: str, batch_s3_uri: str | None, batch_role_arn: str | None) -> tuple[str, str]:
    """The S3 bucket and prefix of ``batch_s3_uri``; one line naming the model and what to set if
    either field is missing or malformed."""
    if not batch_s3_uri:
        raise ProviderError(
            f"{model}: Bedrock batch jobs read and write S3: set batch_s3_uri (s3://bucket/prefix) on the model"
        )
    if not batch_role_arn:
        raise ProviderError(
            f"{model}: Bedrock batch jobs run as a service role that can read and write batch_s3_uri: set "
            "batch_role_arn (arn:aws:iam::<account>:role/<name>) on the model"
        )
    found = _S3_URI.match(batch_s3_uri)
    if found is None:
        raise ProviderError(f"{model}: batch_s3_uri {batch_s3_uri!r} is not an S3 URI: s3://bucket/prefix")
    if _ROLE_ARN.match(batch_role_arn) is None:
        raise ProviderError(
            f"{model}: batch_role_arn {batch_role_arn!r} is not an IAM role ARN: "
            "arn:aws:iam::<account>:role/<name>"
        )
    return found["bucket"], (found["prefix"] or "").strip("/")


class BedrockBatches:
    """One model's batch inference jobs in one region; synchronous."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        timeout_s: float = 120,
        region: str | None = None,
        batch_s3_uri: str | None = None,
        batch_role_arn: str | None = None,
        min_records: int = MIN_RECORDS,
    ) -> None:
        """``base_url`` is the model's online (``bedrock-runtime``) endpoint: the answers' keys carry it.
        The control plane and S3 are reached where the AWS chain says."""
        self.bucket, self.prefix = check_fields(model, batch_s3_uri, batch_role_arn)
        self.model = model
        self.base_url = base_url
        self.role_arn = str(batch_role_arn)
        self.min_records = min_records
        session = aws_session(model, region)
        control = botocore.config.Config(
            retries={"total_max_attempts": 1, "mode": "standard"},  # polling policy is the executor's
            connect_timeout=min(timeout_s, 10),
            read_timeout=timeout_s,
        )
        self._bedrock = session.client("bedrock", config=control)
        self._s3 = session.client("s3", config=botocore.config.Config(read_timeout=timeout_s))

    @property
    def limits(self) -> BatchLimits:
        return BatchLimits(max_requests=MAX_RECORDS, max_bytes=MAX_FILE_BYTES, min_requests=self.min_records)

    def _key(self, *parts: str) -> str:
        return "/".join(part for part in (self.prefix, *parts) if part)

    # -- submitting ---------------------------------------------------------------------------
    def create(self, requests: list[tuple[str, CompletionRequest]], display_name: str) -> tuple[str, str]:
        """Write the records to S3, then create the job; returns (job ARN, "s3")."""
        data = b"".join(
            json.dumps({"recordId": key, "modelInput": model_input(self.model, request)}).encode() + b"\n"
            for key, request in requests
        )
        input_key = self._key(display_name, "input", INPUT_FILE)
        try:
            self._s3.put_object(Bucket=self.bucket, Key=input_key, Body=data)
        except _AWS_ERRORS as exc:
            raise self._s3_error(exc) from None
        try:
            created = self._bedrock.create_model_invocation_job(
                jobName=display_name,
                roleArn=self.role_arn,
                clientRequestToken=display_name,  # a create retried by anyone is still one job
                modelId=self.model,
                modelInvocationType="Converse",
                inputDataConfig={
                    "s3InputDataConfig": {
                        "s3Uri": f"s3://{self.bucket}/{input_key}",
                        "s3InputFormat": "JSONL",
                    }
                },
                outputDataConfig={
                    "s3OutputDataConfig": {
                        "s3Uri": f"s3://{self.bucket}/{self._key(display_name, 'output')}/"
                    }
                },
            )
        except _AWS_ERRORS as exc:
            raise self._error("creating a batch inference job", exc) from None
        return str(created["jobArn"]), "s3"

    # -- following ----------------------------------------------------------------------------
    def find(self, display_name: str) -> str | None:
        """The job named ``display_name``, if Bedrock has one (a create cut short by a kill)."""
        try:
            pages = self._bedrock.get_paginator("list_model_invocation_jobs").paginate(
                nameContains=display_name
            )
            for page in pages:
                for job in page.get("invocationJobSummaries", []):
                    if job.get("jobName") == display_name:
                        return str(job["jobArn"])
        except _AWS_ERRORS as exc:
            raise self._error("listing batch inference jobs", exc) from None
        return None

    def status(self, name: str) -> JobStatus:
        return self._status(name, self._get(name))

    def cancel(self, name: str) -> None:
        try:
            self._bedrock.stop_model_invocation_job(jobIdentifier=name)
        except _AWS_ERRORS as exc:
            raise self._error(f"stopping {name}", exc) from None

    def results(self, name: str) -> tuple[JobStatus, list[BatchResult]]:
        """The job's status and every record of its output files, by ``recordId``."""
        job = self._get(name)
        status = self._status(name, job)
        out: list[BatchResult] = []
        if not status.done:
            return status, out
        for key in self._output_files(job, name):
            try:
                data = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except _AWS_ERRORS as exc:
                raise self._error(f"reading s3://{self.bucket}/{key}", exc) from None
            out.extend(
                BatchResult(str(line.get("recordId", "")), _answer(line)) for line in jsonl_objects(data)
            )
        return status, out

    def _get(self, name: str) -> dict[str, Any]:
        try:
            job: dict[str, Any] = self._bedrock.get_model_invocation_job(jobIdentifier=name)
        except _AWS_ERRORS as exc:
            raise self._error(f"reading {name}", exc) from None
        return job

    def _status(self, name: str, job: dict[str, Any]) -> JobStatus:
        """The job's state and counts: ``GetModelInvocationJob``'s, else its ``manifest.json.out``'s."""
        counts = {
            COUNT_REQUESTS: job.get("totalRecordCount"),
            COUNT_SUCCEEDED: job.get("successRecordCount"),
            COUNT_FAILED: job.get("errorRecordCount"),
        }
        if counts[COUNT_REQUESTS] is None:
            counts = self._manifest(job, name)
        stats = {k: int(v) for k, v in counts.items() if isinstance(v, int)}
        return JobStatus(name, STATES.get(str(job.get("status")), PENDING), stats, job.get("message") or None)

    def _output_prefix(self, job: dict[str, Any], name: str) -> tuple[str, str]:
        """(bucket, key prefix) of the job's output: ``<outputDataConfig s3Uri>/<job id>/``."""
        uri = str(job.get("outputDataConfig", {}).get("s3OutputDataConfig", {}).get("s3Uri", ""))
        found = _S3_URI.match(uri)
        bucket, prefix = (found["bucket"], (found["prefix"] or "").strip("/")) if found else (self.bucket, "")
        return bucket, "/".join(p for p in (prefix, name.rsplit("/", 1)[-1]) if p) + "/"

    def _manifest(self, job: dict[str, Any], name: str) -> dict[str, Any]:
        bucket, prefix = self._output_prefix(job, name)
        try:
            data = self._s3.get_object(Bucket=bucket, Key=prefix + MANIFEST)["Body"].read()
        except _AWS_ERRORS:
            return {}  # not written yet: the job is still running
        manifest = next(jsonl_objects(data), {})
        return {
            COUNT_REQUESTS: manifest.get("totalRecordCount"),
            COUNT_SUCCEEDED: manifest.get("successRecordCount"),
            COUNT_FAILED: manifest.get("errorRecordCount"),
        }

    def _output_files(self, job: dict[str, Any], name: str) -> list[str]:
        bucket, prefix = self._output_prefix(job, name)
        keys: list[str] = []
        try:
            for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                keys.extend(
                    item["Key"] for item in page.get("Contents", []) if item["Key"].endswith(".jsonl.out")
                )
        except _AWS_ERRORS as exc:
            raise self._error(f"listing s3://{bucket}/{prefix}", exc) from None
        return sorted(keys)

    # -- errors -------------------------------------------------------------------------------
    def _error(self, doing: str, exc: Exception) -> BatchAPIError:
        if isinstance(exc, botocore.exceptions.ClientError):
            info = client_error(exc)
            if "inference profile" in info.message.lower():
                return BatchAPIError(
                    f"{self.model}: Bedrock runs this model's batch jobs only through an inference profile: set "
                    f"model to the profile's id (e.g. us.{self.model}) — {info.message}",
                    info,
                )
        elif isinstance(exc, botocore.exceptions.ReadTimeoutError | botocore.exceptions.ConnectTimeoutError):
            info = ErrorInfo(ErrorKind.TIMEOUT, _one_line(str(exc)))
        else:
            info = ErrorInfo(ErrorKind.CONNECTION, _one_line(f"{type(exc).__name__}: {exc}"))
        return BatchAPIError(f"{self.model}: {doing}: {info.message}", info)

    def _s3_error(self, exc: Exception) -> BatchAPIError:
        """Writing the records failed: a bucket that does not exist or refuses access is the user's to fix."""
        error = self._error(f"writing the records to s3://{self.bucket}/{self.prefix}", exc)
        code = (
            str(exc.response.get("Error", {}).get("Code", ""))
            if isinstance(exc, botocore.exceptions.ClientError)
            else ""
        )
        if code == "NoSuchBucket":
            reason = "does not exist"
        elif code in ("AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            reason = "refuses access"
        else:
            return error
        return BatchAPIError(
            f"{self.model}: the S3 bucket {self.bucket!r} of batch_s3_uri {reason}: set batch_s3_uri to a bucket "
            "these credentials can write (and batch_role_arn's role can read and write)",
            error.info,
        )

    def close(self) -> None:
        self._bedrock.close()
        self._s3.close()


def model_input(model: str, request: CompletionRequest) -> dict[str, Any]:
    """The online Converse request as a batch record's ``modelInput``: the JSON Converse takes, without
    the model id (the job names it), image bytes in base64 as on the wire."""
    structured = request.settings.structured_output and request.response_schema is not None
    arguments = converse_arguments(model, request, tools=structured)
    del arguments["modelId"]
    for message in arguments["messages"]:
        for block in message["content"]:
            if "image" in block:
                source = block["image"]["source"]
                source["bytes"] = base64.b64encode(source["bytes"]).decode("ascii")
    return arguments


def _answer(line: dict[str, Any]) -> Completion:
    """One output record: the Converse answer, or why the job did not answer this request."""
    output = line.get("modelOutput")
    if isinstance(output, dict) and not line.get("error"):
        return completion_of(output, 0.0)
    error = line.get("error") or {}
    if isinstance(error, dict):
        code, message = error.get("errorCode"), error.get("errorMessage")
    else:
        code, message = None, str(error)
    text = _one_line(f"{code or ''} {message or 'neither an answer nor an error'}")
    if "tool" in text.lower():  # AWS documents batch inference without tool use for some models
        text += "; sweep this model with structured_output: false, or online"
    return Completion(
        text=None,
        error=ErrorInfo(
            ErrorKind.BATCH_FAILED,
            f"the batch job failed this request: {text}",
            code if isinstance(code, int) else None,
        ),
    )
