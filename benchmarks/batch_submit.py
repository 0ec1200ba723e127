"""Benchmark: what submitting a big sweep as batch jobs costs on the client, per provider.

A batch sweep's own work is building every request once and sending it as jobs. Gemini: inline (the
SDK converts each ``InlinedRequest`` — its per-request pydantic walk) or as a JSONL file (bodies from
the SDK's converters once per candidate, then only the image's base64 changes — ``gemini_wire``).
OpenAI: one JSONL file of Chat Completions bodies uploaded with ``purpose=batch``, then the job.
Bedrock: one JSONL file of Converse records written to S3, then ``CreateModelInvocationJob``. This
measures each on N synthetic trays against local servers in their own processes (the Gemini server;
the OpenAI server, the Bedrock control plane and moto's S3 in another), from ``create`` to the job's
name: wall time and the client's own CPU time, the jobs the provider's limits make, and the bytes per
request on the wire.

    .venv/bin/python benchmarks/batch_submit.py            # 2,000 trays
    .venv/bin/python benchmarks/batch_submit.py --quick    # 500 trays
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    ANSWER,
    Check,
    Report,
    ServerProcess,
    command_line,
    isolated_env,
    synthetic_folder,
    write_experiment,
)

TARGET_MS = 5.0  # per request: a 40,000-request sweep submits in under ~3.5 minutes of client time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="500 trays")
    args = parser.parse_args()
    images = 500 if args.quick else args.images
    report = Report("batch_submit", command_line())
    dataset = synthetic_folder(images)
    with (
        tempfile.TemporaryDirectory() as tmp,
        isolated_env(Path(tmp)),
        ServerProcess(latency_s=0.0) as server,
    ):
        from promptgrade.batch.executor import BatchExecutor
        from promptgrade.providers.gemini_batch import INLINE_LIMIT_BYTES, GeminiBatches, _inline_size
        from promptgrade.sweep import Sweep

        experiment = write_experiment(
            Path(tmp) / "exp.yaml",
            dataset=dataset,
            base_url=server.base_url,
            prompts=["meal_tray_json@1"],
            concurrency=8,
        )
        started = time.perf_counter()
        sweep = Sweep(experiment, batch=True)
        load_s = time.perf_counter() - started
        candidate = sweep.prompt_candidates[0]
        keys = {(candidate.provider, candidate.model): GeminiBatches(candidate.model, server.base_url)}
        executor = BatchExecutor(sweep.plan, sweep.dataset, [candidate], keys, None, None)  # type: ignore[arg-type]
        requests = [(key, request) for key, _, request in executor.requests(candidate)]
        keys[(candidate.provider, candidate.model)].close()
        figures: dict[str, object] = {"requests": len(requests), "dataset_load_s": load_s}
        per_request = _inline_size(requests) / len(requests)
        fits = min(len(requests), int(0.9 * INLINE_LIMIT_BYTES / per_request))  # an inline job's most
        for route, batch in (("inline", requests[:fits]), ("file", requests)):
            client = GeminiBatches(candidate.model, server.base_url, timeout_s=600)
            client.inline_limit = INLINE_LIMIT_BYTES if route == "inline" else 0  # file: forced
            started = time.perf_counter()
            name, used = client.create(batch, f"bench-{route}")
            seconds = time.perf_counter() - started
            client.close()
            assert used == route, (used, route)
            per_ms = seconds * 1000 / len(batch)
            figures[route] = {
                "job": name,
                "requests": len(batch),
                "submit_s": seconds,
                "ms_per_request": per_ms,
            }
            print(f"  {route}: {len(batch)} requests submitted in {seconds:.2f} s ({per_ms:.2f} ms each)")
        figures["inline_kib_per_request"] = per_request / 1024
        figures["inline_requests_per_job_at_most"] = fits
        with OtherServers() as servers:
            for provider, client in servers.clients(candidate.model):
                figures[provider] = submit(client, requests, f"bench-{provider}")
        report.figures = figures
        inline, file = figures["inline"], figures["file"]
        assert isinstance(inline, dict) and isinstance(file, dict)
        report.check(
            Check(
                "file route, client ms per request",
                file["ms_per_request"],
                TARGET_MS,
                "ms",
                higher=False,
                note=f"inline {inline['ms_per_request']:.2f} ms; file/inline "
                f"{file['ms_per_request'] / inline['ms_per_request']:.2f}x; "
                f"~{figures['inline_kib_per_request']:.1f} KiB per request, at most {fits} inline per job",
            )
        )
        for provider in ("openai", "bedrock"):
            measured = figures[provider]
            assert isinstance(measured, dict)
            report.check(
                Check(
                    f"{provider}, client ms per request",
                    measured["ms_per_request"],
                    TARGET_MS,
                    "ms",
                    higher=False,
                    note=f"{measured['requests']} requests in {measured['jobs']} job(s), "
                    f"{measured['client_cpu_s']:.2f} s client CPU, ~{measured['kib_per_request']:.1f} KiB per request",
                )
            )
    report.save()
    return 0


def submit(client: Any, requests: list[tuple[str, Any]], display_name: str) -> dict[str, object]:
    """One provider's jobs for ``requests``, cut by its limits as the executor cuts them, timed."""
    from promptgrade.batch.split import split
    from promptgrade.providers.batch_base import request_bytes

    sizes = [request_bytes(request) for _, request in requests]
    jobs = split(sizes, client.limits).jobs
    wall, cpu = time.perf_counter(), time.process_time()
    names = [client.create([requests[i] for i in job], f"{display_name}-{n}") for n, job in enumerate(jobs)]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    client.close()
    per_ms = wall * 1000 / len(requests)
    print(
        f"  {display_name}: {len(requests)} requests in {len(jobs)} job(s), {wall:.2f} s ({per_ms:.2f} ms each)"
    )
    return {
        "jobs": len(jobs),
        "job_names": [name for name, _ in names],
        "requests": len(requests),
        "submit_s": wall,
        "client_cpu_s": cpu,
        "ms_per_request": per_ms,
        "kib_per_request": sum(sizes) / len(sizes) / 1024,
    }


