"""The values a dataset loader hands to the runner: labelled examples, and the ones it had to skip."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict

from promptgrade.providers.base import ImageInput


class Labels(BaseModel):
    """The truth for one image. Categories are canonical task names, so scoring compares strings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    categories: tuple[str, ...]
    grade: float | None = None


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

    @classmethod
    def build(
        cls, name: str, split: str, examples: list[Example], skipped: list[SkippedExample] | None = None
    ) -> LoadedDataset:
        return cls(name, split, dataset_sha256(examples), examples, list(skipped or []))

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)


__all__ = ["Example", "Labels", "LoadedDataset", "SkippedExample", "dataset_sha256"]
