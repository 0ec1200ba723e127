"""Load one split of a labelled image dataset, from the Hub, parquet, a folder or S3.

Every source ends in the same checks, because a score is only as good as its labels: each category
must be one the task allows (stored in its canonical spelling), each grade must lie on the task's
scale, ids must be unique. Such mistakes stop the load with the file and line (or example id) to fix,
before any model is called. An image that cannot be read does not: it is recorded in ``skipped``, so
one corrupt JPEG in a thousand costs one example, not the sweep.
"""

from __future__ import annotations

import ast
import csv
import difflib
import glob
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path, PurePosixPath
from typing import Any

from promptgrade.data.config import (
    DatasetConfig,
    FolderDatasetConfig,
    HFDatasetConfig,
    ParquetDatasetConfig,
    S3DatasetConfig,
)
from promptgrade.data.examples import Example, Labels, LoadedDataset, SkippedExample
from promptgrade.errors import DatasetError
from promptgrade.images import ImageError, prepare_image
from promptgrade.task import Task

_CATEGORY_SEPARATORS = ";|"
_S3_MANIFEST = ".promptgrade-s3-etags.json"


def default_cache_dir() -> Path:
    """Where downloaded datasets live: ``$PROMPTGRADE_CACHE_DIR`` or ``~/.cache/promptgrade``."""
    configured = os.environ.get("PROMPTGRADE_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "promptgrade"


def load_dataset_split(
    config: DatasetConfig,
    task: Task,
    base_dir: Path,
    split: str | None = None,
    *,
    cache_dir: Path | None = None,
) -> LoadedDataset:
    """Load ``split`` (default: the configured one) with labels checked against ``task``.

    ``base_dir`` is the experiment file's folder, against which relative paths are resolved.
    ``cache_dir`` holds S3 downloads and, when given, the Hugging Face cache (else HF's default).
    """
    config = config.resolved(Path(base_dir))
    split = split or config.split
    if isinstance(config, FolderDatasetConfig):
        return _load_folder(config, task, split)
    if isinstance(config, S3DatasetConfig):
        return _load_s3(config, task, split, cache_dir or default_cache_dir())
    if isinstance(config, HFDatasetConfig | ParquetDatasetConfig):
        return _load_table(config, task, split, cache_dir)
    raise TypeError(f"unknown dataset config {type(config).__name__}")


# --------------------------------------------------------------------------------------------------
# Labels: the same checks and messages for every source


@dataclass(frozen=True, slots=True)
class _Where:
    """Where a label came from, so an error can send the user straight to it."""

    path: str
    line: int | None = None
    example_id: str | None = None

    def error(self, message: str) -> DatasetError:
        prefix = f"example {self.example_id!r}: " if self.example_id else ""
        return DatasetError(prefix + message, path=self.path, line=self.line)


@dataclass(frozen=True, slots=True)
class _Row:
    id: str
    labels: Labels
    where: _Where


def _category_values(raw: Any) -> list[str]:
    """Category labels from a list, a JSON/Python list literal, or a ``;``/``|``-separated string."""
    if raw is None:
        return []
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("["):
            for parse in (json.loads, ast.literal_eval):
                try:
                    parsed = parse(text)
                except (ValueError, SyntaxError):
                    continue
                if isinstance(parsed, list):
                    return [str(item).strip() for item in parsed if str(item).strip()]
        for separator in _CATEGORY_SEPARATORS[1:]:
            text = text.replace(separator, _CATEGORY_SEPARATORS[0])
        return [part.strip() for part in text.split(_CATEGORY_SEPARATORS[0]) if part.strip()]
    if isinstance(raw, Iterable):
        return [str(item).strip() for item in raw if item is not None and str(item).strip()]
    return [str(raw).strip()]


def _suggest(label: str, task: Task) -> str:
    lowered = {category.lower(): category for category in task.categories}
    close = difflib.get_close_matches(label.lower(), list(lowered), n=3, cutoff=0.5)
    if close:
        return "closest allowed: " + ", ".join(repr(lowered[c]) for c in close)
    shown = ", ".join(task.categories[:12])
    more = f", … ({len(task.categories)} in all)" if len(task.categories) > 12 else ""
    return f"allowed: {shown}{more}"


def _categories(raw: Any, task: Task, where: _Where) -> tuple[str, ...]:
    labels = _category_values(raw)
    if not labels:
        raise where.error("no categories given")
    canonical: list[str] = []
    for label in labels:
        category = task.canonical_category(label)
        if category is None:
            raise where.error(f"category {label!r} is not in task {task.name!r}; {_suggest(label, task)}")
        if category not in canonical:
            canonical.append(category)
    return tuple(canonical)


def _grade(raw: Any, task: Task, where: _Where) -> float | None:
    """A grade on the task's scale, or None when the source has none for this example."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, bool):
        raise where.error(f"{task.grade.name} {raw!r} is not a number")
    try:
        value = float(raw.strip().removesuffix("%") if isinstance(raw, str) else raw)
    except (TypeError, ValueError):
        raise where.error(f"{task.grade.name} {raw!r} is not a number") from None
    if math.isnan(value):
        return None
    if not task.grade.contains(value):
        raise where.error(
            f"{task.grade.name} {value:g} is outside the task's scale "
            f"[{task.grade.minimum:g}, {task.grade.maximum:g}]"
        )
    return value


def _check_unique(ids: Iterable[tuple[str, _Where]]) -> None:
    seen: dict[str, _Where] = {}
    for example_id, where in ids:
        if not example_id:
            raise where.error("id is empty")
        if example_id in seen:
            first = seen[example_id]
            at = f"line {first.line}" if first.line is not None else "an earlier row"
            raise DatasetError(
                f"duplicate id {example_id!r} (first at {at}); ids must be unique across all splits",
                path=where.path,
                line=where.line,
            )
        seen[example_id] = where


def _open_csv(path: Path, what: str) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a CSV with their line numbers; a BOM (Excel's UTF-8 export) is tolerated."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise DatasetError(f"{what} not found", path=path) from None
    except OSError as exc:
        raise DatasetError(f"cannot read {what}: {exc.strerror}", path=path) from None
    with handle:
        reader = csv.DictReader(handle)
        try:
            if reader.fieldnames is None:
                raise DatasetError(f"{what} is empty", path=path, line=1)
            for row in reader:
                if None in row:
                    raise DatasetError("row has more fields than the header", path=path, line=reader.line_num)
                yield reader.line_num, {k.strip(): (v or "").strip() for k, v in row.items()}
        except csv.Error as exc:
            raise DatasetError(f"not valid CSV: {exc}", path=path, line=reader.line_num) from None
        except UnicodeDecodeError:
            raise DatasetError(f"{what} is not UTF-8 text", path=path) from None


def _require_columns(path: Path, what: str, required: Sequence[str]) -> list[str]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle), [])
    except FileNotFoundError:
        raise DatasetError(f"{what} not found", path=path) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read {what}: {exc}", path=path) from None
    header = [name.strip() for name in header]
    missing = [name for name in required if name not in header]
    if missing:
        raise DatasetError(
            f"{what} lacks column(s) {', '.join(missing)}; its header is: {','.join(header) or '(empty)'}",
            path=path,
            line=1,
        )
    return header


def _read_grades(path: Path, task: Task) -> dict[str, float | None]:
    """An ``id,<grade>`` CSV: how grades are added to a source that has none (e.g. food-kb)."""
    key = task.grade.name
    _require_columns(path, "grades CSV", ["id", key])
    grades: dict[str, float | None] = {}
    lines: dict[str, int] = {}
    for line, row in _open_csv(path, "grades CSV"):
        example_id = row["id"]
        where = _Where(str(path), line, example_id or None)
        if not example_id:
            raise where.error("id is empty")
        if example_id in grades:
            raise where.error(f"duplicate id in grades CSV (first at line {lines[example_id]})")
        grades[example_id] = _grade(row[key], task, where)
        lines[example_id] = line
    return grades


def _join_grades(
    rows: list[_Row], grades: dict[str, float | None], all_ids: set[str], path: Path
) -> list[_Row]:
    if grades and not all_ids.intersection(grades):
        example = next(iter(grades))
        raise DatasetError(
            f"no id in the grades CSV matches the dataset's ids (e.g. {example!r} vs "
            f"{next(iter(sorted(all_ids)), '')!r}); check the id column",
            path=path,
        )
    joined = []
    for row in rows:
        if row.id in grades:
            labels = row.labels.model_copy(update={"grade": grades[row.id]})
            row = _Row(row.id, labels, row.where)
        joined.append(row)
    return joined


def _select(rows: list[_Row], limit: int | None) -> list[_Row]:
    """Order by id, then cut: the same N examples whatever the file order or source format."""
    ordered = sorted(rows, key=lambda row: row.id)
    return ordered[:limit] if limit is not None else ordered


def _no_split(split: str, present: Iterable[str], where: str) -> DatasetError:
    names = ", ".join(sorted(set(present))) or "(none)"
    return DatasetError(f"split {split!r} has no examples; splits present: {names}", path=where)


class _Unavailable(Exception):
    """This example's image cannot be had; the example is skipped with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _materialise(
    name: str,
    split: str,
    rows: Sequence[_Row],
    images: Iterable[Callable[[], bytes]],
    max_side: int,
) -> LoadedDataset:
    """Decode each row's image once; unreadable ones go to ``skipped``, not up the stack."""
    examples: list[Example] = []
    skipped: list[SkippedExample] = []
    for row, fetch in zip(rows, images, strict=True):
        try:
            image = prepare_image(fetch(), max_side=max_side, source=f"{row.where.path}[{row.id}]")
        except _Unavailable as exc:
            skipped.append(SkippedExample(row.id, exc.reason))
            continue
        except ImageError as exc:
            skipped.append(SkippedExample(row.id, exc.message))
            continue
        examples.append(Example(row.id, image, row.labels))
    if rows and not examples:
        raise DatasetError(
            f"all {len(rows)} examples of split {split!r} were skipped; first: {skipped[0].reason}", path=name
        )
    return LoadedDataset.build(name, split, examples, skipped)


