"""The values a dataset loader hands to the runner: labelled examples, and the ones it had to skip."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from promptgrade.providers.base import ImageInput


class Labels(BaseModel):
    """The truth for one image. Categories are canonical task names, so scoring compares strings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    categories: tuple[str, ...]
    grade: float | None = None


class PreparedImages:
    """A dataset's prepared images, spooled to an unnamed temporary file instead of held in memory.

    Each image is prepared once, when the dataset is loaded (its sha256 is part of the dataset's hash,
    and an unreadable image must be skipped before anything is paid for); its bytes are then written
    here and read back whenever a request needs them. A sweep's memory therefore does not grow with
    the images' bytes: 20,000 trays at ~10 KB are 200 MB on disk, not in RAM. The file has no name
    (deleted as soon as it is created) and disappears with the last image that refers to it.
    """

    def __init__(self) -> None:
        # lives as long as the images that point into it: no context manager can scope that
        self._file = tempfile.TemporaryFile(prefix="promptgrade-images-")  # noqa: SIM115
        self._fd = self._file.fileno()
        self._size = 0
        self._lock = threading.Lock()

    def add(self, image: ImageInput) -> StoredImage:
        data = image.data
        with self._lock:
            offset = self._size
            self._file.seek(offset)
            self._file.write(data)
            self._file.flush()
            self._size += len(data)
        return StoredImage(self, offset, len(data), image.mime_type, image.sha256, image.size)

    def read(self, offset: int, length: int) -> bytes:
        if hasattr(os, "pread"):  # positional: safe from threads and forked workers alike
            chunks, done = [], 0
            while done < length:
                chunk = os.pread(self._fd, length - done, offset + done)
                if not chunk:
                    break
                chunks.append(chunk)
                done += len(chunk)
            data = b"".join(chunks)
        else:
            with self._lock:
                self._file.seek(offset)
                data = self._file.read(length)
        if len(data) != length:
            raise OSError(f"prepared image store is truncated ({len(data)} of {length} bytes at {offset})")
        return data

    def __len__(self) -> int:
        return self._size


class StoredImage(ImageInput):
    """An ``ImageInput`` whose bytes live in a ``PreparedImages`` file: ``data`` reads them on each access.

    It is an ImageInput in every way the grading path cares about (``data``, ``mime_type``, ``sha256``);
    copying or pickling it gives a plain in-memory ImageInput.
    """

    __slots__ = ("_length", "_offset", "_store")

    def __init__(
        self,
        store: PreparedImages,
        offset: int,
        length: int,
        mime_type: str,
        sha256: str,
        size: tuple[int, int] | None = None,
    ) -> None:
        object.__setattr__(self, "mime_type", mime_type)
        object.__setattr__(self, "sha256", sha256)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "_store", store)
        object.__setattr__(self, "_offset", offset)
        object.__setattr__(self, "_length", length)

    @property  # type: ignore[override]
    def data(self) -> bytes:
        return self._store.read(self._offset, self._length)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImageInput):
            return NotImplemented
        return (self.sha256, self.mime_type, self.data) == (other.sha256, other.mime_type, other.data)

    def __hash__(self) -> int:
        return hash((self.data, self.mime_type, self.sha256))  # as ImageInput's, so equal images hash alike

    def __reduce__(self) -> tuple[Any, ...]:
        return (ImageInput, (self.data, self.mime_type, self.sha256, self.size))

    def __repr__(self) -> str:
        return f"StoredImage(mime_type={self.mime_type!r}, sha256={self.sha256!r}, bytes={self._length})"


@dataclass(frozen=True, slots=True)
class Example:
    id: str
    image: ImageInput
    labels: Labels


@dataclass(frozen=True, slots=True)
class SkippedExample:
    """An example left out (unreadable image, missing file); the sweep reports how many and why."""

    id: str
    reason: str


def dataset_sha256(examples: Iterable[Example]) -> str:
    """A content hash that changes when any evaluated image or label changes, and with nothing else.

    Row order, file paths and source format do not matter, so the same data loaded from a folder or
    from parquet hashes alike; skipped examples are not part of what was evaluated and are left out.
    """
    digest = hashlib.sha256()
    for example in sorted(examples, key=lambda e: e.id):
        record = [example.id, example.image.sha256, list(example.labels.categories), example.labels.grade]
        digest.update(json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class LoadedDataset:
    """One split of one dataset, ready to evaluate; ``name``/``split``/``sha256`` become MLflow params."""

    name: str
    split: str
    sha256: str
    examples: list[Example] = field(repr=False)
    skipped: list[SkippedExample] = field(default_factory=list, repr=False)
    # Not part of the hash: where the data and each image came from, for MLflow's dataset and traces.
    source: str = ""
    image_refs: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        name: str,
        split: str,
        examples: list[Example],
        skipped: list[SkippedExample] | None = None,
        *,
        source: str = "",
        image_refs: dict[str, str] | None = None,
    ) -> LoadedDataset:
        return cls(
            name,
            split,
            dataset_sha256(examples),
            examples,
            list(skipped or []),
            source,
            dict(image_refs or {}),
        )

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def summary(self) -> DatasetSummary:
        return DatasetSummary(
            name=self.name,
            split=self.split,
            sha256=self.sha256,
            source=self.source,
            n_examples=len(self.examples),
            image_refs=dict(self.image_refs),
            image_sha256={e.id: e.image.sha256 for e in self.examples},
        )


@dataclass(frozen=True)
class DatasetSummary:
    """What MLflow records of a split — names, hash, where each image came from — without the images,
    so it can be handed to the tracking writer's process for the price of a few strings per example."""

    name: str
    split: str
    sha256: str
    source: str = ""
    n_examples: int = 0
    image_refs: dict[str, str] = field(default_factory=dict, repr=False)
    image_sha256: dict[str, str] = field(default_factory=dict, repr=False)


__all__ = [
    "DatasetSummary",
    "Example",
    "Labels",
    "LoadedDataset",
    "PreparedImages",
    "SkippedExample",
    "StoredImage",
    "dataset_sha256",
]
