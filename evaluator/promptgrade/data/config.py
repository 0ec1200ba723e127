"""The ``dataset:`` section of an experiment file: where labelled images come from.

One model per source kind, discriminated on ``kind``, so a typo in a field is an error at load time
rather than a default silently used. Relative paths are resolved in exactly one place,
``resolved(base_dir)``, against the folder of the experiment file: an experiment must mean the same
data whichever directory the command is run from.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(?P<prefix>.*))?$")


def _absolute(path: Path, base_dir: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else Path(os.path.normpath(base_dir / path))


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    split: str = Field("test", min_length=1, description="The split to evaluate.")
    train_split: str = Field("train", min_length=1, description="The split a trained baseline learns from.")
    limit: int | None = Field(None, ge=1, description="Only the first N examples, ordered by id.")
    image_max_side: int = Field(1024, ge=64, le=8192, description="Images are downscaled to this.")


class _TableColumns(BaseModel):
    """Column mapping for tabular sources; defaults follow worldcuisines/food-kb's schema."""

    image_column: str = "image1"
    categories_column: str = "coarse_categories"
    id_column: str = Field("name", description="Unique id per row; the row index if the default is absent.")
    grade_column: str | None = None
    grades: Path | None = Field(
        None, description="CSV `id,<grade name>` joined by id (overrides grade_column)."
    )


class HFDatasetConfig(_Common, _TableColumns):
    """A dataset on the Hugging Face Hub, or a local dataset directory or script."""

    kind: Literal["hf"]
    path: str = Field(min_length=1, description="Hub id (worldcuisines/food-kb), local directory or script.")
    name: str | None = Field(None, description="The dataset configuration (subset).")
    split: str = Field("main", min_length=1)
    revision: str | None = Field(None, description="Branch, tag or commit; pin it for reproducible runs.")

    def is_local(self, base_dir: Path | None = None) -> bool:
        """Local if it looks like a path or exists as one; otherwise a hub id, as `datasets` decides."""
        if self.path.startswith((".", "/", "~")) or self.path.endswith(".py"):
            return True
        return Path(self.path).is_absolute() or (base_dir is not None and (base_dir / self.path).exists())

    def resolved(self, base_dir: Path) -> HFDatasetConfig:
        update: dict[str, object] = {}
        if self.is_local(base_dir):
            update["path"] = str(_absolute(Path(self.path), base_dir))
        if self.grades is not None:
            update["grades"] = _absolute(self.grades, base_dir)
        return self.model_copy(update=update)

    @property
    def display_name(self) -> str:
        base = Path(self.path).name if self.is_local() else self.path
        return f"{base}:{self.name}" if self.name else base


class ParquetDatasetConfig(_Common, _TableColumns):
    """Parquet file(s), e.g. a Hub dataset's own parquet export, read through `datasets`."""

    kind: Literal["parquet"]
    path: str = Field(min_length=1, description="A parquet file or a glob such as data/*.parquet.")
    split_column: str | None = Field(None, description="Column naming each row's split; else the whole file.")

    def resolved(self, base_dir: Path) -> ParquetDatasetConfig:
        update: dict[str, object] = {"path": str(_absolute(Path(self.path), base_dir))}
        if self.grades is not None:
            update["grades"] = _absolute(self.grades, base_dir)
        return self.model_copy(update=update)

    @property
    def display_name(self) -> str:
        path = Path(self.path)
        return path.name if not any(ch in path.name for ch in "*?[") else f"{path.parent.name}/{path.name}"


class FolderDatasetConfig(_Common):
    """A folder of images with ``labels.csv`` (``id,file,categories,<grade>,split``)."""

    kind: Literal["folder"]
    path: Path
    labels: Path | None = Field(None, description="Labels CSV; default labels.csv inside the folder.")
    grades: Path | None = Field(None, description="CSV `id,<grade name>` joined by id (overrides labels).")

    def resolved(self, base_dir: Path) -> FolderDatasetConfig:
        path = _absolute(self.path, base_dir)
        labels = _absolute(self.labels, base_dir) if self.labels is not None else path / "labels.csv"
        grades = _absolute(self.grades, base_dir) if self.grades is not None else None
        return self.model_copy(update={"path": path, "labels": labels, "grades": grades})

    @property
    def display_name(self) -> str:
        return self.path.name or str(self.path)


class S3DatasetConfig(_Common):
    """The ``folder`` layout under an S3 prefix, fetched into a local cache and read like a folder."""

    kind: Literal["s3"]
    uri: str = Field(description="s3://bucket/prefix/ holding labels.csv and the images it names.")
    labels: str = Field("labels.csv", min_length=1, description="Key of the labels CSV, under the prefix.")
    grades: Path | None = Field(None, description="Local CSV `id,<grade name>` joined by id.")
    endpoint_url: str | None = Field(None, description="For S3-compatible stores (MinIO, moto).")
    region: str | None = None

    @field_validator("uri")
    @classmethod
    def _s3_uri(cls, uri: str) -> str:
        if not _S3_URI.match(uri):
            raise ValueError(f"{uri!r} is not an S3 URI like s3://bucket/prefix/")
        return uri

    @property
    def bucket(self) -> str:
        match = _S3_URI.match(self.uri)
        assert match is not None  # validated on construction
        return match["bucket"]

    @property
    def prefix(self) -> str:
        """The key prefix, always ending in ``/`` unless it is the whole bucket."""
        match = _S3_URI.match(self.uri)
        assert match is not None
        prefix = (match["prefix"] or "").strip("/")
        return f"{prefix}/" if prefix else ""

    def resolved(self, base_dir: Path) -> S3DatasetConfig:
        if self.grades is None:
            return self
        return self.model_copy(update={"grades": _absolute(self.grades, base_dir)})

    @property
    def display_name(self) -> str:
        return self.uri.rstrip("/")


DatasetConfig = Annotated[
    HFDatasetConfig | ParquetDatasetConfig | FolderDatasetConfig | S3DatasetConfig,
    Field(discriminator="kind"),
]

__all__ = [
    "DatasetConfig",
    "FolderDatasetConfig",
    "HFDatasetConfig",
    "ParquetDatasetConfig",
    "S3DatasetConfig",
]