SERVERS = """
import json, sys, boto3
from moto.server import ThreadedMotoServer
from promptgrade.testing.bedrock_server import FakeBedrock
from promptgrade.testing.openai_server import FakeOpenAI
moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
moto.start()
host, port = moto.get_host_and_port()
s3 = f"http://{host}:{port}"
boto3.client("s3", endpoint_url=s3, region_name="us-east-1", aws_access_key_id="x",
             aws_secret_access_key="x").create_bucket(Bucket="bench")
answer = sys.argv[1]
with FakeOpenAI(default_answer=answer) as openai_server, FakeBedrock(default_answer=answer) as bedrock:
    bedrock.batches.s3_endpoint = s3
    print(json.dumps({"openai": openai_server.base_url, "bedrock": bedrock.endpoint_url, "s3": s3}), flush=True)
    sys.stdin.read()
moto.stop()
"""


class OtherServers:
    """The OpenAI-compatible server, the Bedrock control plane and moto's S3, in one process of their own."""

    def __enter__(self) -> OtherServers:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVERS, ANSWER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        self.urls: dict[str, str] = json.loads(self.process.stdout.readline())
        return self

    def clients(self, model: str) -> list[tuple[str, Any]]:
        from promptgrade.providers.bedrock_batch import BedrockBatches
        from promptgrade.providers.openai_batch import OpenAIBatches

        os.environ.update(
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_ENDPOINT_URL_BEDROCK=self.urls["bedrock"],
            AWS_ENDPOINT_URL_S3=self.urls["s3"],
        )
        bedrock = BedrockBatches(
            "amazon.nova-lite-v1:0",
            self.urls["bedrock"],
            timeout_s=600,
            region="us-east-1",
            batch_s3_uri="s3://bench/promptgrade",
            batch_role_arn="arn:aws:iam::123456789012:role/bench",
        )
        return [
            ("openai", OpenAIBatches("gpt-4o-mini", self.urls["openai"], timeout_s=600)),
            ("bedrock", bedrock),
        ]

    def __exit__(self, *exc: object) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


if __name__ == "__main__":
    raise SystemExit(main())