# --------------------------------------------------------------------------------------------------
# folder (and S3, which is a folder once downloaded)


@dataclass(frozen=True, slots=True)
class _FolderRow:
    row: _Row
    file: str
    split: str | None


def _safe_relative(file: str, where: _Where) -> str:
    """Image paths stay inside the dataset folder, so an S3 labels file cannot write outside the cache."""
    posix = PurePosixPath(file.replace("\\", "/"))
    if not file or posix.is_absolute() or ".." in posix.parts:
        raise where.error(f"file {file!r} must be a relative path inside the dataset folder")
    return str(posix)


def _read_labels(labels: Path, task: Task) -> list[_FolderRow]:
    header = _require_columns(labels, "labels CSV", ["id", "file", "categories"])
    has_split, has_grade = "split" in header, task.grade.name in header
    rows: list[_FolderRow] = []
    for line, raw in _open_csv(labels, "labels CSV"):
        example_id = raw["id"]
        where = _Where(str(labels), line, example_id or None)
        if not example_id:
            raise where.error("id is empty")
        categories = _categories(raw["categories"], task, where)
        grade = _grade(raw[task.grade.name], task, where) if has_grade else None
        file = _safe_relative(raw["file"], where)
        split = raw["split"] if has_split else None
        rows.append(
            _FolderRow(_Row(example_id, Labels(categories=categories, grade=grade), where), file, split)
        )
    _check_unique((r.row.id, r.row.where) for r in rows)
    return rows


