"""Each provider's local server with its batch half, started and scripted for the batch story.

``batch_server(name, …)`` serves one provider (``provider_servers.serve``), scripts its answers (right
for the first half of the trays, wrong for the rest, as ``helpers.e2e`` does) and sets what its batch
jobs need: for Bedrock, the control plane's endpoint (the same local server), S3 at a moto server with
a bucket, a prefix of the block's own and a service role; for Gemini and OpenAI nothing more (the
model's endpoint reaches their batch APIs too). ``BatchServer`` counts what the server saw — requests
carried by batch jobs, online calls, jobs created — so "never sent twice" and "0 online calls" are
counted at the server. ``kill_9_while_waiting`` kills a sweep run as its own process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from helpers import ROOT
from helpers.e2e import script_answers, truth_of
from helpers.provider_servers import serve
from promptgrade.testing.batch_scripts import JobScript

BATCH_PROVIDERS = ("gemini", "bedrock", "openai")
# priced models (experiments/prices.yaml), so cost_usd can be checked against the batch price
MODELS = {"gemini": "gemini-2.5-flash", "bedrock": "amazon.nova-lite-v1:0", "openai": "gpt-4o-mini"}
# batch_input, batch_output per 1M tokens: half the online price
PRICES = {"gemini": (0.15, 1.25), "bedrock": (0.03, 0.12), "openai": (0.075, 0.30)}
GEMINI_BATCH_PATH = ":batchGenerateContent"  # how the Gemini server records a job's requests
BUCKET = "promptgrade-batches"
ROLE = "arn:aws:iam::123456789012:role/promptgrade-batch"

EXPERIMENT = """\
name: {name}
task: {root}/experiments/tasks/meal_tray.yaml
prompts_dir: {root}/prompts
prices: {root}/experiments/prices.yaml
dataset: {{kind: folder, path: {root}/data/sample, split: test, limit: {n}, image_max_side: 256}}
prompts:
  - meal_tray_freetext@1
  - meal_tray_json@1
models:
  - provider: {provider}
    model: {model}
    base_url: {endpoint}
{fields}    settings: {{temperature: 0.0, max_output_tokens: 256}}
concurrency: 4
max_retries: 2
"""


@dataclass
class BatchServer:
    """One provider's started server, what its models need, and counters from a starting point."""

    name: str
    server: Any  # FakeGemini, FakeBedrock or FakeOpenAI
    endpoint: str
    fields: dict[str, str] = field(default_factory=dict)  # the model's provider and batch fields
    start_requests: int = 0
    start_jobs: int = 0

    @property
    def batches(self) -> Any:
        return self.server.batches

    @property
    def model(self) -> str:
        return MODELS[self.name]

    def mark(self) -> None:
        """Count from now on."""
        self.start_requests, self.start_jobs = len(self.server.requests), self.batches.created

    def batch(self) -> list[Any]:
        return [r for r in self.server.requests[self.start_requests :] if is_batch(r)]

    def online(self) -> list[Any]:
        return [r for r in self.server.requests[self.start_requests :] if not is_batch(r)]

    def jobs(self) -> int:
        return int(self.batches.created) - self.start_jobs

    def new_jobs(self) -> list[Any]:
        return list(self.batches.jobs.values())[self.start_jobs :]

    def sent_once(self) -> bool:
        """Each (prompt, image) the batch jobs carried, carried once."""
        sent = [(r.prompt, r.image_sha256) for r in self.batch()]
        return len(sent) == len(set(sent))

    def experiment(
        self, folder: Path, name: str, *, n: int, batch: bool = True, json_only: bool = False, **fields: str
    ) -> Path:
        """Both e2e prompts (or the JSON one) on the first ``n`` sample trays, with this provider's model."""
        entries = {**self.fields, **fields, **({"batch": "true"} if batch else {})}
        text = EXPERIMENT.format(
            name=name,
            root=ROOT,
            n=n,
            provider=self.name,
            model=self.model,
            endpoint=self.endpoint,
            fields="".join(f"    {key}: {value}\n" for key, value in entries.items()),
        )
        if json_only:
            text = text.replace("  - meal_tray_freetext@1\n", "")
        path = folder / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    def cost(self, metrics: dict[str, float]) -> float:
        """The batch price of a run's tokens."""
        price_in, price_out = PRICES[self.name]
        return (metrics["input_tokens"] * price_in + metrics["output_tokens"] * price_out) / 1e6


