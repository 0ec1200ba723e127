"""Where production's results live in S3: one object per (bundle, image), so a result is never paid twice.

The Lambda (fed by SQS) and the lab's ``backfill`` and ``monitor`` read and write the same keys, so
the layout is written once, here, in a module that ships in the Lambda zip (no settings, no mlflow).

Under the function's output prefix, one folder per bundle sha256 (``bundle_sha256``)::

    <prefix><bundle sha256>/images/<image sha256>.json    the graded result (written once: If-None-Match)
    <prefix><bundle sha256>/sources/<source sha256>.json  an S3 object seen: its result, or why it has none
    <prefix><bundle sha256>/errors/<message id>-<n>.json  a permanent failure with no object to name
    <prefix><bundle sha256>/review/<agreement>-<image sha256>.json  samples disagreed: label these first

Why a ``sources`` marker beside the result: the image's sha256 needs its bytes, so "is this object
graded?" would otherwise cost a download per object. The marker is named by what a listing already
tells (bucket, key, ETag), so a backfill over a million objects lists two prefixes and downloads
nothing; an object replaced in place has another ETag and is graded again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from promptgrade.bundle import Manifest

IMAGES, SOURCES, ERRORS, REVIEW = "images/", "sources/", "errors/", "review/"
# the image types production grades, by file name: what a backfill lists as images
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def bundle_sha256(manifest: Manifest) -> str:
    """The bundle's identity as far as answers go: everything in its manifest but the provenance.

    Promoting the same prompt, model and settings again (a new ``promoted_at``) asks exactly the same
    question, so its results are reused; any change to what is asked gives another sha256, and every
    image is graded again under it.
    """
    asked = manifest.model_dump(mode="json", exclude={"provenance"})
    canonical = json.dumps(asked, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def source_sha256(bucket: str, key: str, etag: str) -> str:
    """An S3 object's identity without its bytes: its place and its ETag (quotes stripped)."""
    return hashlib.sha256(f"s3://{bucket}/{key}\n{etag.strip(chr(34))}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ResultLayout:
    """The keys of one bundle's results under ``prefix`` (the function's output prefix)."""

    prefix: str
    bundle_sha256: str

    @property
    def root(self) -> str:
        return f"{self.prefix}{self.bundle_sha256}/"

    def folder(self, kind: str) -> str:
        return self.root + kind

    def image(self, image_sha256: str) -> str:
        return f"{self.root}{IMAGES}{image_sha256}.json"

    def source(self, bucket: str, key: str, etag: str) -> str:
        return f"{self.root}{SOURCES}{source_sha256(bucket, key, etag)}.json"

    def error(self, message_id: str, index: int) -> str:
        return f"{self.root}{ERRORS}{message_id}-{index}.json"

    def review(self, agreement: float, image_sha256: str) -> str:
        """Named so that a listing, sorted by key, gives the least agreed trays first."""
        return f"{self.root}{REVIEW}{agreement:.4f}-{image_sha256}.json"


def is_image_key(key: str) -> bool:
    return key.lower().endswith(IMAGE_SUFFIXES)