def _read_image_file(path: Path) -> Callable[[], bytes]:
    def fetch() -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise _Unavailable(f"image file not found: {path}") from None
        except OSError as exc:
            raise _Unavailable(f"cannot read image file {path}: {exc.strerror}") from None

    return fetch


def _load_folder(
    config: FolderDatasetConfig,
    task: Task,
    split: str,
    *,
    name: str | None = None,
    fetch_files: Callable[[Sequence[str]], None] | None = None,
) -> LoadedDataset:
    folder, labels = config.path, config.labels
    assert labels is not None  # set by resolved()
    if not folder.is_dir():
        raise DatasetError("dataset folder not found", path=folder)
    folder_rows = _read_labels(labels, task)
    if any(r.split is None for r in folder_rows) and split != config.split:
        raise DatasetError(
            f"labels CSV has no split column, so it is all split {config.split!r}; cannot select {split!r}",
            path=labels,
        )
    chosen = [r for r in folder_rows if r.split in (split, None)]
    if not chosen:
        raise _no_split(split, (r.split or "" for r in folder_rows), str(labels))
    rows = [r.row for r in chosen]
    if config.grades is not None:
        all_ids = {r.row.id for r in folder_rows}
        rows = _join_grades(rows, _read_grades(config.grades, task), all_ids, config.grades)
    rows = _select(rows, config.limit)
    files = {r.row.id: r.file for r in chosen}
    if fetch_files is not None:
        fetch_files([files[row.id] for row in rows])
    images = (_read_image_file(folder / files[row.id]) for row in rows)
    return _materialise(name or config.display_name, split, rows, images, config.image_max_side)


# --------------------------------------------------------------------------------------------------
# S3: download what the split needs into the cache, then read it as a folder


