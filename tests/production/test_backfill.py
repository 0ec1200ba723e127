"""Given a backlog in S3 and the function behind its queue, when I backfill, then exactly the images the
current bundle has not graded are sent, once, and a second run sends nothing.

moto's S3 and SQS with the real boto3 clients; the queue is drained into the real handler the way the
Lambda service's poller does (``helpers.sqs_events.poll``), and the local Gemini server counts calls.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from typer.testing import CliRunner

from helpers.lambda_events import make_jpeg
from helpers.sqs_events import poll
from lambda_handler import app
from promptgrade.cli import app as cli
from promptgrade.production.backfill import backfill
from promptgrade.testing.gemini_server import FakeGemini

INPUT, OUTPUT = "trays-backlog", "trays-graded"
RESULTS = f"s3://{OUTPUT}/results/"


def upload(key: str, data: bytes) -> None:
    boto3.client("s3").put_object(Bucket=INPUT, Key=key, Body=data)


def queued(queue_url: str) -> list[str]:
    """The keys the queue's messages ask for (read without consuming them)."""
    sqs = boto3.client("sqs")
    bodies = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=30)
        if not got.get("Messages"):
            break
        bodies += [json.loads(m["Body"]) for m in got["Messages"]]
    return sorted(body["id"] for body in bodies)


def run(queue_url: str, bundle_dir: Path, **options: object) -> object:
    s3, sqs = boto3.client("s3"), boto3.client("sqs")
    return backfill(
        f"s3://{INPUT}/backlog/",
        queue_url,
        results_uri=RESULTS,
        bundle_dir=bundle_dir,
        s3=s3,
        sqs=sqs,
        **options,
    )


def test_backfill_sends_exactly_the_ungraded_images_and_a_rerun_sends_nothing(
    function: FakeGemini, queue_url: str, bundle_dir: Path
) -> None:
    for n in range(3):
        upload(f"backlog/day1/{n}.jpg", make_jpeg((40 * n, 90, 200)))
    first = run(queue_url, bundle_dir)
    assert poll(queue_url, app.handler) == 3 and function.calls == 3
    for n in range(4):
        upload(f"backlog/day2/{n}.jpg", make_jpeg((90, 40 * n, 20)))
    upload("backlog/day2/notes.txt", b"not an image")
    upload("backlog/day2/empty.jpg", b"")
    upload("elsewhere/0.jpg", make_jpeg((1, 2, 3)))

    dry = run(queue_url, bundle_dir, dry_run=True)

    assert (dry.progress.images, dry.progress.graded, dry.to_grade) == (7, 3, 4)
    assert dry.estimated_cost_usd == pytest.approx(4 * 0.5 / 200)
    assert first.progress.enqueued == 3 and dry.progress.enqueued == 0

    sent = run(queue_url, bundle_dir)

    assert sent.progress.enqueued == 4
    assert queued(queue_url) == [f"backlog/day2/{n}.jpg" for n in range(4)]

    boto3.client("sqs").purge_queue(QueueUrl=queue_url)
    for n in range(4):  # the function grades them (as if the queue had been drained)
        boto3.client("sqs").send_message(
            QueueUrl=queue_url, MessageBody=json.dumps({"s3_uri": f"s3://{INPUT}/backlog/day2/{n}.jpg"})
        )
    assert poll(queue_url, app.handler) == 4 and function.calls == 7

    again = run(queue_url, bundle_dir)

    assert again.progress.enqueued == 0 and again.progress.graded == 7
    upload("backlog/day1/0.jpg", make_jpeg((255, 255, 0)))  # replaced in place: another ETag
    assert run(queue_url, bundle_dir).progress.enqueued == 1


def test_an_interrupted_backfill_resumes_after_the_last_page_it_sent(
    function: FakeGemini, queue_url: str, bundle_dir: Path
) -> None:
    keys = [f"backlog/{n:02}.jpg" for n in range(7)]
    for n, key in enumerate(keys):
        upload(key, make_jpeg((30 * n, 20, 20)))

    def stop_after_first_page(progress: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(queue_url, bundle_dir, page_size=3, on_page=stop_after_first_page)
    resumed = run(queue_url, bundle_dir, page_size=3)

    assert resumed.resumed_from == keys[2]
    assert resumed.progress.enqueued == 7  # 3 before the interruption, 4 after
    assert queued(queue_url) == keys  # each once
    marker = json.loads(next(Path(".promptgrade").glob("backfill-*.json")).read_text())
    assert marker["complete"] and marker["after"] == keys[-1]


def test_bad_input_is_one_line_and_exit_2(function: FakeGemini, queue_url: str, bundle_dir: Path) -> None:
    upload("backlog/0.jpg", make_jpeg((1, 1, 1)))
    base = ["--results", RESULTS, "--bundle", str(bundle_dir)]
    cases = {
        "no images under s3://trays-backlog/nothing/": [
            "backfill",
            f"s3://{INPUT}/nothing/",
            "--queue",
            queue_url,
        ],
        "does not exist": ["backfill", f"s3://{INPUT}/backlog/", "--queue", queue_url + "-nope"],
        "must look like s3://bucket/prefix": ["backfill", "trays-backlog/backlog", "--queue", queue_url],
    }
    for message, arguments in cases.items():
        result = CliRunner().invoke(cli, [*arguments, *base])
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_the_dry_run_counts_and_prices_and_sends_nothing(
    function: FakeGemini, queue_url: str, bundle_dir: Path
) -> None:
    for n in range(5):
        upload(f"backlog/{n}.jpg", make_jpeg((50 * n, 0, 0)))
    arguments = ["backfill", f"s3://{INPUT}/backlog/", "--queue", queue_url, "--results", RESULTS]

    result = CliRunner().invoke(cli, [*arguments, "--bundle", str(bundle_dir), "--dry-run"])

    assert result.exit_code == 0, result.output
    assert "5 images under s3://trays-backlog/backlog/: 0 already graded" in result.output
    assert "would send 5 message(s)" in result.output and "≈ $0.01" in result.output
    assert queued(queue_url) == []
