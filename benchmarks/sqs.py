"""Benchmark 12: the SQS path — records per second per function instance, and model calls per record.

A stream of N records (S3 event notifications for N distinct trays) goes through the real handler as
the Lambda service delivers it: SQS events of BATCH messages, one invocation after another, as one
function instance receives them. S3 is moto (in process), the model the local Gemini-REST server
(google-genai over loopback HTTP) at a fixed latency, counting every call it receives.

Two passes, each into a fresh results prefix:

* **clean**: every message once. Model calls per record must be exactly 1.00.
* **redelivered**: 5 % of the messages delivered a second time — SQS is at-least-once, and a message
  whose visibility timeout ran out comes back — half of them in the same batch, half in a later one.
  Calls per record must stay ≤ 1.01 (the function finds the stored result, or waits for the grading
  already in flight).

Records per second per instance is set by the model's latency and how many trays an instance grades
at once (PROMPTGRADE_SQS_CONCURRENCY, 4): the bound is concurrency / latency; the target is half of it,
the rest being S3 round trips (moto's, in this process) and the handler.

    .venv/bin/python benchmarks/sqs.py                      # 1,000 records, 100 ms model latency
    .venv/bin/python benchmarks/sqs.py --records 200 --latency 0.05
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ANSWER, REPO, Check, Report, command_line, load_note

from promptgrade.testing.sqs_events import sqs_record

BUCKET_IN, BUCKET_OUT = "bench-trays", "bench-graded"
REGION = "eu-west-1"


def tray(n: int) -> bytes:
    """A small distinct JPEG per record (its bytes, hence its sha256, differ)."""
    from io import BytesIO

    from PIL import Image

    image = Image.new("RGB", (96, 72), (n % 256, (n // 256) * 37 % 256, (n * 7) % 256))
    image.putpixel((n % 96, (n // 96) % 72), (255, 255, 255))
    out = BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def notification(key: str, size: int) -> str:
    return json.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "awsRegion": REGION,
                    "eventName": "ObjectCreated:Put",
                    "s3": {"bucket": {"name": BUCKET_IN}, "object": {"key": key, "size": size}},
                }
            ]
        }
    )


def deliveries(
    messages: list[tuple[str, str]], batch: int, redelivery: float, seed: int
) -> list[list[dict[str, Any]]]:
    """The batches an instance receives: every message once, and a share of them again (half in the
    same batch, half in a later one), with the receive count SQS gives a second delivery."""
    batches = [
        [sqs_record(body, message_id=mid) for mid, body in messages[i : i + batch]]
        for i in range(0, len(messages), batch)
    ]
    rng = random.Random(seed)
    for index in rng.sample(range(len(messages)), round(len(messages) * redelivery)):
        mid, body = messages[index]
        home = index // batch
        target = home if rng.random() < 0.5 else rng.randrange(home, len(batches))
        batches[target].append(sqs_record(body, message_id=mid, receive_count=2))
    return batches


def run_pass(
    batches: list[list[dict[str, Any]]], warm_up: dict[str, Any], prefix: str, gemini: Any
) -> dict[str, float]:
    """One instance receiving ``batches`` in turn, after a warm-up invocation (one tray not in the
    stream: the cold start is not the stream's, and its call is not counted)."""
    from lambda_handler import app

    os.environ["PROMPTGRADE_OUTPUT_PREFIX"] = prefix
    app.reset()
    app.handler({"Records": [warm_up]}, None)
    calls_before = gemini.calls
    started = time.perf_counter()
    failures = 0
    for batch in batches:
        failures += len(app.handler({"Records": batch}, None)["batchItemFailures"])
    seconds = time.perf_counter() - started
    delivered = sum(len(b) for b in batches)
    return {
        "seconds": seconds,
        "delivered": delivered,
        "records_per_s": delivered / seconds,
        "model_calls": gemini.calls - calls_before,
        "batch_item_failures": failures,
    }


def bundle(folder: Path) -> Path:
    """The released meal-tray JSON prompt, promoted as `promote` writes it."""
    from promptgrade.bundle import Manifest, PromptInfo, write_bundle
    from promptgrade.prompts import PromptLibrary
    from promptgrade.task import load_task

    prompt = PromptLibrary(REPO / "prompts").get("meal_tray_json", 1)
    manifest = Manifest(
        prompt=PromptInfo(name=prompt.name, version=prompt.version, sha256=prompt.sha256),
        model="gemini-2.5-flash",
        task=load_task(REPO / "experiments" / "tasks" / "meal_tray.yaml"),
    )
    return write_bundle(folder, prompt, manifest)


def environment(tmp: Path, base_url: str) -> None:
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_CONFIG_FILE="/dev/null",
        PROMPTGRADE_BUNDLE_DIR=str(bundle(tmp / "bundle")),
        PROMPTGRADE_API_KEY_SECRET_ID="promptgrade/gemini-api-key",
        PROMPTGRADE_GEMINI_BASE_URL=base_url,
        PROMPTGRADE_OUTPUT_BUCKET=BUCKET_OUT,
        PROMPTGRADE_INPUT_BUCKETS=BUCKET_IN,
        AWS_LAMBDA_LOG_LEVEL="WARNING",  # a line per tray would be the benchmark's own I/O
    )
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL"):
        os.environ.pop(name, None)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.1, help="the model's fixed latency, seconds")
    parser.add_argument(
        "--batch", type=int, default=10, help="messages per invocation (the mapping's BatchSize)"
    )
    parser.add_argument(
        "--redelivery", type=float, default=0.05, help="share delivered twice in the 2nd pass"
    )
    args = parser.parse_args()
    report = Report("sqs", command_line())
    print(
        f"SQS path: {args.records} records, {args.latency * 1000:.0f} ms model latency ({load_note()})",
        flush=True,
    )

    import boto3
    from moto import mock_aws

    from promptgrade.testing.gemini_server import FakeGemini

    with (
        tempfile.TemporaryDirectory() as folder,
        FakeGemini(default_answer=ANSWER, latency_s=args.latency) as gemini,
    ):
        environment(Path(folder), gemini.base_url)
        with mock_aws():
            s3 = boto3.client("s3")
            for name in (BUCKET_IN, BUCKET_OUT):
                s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
            boto3.client("secretsmanager").create_secret(
                Name="promptgrade/gemini-api-key", SecretString="bench"
            )
            messages = []
            for n in range(args.records):
                data, key = tray(n), f"in/{n:05}.jpg"
                s3.put_object(Bucket=BUCKET_IN, Key=key, Body=data)
                messages.append((f"m-{n:05}", notification(key, len(data))))
            data = tray(args.records)  # beyond the stream's
            s3.put_object(Bucket=BUCKET_IN, Key="warm-up.jpg", Body=data)
            warm_up = sqs_record(notification("warm-up.jpg", len(data)), message_id="warm-up")
            clean = run_pass(deliveries(messages, args.batch, 0.0, 0), warm_up, "clean/", gemini)
            again = run_pass(
                deliveries(messages, args.batch, args.redelivery, 1), warm_up, "redelivered/", gemini
            )
    concurrency = int(os.environ.get("PROMPTGRADE_SQS_CONCURRENCY") or 4)
    bound = concurrency / args.latency
    for name, figures in (("clean", clean), ("redelivered", again)):
        figures["model_calls_per_record"] = figures["model_calls"] / args.records
        report.figures[name] = figures
        print(f"  {name}: {figures}", flush=True)
    report.figures |= {
        "records": args.records,
        "latency_s": args.latency,
        "batch": args.batch,
        "bound_records_per_s": bound,
    }
    report.check(
        Check(
            "records/s per instance",
            clean["records_per_s"],
            bound / 2,
            "records/s",
            higher=True,
            note=f"bound {bound:.0f}/s = {concurrency} in flight / {args.latency:g} s",
        )
    )
    report.check(Check("model calls per record", clean["model_calls_per_record"], 1.0, "calls", higher=False))
    report.check(
        Check(
            f"model calls per record, {args.redelivery:.0%} redelivered",
            again["model_calls_per_record"],
            1.01,
            "calls",
            higher=False,
        )
    )
    report.save()


if __name__ == "__main__":
    main()