def _load_s3(config: S3DatasetConfig, task: Task, split: str, cache_dir: Path) -> LoadedDataset:
    import boto3  # the lab's dependency, not the grading path's: imported only when S3 is used
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client("s3", endpoint_url=config.endpoint_url, region_name=config.region)
    local = cache_dir / "s3" / config.bucket / config.prefix
    local.mkdir(parents=True, exist_ok=True)
    manifest_path = local / _S3_MANIFEST
    try:
        manifest: dict[str, str] = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        manifest = {}

    try:
        listing = _list_s3(client, config.bucket, config.prefix)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise DatasetError(f"cannot list objects ({code}): {exc}", path=config.uri) from None
    except BotoCoreError as exc:  # no credentials, no endpoint, ...
        raise DatasetError(f"cannot reach S3: {exc}", path=config.uri) from None

    def download(relative: str) -> str | None:
        """Fetch one object unless the cached copy has the same ETag; returns a skip reason or None."""
        key = config.prefix + relative
        target = local / relative
        etag = listing.get(key)
        if etag is None:
            return f"not in bucket: s3://{config.bucket}/{key}"
        if manifest.get(relative) == etag and target.is_file():
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        try:
            client.download_file(config.bucket, key, str(partial))
        except (ClientError, BotoCoreError, OSError) as exc:
            partial.unlink(missing_ok=True)
            return f"cannot download s3://{config.bucket}/{key}: {exc}"
        os.replace(partial, target)
        manifest[relative] = etag
        return None

    labels_key = PurePosixPath(config.labels).as_posix()
    if config.prefix + labels_key not in listing:
        raise DatasetError(f"{labels_key} not found under the prefix", path=config.uri)
    problem = download(labels_key)
    if problem:
        raise DatasetError(problem, path=config.uri)

    def fetch_files(files: Sequence[str]) -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(download, files))  # a failed object shows up as a missing file, i.e. skipped
        partial = manifest_path.with_name(manifest_path.name + ".part")
        partial.write_text(json.dumps(manifest, sort_keys=True), encoding="utf-8")
        os.replace(partial, manifest_path)

    folder = FolderDatasetConfig(
        kind="folder",
        path=local,
        labels=local / labels_key,
        grades=config.grades,
        split=config.split,
        limit=config.limit,
        image_max_side=config.image_max_side,
    )
    return _load_folder(folder, task, split, name=config.display_name, fetch_files=fetch_files)


def _list_s3(client: Any, bucket: str, prefix: str) -> dict[str, str]:
    listing: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            listing[item["Key"]] = item.get("ETag", "").strip('"')
    return listing


# --------------------------------------------------------------------------------------------------
# Hugging Face datasets: a hub id, a local dataset directory, or parquet files


def _open_table(config: HFDatasetConfig | ParquetDatasetConfig, split: str, cache_dir: Path | None) -> Any:
    import datasets  # heavy: imported only for the sources that need it
    from datasets.exceptions import DatasetNotFoundError, DatasetsError

    hf_cache = str(cache_dir / "hf") if cache_dir is not None else None
    if isinstance(config, ParquetDatasetConfig):
        pattern = config.path
        files = sorted(glob.glob(pattern)) if any(ch in pattern for ch in "*?[") else [pattern]
        files = [f for f in files if Path(f).is_file()]
        if not files:
            raise DatasetError("parquet file not found (no file matches)", path=pattern)
        args: tuple[Any, ...] = ("parquet",)
        kwargs: dict[str, Any] = {"data_files": files, "split": "train"}
    else:
        if config.is_local() and not Path(config.path).exists():
            raise DatasetError("dataset directory not found", path=config.path)
        args = (config.path, config.name)
        kwargs = {"split": split, "revision": config.revision}
    try:
        return datasets.load_dataset(*args, cache_dir=hf_cache, **kwargs)
    except DatasetNotFoundError:
        raise DatasetError(
            "dataset not found (check the hub id; gated datasets need `hf auth login`)", path=config.path
        ) from None
    except ValueError as exc:
        if "split" in str(exc).lower():
            raise DatasetError(f"split {split!r} not found: {exc}", path=config.path) from None
        raise DatasetError(f"cannot load dataset: {exc}", path=config.path) from None
    except (DatasetsError, OSError, ConnectionError) as exc:
        raise DatasetError(f"cannot load dataset: {exc}", path=config.path) from None


def _column(table: Any, name: str) -> list[Any]:
    return list(table.select_columns([name]).with_format("arrow")[name].to_pylist())


