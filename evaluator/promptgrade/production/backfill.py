"""``promptgrade backfill``: push a backlog of images through the deployed function's queue.

One message per image the current bundle has not graded, sent to the queue the function's event
source mapping reads, so a backlog is graded by the same code, with the same idempotency and rate
limit (the mapping's maximum concurrency), as the day's uploads.

What "not graded" means without downloading anything: the function leaves a marker per S3 object it
has graded or refused, named by (bucket, key, ETag) under the bundle's results
(``promptgrade.stored_results``). The backfill lists the backlog (each listing page gives every
object's ETag) and the markers, and compares the two — two listings, no image download, no HEAD per
object. An object replaced in place has a new ETag and is sent again.

A run is resumable: after each listing page is enqueued, a marker file records the last key, so an
interrupted run (Ctrl-C, a lost connection) goes on from there. A finished run's next pass starts
from the beginning and sends only what is still ungraded: images enqueued but not yet graded are sent
again, which costs a message, not a model call (the function finds their results).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from promptgrade.bundle import Bundle, load_bundle
from promptgrade.errors import PromptgradeError
from promptgrade.files import atomic_write
from promptgrade.production.s3 import ProductionError, S3Location, pages
from promptgrade.stored_results import SOURCES, ResultLayout, bundle_sha256, is_image_key

SEND_BATCH = 10  # SQS's limit per SendMessageBatch
MARKER_DIR = Path(".promptgrade")


@dataclass
class Progress:
    """Where a run is, as the marker file keeps it between runs."""

    source: str
    queue: str
    bundle_sha256: str
    after: str | None = None  # the last key listed and enqueued
    listed: int = 0
    images: int = 0
    graded: int = 0  # images skipped: the bundle has a result (or a permanent error) for them
    enqueued: int = 0
    complete: bool = False


@dataclass
class BackfillReport:
    progress: Progress
    dry_run: bool
    resumed_from: str | None
    cost_per_image_usd: float | None
    samples: int
    notes: list[str] = field(default_factory=list)

    @property
    def to_grade(self) -> int:
        return self.progress.images - self.progress.graded

    @property
    def estimated_cost_usd(self) -> float | None:
        return None if self.cost_per_image_usd is None else self.cost_per_image_usd * self.to_grade


def marker_path(source: S3Location, queue_url: str) -> Path:
    digest = hashlib.sha256(f"{source}\n{queue_url}".encode()).hexdigest()[:16]
    return MARKER_DIR / f"backfill-{digest}.json"


def cost_per_image(bundle: Bundle) -> float | None:
    """What the promoted candidate paid per tray when measured (its k samples included)."""
    metrics = bundle.manifest.provenance.metrics
    cost, n = metrics.get("cost_usd", math.nan), metrics.get("n_examples", math.nan)
    if math.isnan(cost) or math.isnan(n) or n <= 0:
        return None
    return cost / n


def backfill(
    source_uri: str,
    queue_url: str,
    *,
    results_uri: str,
    bundle_dir: Path,
    s3: Any,
    sqs: Any,
    marker: Path | None = None,
    dry_run: bool = False,
    page_size: int = 1000,
    on_page: Callable[[Progress], None] | None = None,
) -> BackfillReport:
    """List ``source_uri`` and send one message per image the bundle has not graded to ``queue_url``."""
    source = S3Location.parse(source_uri, "the backlog")
    results = S3Location.parse(results_uri, "--results", folder=True)
    try:
        bundle = load_bundle(bundle_dir)
    except PromptgradeError as exc:
        raise ProductionError(f"the bundle the function runs: {exc}") from None
    layout = ResultLayout(results.prefix, bundle_sha256(bundle.manifest))
    _check_queue(sqs, queue_url)
    marker = marker or marker_path(source, queue_url)
    progress, resumed_from = _resume(marker, Progress(str(source), queue_url, layout.bundle_sha256))
    done = _graded_sources(s3, results.bucket, layout)
    report = BackfillReport(progress, dry_run, resumed_from, cost_per_image(bundle), bundle.manifest.samples)
    for page in pages(s3, source, start_after=progress.after, page_size=page_size):
        images = [o for o in page if is_image_key(o["Key"]) and int(o.get("Size") or 0) > 0]
        todo = [o for o in images if _digest(layout.source(source.bucket, o["Key"], o["ETag"])) not in done]
        if not dry_run:
            _send(sqs, queue_url, source, todo)
        progress.listed += len(page)
        progress.images += len(images)
        progress.graded += len(images) - len(todo)
        progress.enqueued += 0 if dry_run else len(todo)
        progress.after = page[-1]["Key"] if page else progress.after
        if not dry_run:
            _save(marker, progress)
        if on_page is not None:
            on_page(progress)
    if progress.images == 0 and resumed_from is None:
        raise ProductionError(f"no images under {source} (looked for {', '.join(_SUFFIXES_SHOWN)})")
    progress.complete = True
    if not dry_run:
        _save(marker, progress)
    return report


_SUFFIXES_SHOWN = (".jpg", ".png", ".webp", "…")


def _check_queue(sqs: Any, queue_url: str) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if "NonExistentQueue" in code or code in {"QueueDoesNotExist", "InvalidAddress"}:
            raise ProductionError(f"the queue {queue_url} does not exist") from None
        raise ProductionError(f"the queue {queue_url}: {code}") from None
    except (BotoCoreError, ValueError) as exc:
        raise ProductionError(f"the queue {queue_url}: {exc}") from None


def _graded_sources(s3: Any, bucket: str, layout: ResultLayout) -> set[bytes]:
    """The source sha256 of every object the bundle has an answer for (a listing, no downloads), kept
    as 32-byte digests: about 70 MB per million graded objects, where the keys would take thrice that."""
    folder = S3Location(bucket, layout.folder(SOURCES))
    return {_digest(o["Key"]) for page in pages(s3, folder) for o in page}


def _digest(marker_key: str) -> bytes:
    name = marker_key.rpartition("/")[2].removesuffix(".json")
    try:
        return bytes.fromhex(name)
    except ValueError:
        return name.encode()  # not a marker of ours: kept, and matches nothing


def _send(sqs: Any, queue_url: str, source: S3Location, objects: list[dict[str, Any]]) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    for start in range(0, len(objects), SEND_BATCH):
        entries = [
            {
                "Id": str(n),
                "MessageBody": json.dumps({"s3_uri": f"s3://{source.bucket}/{o['Key']}", "id": o["Key"]}),
            }
            for n, o in enumerate(objects[start : start + SEND_BATCH])
        ]
        try:
            failed = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed", [])
        except (ClientError, BotoCoreError) as exc:
            raise ProductionError(f"cannot send to {queue_url}: {exc}") from None
        if failed:
            reasons = ", ".join(sorted({str(f.get("Code")) for f in failed}))
            raise ProductionError(
                f"the queue refused {len(failed)} message(s) ({reasons}): run again to resume"
            )


def _resume(marker: Path, fresh: Progress) -> tuple[Progress, str | None]:
    """The interrupted run's progress, or a fresh one (after a finished run, or another bundle)."""
    try:
        saved = Progress(**json.loads(marker.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return fresh, None
    except (OSError, ValueError, TypeError) as exc:
        raise ProductionError(f"cannot read the marker file: {exc}", path=marker) from None
    same = (saved.source, saved.queue, saved.bundle_sha256) == (
        fresh.source,
        fresh.queue,
        fresh.bundle_sha256,
    )
    if not same or saved.complete or saved.after is None:
        return fresh, None
    return saved, saved.after


def _save(marker: Path, progress: Progress) -> None:
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(marker, (json.dumps(asdict(progress), indent=2) + "\n").encode("utf-8"))
    except OSError as exc:
        raise ProductionError(f"cannot write the marker file: {exc.strerror}", path=marker) from None