def job_name(job: Any) -> str:
    """A local server's job by the name the client knows it by (Gemini's, a Bedrock ARN, an OpenAI id)."""
    return str(getattr(job, "arn", None) or getattr(job, "name", None) or job.id)


def is_batch(request: Any) -> bool:
    """Whether a batch job carried the request (else it was an online call)."""
    path = str(getattr(request, "path", ""))
    return getattr(request, "batch_job", None) is not None or path.endswith(GEMINI_BATCH_PATH)


def is_structured(request: Any) -> bool:
    """Whether a request asked for the JSON schema: Gemini's response schema, OpenAI's response_format,
    Bedrock's forced tool."""
    return any(
        getattr(request, name, None) not in (None, False)
        for name in ("has_response_schema", "response_format", "tool_config")
    )


@contextlib.contextmanager
def batch_server(
    name: str, monkeypatch: pytest.MonkeyPatch, moto_server: str, folder: Path, n: int
) -> Iterator[BatchServer]:
    """The provider's local server answering the first ``n`` sample trays (right for their first half),
    its batch jobs quick (ending in a fraction of a second) and polled often, and — for Bedrock — S3 at
    ``moto_server`` with a bucket and a prefix of this block's own; counting from the block's start."""
    monkeypatch.setenv("PROMPTGRADE_BATCH_POLL_S", "0.05")
    for variable in (
        "AWS_ENDPOINT_URL_BEDROCK",
        "AWS_ENDPOINT_URL_S3",
        "PROMPTGRADE_BATCH_MAX_REQUESTS",
        "PROMPTGRADE_BATCH_INLINE_BYTES",
    ):
        monkeypatch.delenv(variable, raising=False)
    with serve(name, monkeypatch=monkeypatch) as (served,):
        server = served.server
        server.batches.default_script = JobScript(pending_s=0.05, running_s=0.1)
        fields: dict[str, str] = {}
        if name == "bedrock":
            monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK", served.endpoint)
            monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
            monkeypatch.setenv("PROMPTGRADE_BEDROCK_BATCH_MIN_RECORDS", "1")  # a test's jobs hold a dozen
            server.batches.s3_endpoint = moto_server
            server.batches.min_records = 1
            with (
                contextlib.closing(
                    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
                ) as s3,
                contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou),
            ):
                s3.create_bucket(Bucket=BUCKET)
            fields = {
                "region": str(served.spec_fields["region"]),
                "batch_s3_uri": f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}",
                "batch_role_arn": ROLE,
            }
        batch = BatchServer(name, server, served.endpoint, fields)
        script_answers(server, truth_of(batch.experiment(folder, "truth", n=n)), structured=is_structured)
        batch.mark()
        yield batch


def objects(moto_server: str, prefix: str) -> dict[str, bytes]:
    """Every S3 object under ``s3://BUCKET/prefix``, by key."""
    with contextlib.closing(boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")) as s3:
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
        return {item["Key"]: s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read() for item in listed}


def jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def journalled(cache: Path) -> int:
    """Jobs the batch journal beside ``cache`` holds with a name (created at the API)."""
    path = cache.with_name(f"{cache.stem}.batches{cache.suffix}")
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path) as db:
            return int(db.execute("SELECT COUNT(*) FROM jobs WHERE name IS NOT NULL").fetchone()[0])
    except sqlite3.OperationalError:  # created, its tables not yet
        return 0


def kill_9_while_waiting(path: Path, tracking: str, jobs: int, polled: Callable[[], bool]) -> None:
    """``promptgrade sweep PATH`` in its own process, killed with SIGKILL once ``jobs`` jobs are
    journalled and ``polled()`` says the sweep is waiting on them (the server saw a poll)."""
    cache = Path(os.environ["PROMPTGRADE_CACHE"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "COLUMNS": "200"}
    process = subprocess.Popen(
        [sys.executable, "-m", "promptgrade.cli", "sweep", str(path), "--tracking-uri", tracking],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while journalled(cache) < jobs or not polled():  # waiting
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            assert time.monotonic() < deadline, "the sweep never started waiting"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