def _load_table(
    config: HFDatasetConfig | ParquetDatasetConfig, task: Task, split: str, cache_dir: Path | None
) -> LoadedDataset:
    import datasets

    table = _open_table(config, split, cache_dir)
    source = config.path
    present = list(table.column_names)
    wanted = [config.image_column, config.categories_column]
    wanted += [c for c in (config.grade_column, getattr(config, "split_column", None)) if c]
    id_is_default = "id_column" not in config.model_fields_set
    if not (config.id_column in present or id_is_default):
        wanted.append(config.id_column)
    missing = [c for c in wanted if c not in present]
    if missing:
        raise DatasetError(
            f"column(s) {', '.join(missing)} not found; columns: {', '.join(present)}", path=source
        )

    count = len(table)
    if config.id_column in present:
        ids = ["" if v is None else str(v).strip() for v in _column(table, config.id_column)]
    else:
        ids = [str(index) for index in range(count)]  # food-kb-like data without the id column
    wheres = [_Where(source, None, ids[i] or f"row {i}") for i in range(count)]
    _check_unique(zip(ids, wheres, strict=True))

    indices = list(range(count))
    if isinstance(config, ParquetDatasetConfig):
        if config.split_column:
            splits = ["" if v is None else str(v) for v in _column(table, config.split_column)]
            indices = [i for i in indices if splits[i] == split]
            if not indices:
                raise _no_split(split, splits, source)
        elif split != config.split:
            raise DatasetError(
                f"no split_column, so the whole file is split {config.split!r}; cannot select {split!r}",
                path=source,
            )

    categories = _column(table, config.categories_column)
    grades = _column(table, config.grade_column) if config.grade_column else [None] * count
    rows = [
        _Row(
            ids[i],
            Labels(
                categories=_categories(categories[i], task, wheres[i]),
                grade=_grade(grades[i], task, wheres[i]),
            ),
            wheres[i],
        )
        for i in indices
    ]
    if config.grades is not None:
        rows = _join_grades(rows, _read_grades(config.grades, task), set(ids), config.grades)
    rows = _select(rows, config.limit)

    images = table.select_columns([config.image_column])
    if isinstance(images.features[config.image_column], datasets.Image):
        # raw bytes, not PIL: one corrupt image must become a skipped example, not an exception
        # thrown from inside the datasets iterator
        images = images.cast_column(config.image_column, datasets.Image(decode=False))
    position = {example_id: i for i, example_id in enumerate(ids)}
    chosen = images.select([position[row.id] for row in rows])
    root = _table_root(config)
    cells = (_cell_fetcher(cell[config.image_column], config.image_column, root, source) for cell in chosen)
    return _materialise(config.display_name, split, rows, cells, config.image_max_side)


def _table_root(config: HFDatasetConfig | ParquetDatasetConfig) -> Path | None:
    """Where relative image paths in a table point: the dataset directory, or the parquet's folder."""
    if isinstance(config, HFDatasetConfig):
        return Path(config.path) if config.is_local() and Path(config.path).is_dir() else None
    return Path(config.path).parent


def _is_url(value: str) -> bool:
    return value.startswith(("http://", "https://", "hf://", "s3://", "gs://"))


def _url_error(column: str, source: str, url: str) -> DatasetError:
    return DatasetError(
        f"image column {column!r} holds URLs (e.g. {url[:80]!r}) and no image bytes; fetching URLs needs "
        f"`download: true`, which is not implemented yet; point image_column at a column of images",
        path=source,
    )


def _cell_fetcher(value: Any, column: str, root: Path | None, source: str) -> Callable[[], bytes]:
    """A thunk returning a table cell's image bytes (bytes/path dict, bytes, path string or PIL image)."""
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data:
            return lambda: bytes(data)
        value = path
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        return lambda: data
    if isinstance(value, str) and value:
        if _is_url(value):
            raise _url_error(column, source, value)
        path = Path(value)
        return _read_image_file(path if path.is_absolute() or root is None else root / path)
    if hasattr(value, "save") and hasattr(value, "mode"):  # a PIL image (decoded features)
        image = value

        def encode() -> bytes:
            buffer = BytesIO()
            try:
                image.save(buffer, format="PNG")
            except (OSError, ValueError) as exc:
                raise _Unavailable(f"cannot re-encode the decoded image: {exc}") from None
            return buffer.getvalue()

        return encode

    def absent() -> bytes:
        raise _Unavailable(f"no image in column {column!r}")

    return absent


__all__ = ["default_cache_dir", "load_dataset_split"]
