"""Check a dataset before anything is spent on it: every problem at once, each with what to do.

The loader stops at the first bad label and quietly skips unreadable images, which is right for a
sweep and wrong for someone cleaning a dataset: they want the whole list. This module runs the same
loader in collecting mode (``on_problem``), pushes every image through the same ``prepare_image`` the
sweep and the Lambda use, and then looks at the original bytes (header only where it can) to report
what the normalisation will silently change: EXIF rotation, CMYK, 16-bit, transparency, palettes.

Codes are stable: scripts and the README refer to them. ``CODES`` documents each one.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

from PIL import Image

from promptgrade.data.config import DatasetConfig
from promptgrade.data.loaders import (
    ImageUnavailable,
    PendingExample,
    Problem,
    SplitNotFound,
    read_dataset_split,
)
from promptgrade.errors import DatasetError
from promptgrade.images import MAX_PIXELS, ImageError, prepare_image
from promptgrade.task import Task

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")

MIN_SIDE = 64  # below this a tray photo shows too little to name dishes, let alone leftovers
MAX_ASPECT = 8.0  # wider than this is a strip, a banner or a bad crop, not a tray
LARGE_FACTOR = 8  # more than 8x the model's resolution: most of the decoding work is thrown away
_CHUNK = 32  # images in flight at once: enough for the threads, few enough to bound memory


class CodeDoc(NamedTuple):
    severity: str
    meaning: str
    fix: str


CODES: dict[str, CodeDoc] = {
    "missing_file": CodeDoc(
        "error", "the image file named in the labels does not exist", "fix the path or add the file"
    ),
    "empty_file": CodeDoc("error", "the image file has 0 bytes", "re-copy or re-download it"),
    "not_an_image": CodeDoc(
        "error", "the file is HTML, JSON, PDF or text saved as an image", "replace it with the real image"
    ),
    "unsupported_format": CodeDoc(
        "error",
        "an image format the grading path does not take (HEIC, SVG, ICO, …)",
        "convert to JPEG or PNG",
    ),
    "truncated_image": CodeDoc(
        "error", "the file ends before the image data does", "re-copy or re-download it"
    ),
    "unreadable_image": CodeDoc(
        "error", "the file cannot be read or decoded (corrupt)", "re-export it as JPEG or PNG, or remove it"
    ),
    "decompression_bomb": CodeDoc(
        "error", f"more than {MAX_PIXELS // 1_000_000} megapixels: refused", "downscale it or remove it"
    ),
    "too_small": CodeDoc("warning", f"under {MIN_SIDE} px on a side", "use a larger photo or remove it"),
    "extreme_aspect": CodeDoc(
        "warning", f"more than {MAX_ASPECT:g}:1; the short side all but vanishes", "crop it to the tray"
    ),
    "too_large": CodeDoc(
        "info",
        f"more than {LARGE_FACTOR}x image_max_side or {MAX_PIXELS // 2_000_000} MP: decoded, then downscaled",
        "optional: pre-shrink to speed loading",
    ),
    "converted_mode": CodeDoc(
        "info or warning",
        "CMYK, 16-bit, alpha, palette or greyscale: converted to 8-bit RGB (warning when it changes what the "
        "model sees)",
        "export as 8-bit sRGB if the conversion is not what you want",
    ),
    "exif_rotated": CodeDoc(
        "info", "EXIF orientation: rotated upright before the model sees it", "nothing to do"
    ),
    "multi_frame": CodeDoc(
        "info", "animated or multi-page: only the first frame is used", "save the right frame"
    ),
    "duplicate_id": CodeDoc("error", "two rows share an id", "give each example its own id"),
    "duplicate_image": CodeDoc(
        "warning; error across train and evaluation splits",
        "the same image (as the model sees it) under two ids",
        "remove one copy; never keep one in train and one in the evaluation split",
    ),
    "missing_id": CodeDoc("error", "a row has no id", "give every row a unique id"),
    "missing_labels": CodeDoc("error", "a row names no category", "add at least one category"),
    "unknown_category": CodeDoc(
        "error",
        "a category the task does not allow (closest names given)",
        "use an allowed name or extend the task",
    ),
    "invalid_grade": CodeDoc("error", "the grade is not a number", "write a number or leave it empty"),
    "grade_out_of_range": CodeDoc(
        "error", "the grade is outside the task's scale", "correct it to the scale"
    ),
    "missing_grade": CodeDoc(
        "warning", "no grade: grade metrics exclude the example (or the whole split)", "add the grade"
    ),
    "unsafe_path": CodeDoc(
        "error", "the image path is absolute or leaves the dataset folder", "use a path inside the folder"
    ),
    "missing_split": CodeDoc(
        "error; info for the default train split",
        "the split has no examples",
        "fix `split:` or the split column",
    ),
    "dataset_error": CodeDoc(
        "error",
        "the split cannot be read at all (missing folder, file or column, bad CSV)",
        "fix the file or the experiment's `dataset:` section, as the message says",
    ),
}

# What to do about an image prepare_image refuses; the sweep skips such an example with a reason.
_IMAGE_FIXES = {
    "missing_file": "check the file path in the labels (relative to the dataset folder) or add the image",
    "empty_file": "re-copy or re-download the image: a 0-byte file is an interrupted copy or download",
    "not_an_image": "replace it with the actual image file (a failed download often saves an error page instead)",
    "unsupported_format": "convert it to JPEG or PNG (e.g. ImageMagick: `magick <file> out.jpg`)",
    "truncated_image": "re-copy or re-download it: the file stops part-way through the image data",
    "unreadable_image": "open it in an image viewer; re-export it as JPEG or PNG, or remove the example",
    "decompression_bomb": (
        f"downscale it below {MAX_PIXELS // 1_000_000} megapixels (e.g. 4096 px on the long side) or remove it"
    ),
}
_SKIPPED = " (a sweep skips this example)"

_ORIENTATION = {
    2: "mirrored left-right",
    3: "rotated 180°",
    4: "mirrored top-bottom",
    5: "mirrored and rotated 90°",
    6: "rotated 90° clockwise",
    7: "mirrored and rotated 90°",
    8: "rotated 90° counter-clockwise",
}
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem, or one silent change, for one example (``example_id`` None: the whole split)."""

    severity: Severity
    example_id: str | None
    where: str
    code: str
    message: str
    fix: str
    split: str | None = None


@dataclass(frozen=True, slots=True)
class SplitSummary:
    split: str
    n_examples: int
    usable: int
    checked: bool  # False when the split could not be read (or is an absent optional train split)


@dataclass
class ValidationReport:
    """Every finding for the requested splits, and how many examples survive them.

    ``usable`` counts examples with no error: what a sweep evaluates once the dataset loads.
    """

    dataset: str
    splits: list[SplitSummary]
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    @property
    def counts(self) -> dict[str, int]:
        counted = Counter(f.severity for f in self.findings)
        return {severity: counted[severity] for severity in SEVERITIES}

    @property
    def by_code(self) -> dict[str, int]:
        return dict(sorted(Counter(f.code for f in self.findings).items()))

    @property
    def n_examples(self) -> dict[str, int]:
        return {s.split: s.n_examples for s in self.splits}

    @property
    def usable(self) -> int:
        return sum(s.usable for s in self.splits)

    def counts_for(self, split: str | None) -> dict[str, int]:
        """Severity counts of findings about ``split``'s rows (None: rows of splits not validated)."""
        validated = {s.split for s in self.splits}
        if split is None:
            chosen = [f for f in self.findings if f.split not in validated]
        else:
            chosen = [f for f in self.findings if f.split == split]
        counted = Counter(f.severity for f in chosen)
        return {severity: counted[severity] for severity in SEVERITIES}

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "ok": self.ok,
            "usable": self.usable,
            "counts": self.counts,
            "by_code": self.by_code,
            "splits": [{**asdict(s), **self.counts_for(s.split)} for s in self.splits],
            "findings": [asdict(f) for f in self.findings],
        }


def validate_dataset(
    config: DatasetConfig,
    task: Task,
    base_dir: Path,
    splits: Sequence[str] | None = None,
    *,
    cache_dir: Path | None = None,
) -> ValidationReport:
    """Check ``splits`` (default: the evaluation split, and the train split if there is one).

    Reads labels with the loader's own rules and decodes every image the way a sweep does, but keeps
    going after each problem. Nothing here calls a model; S3 and Hub sources are downloaded as a
    sweep would download them.
    """
    optional: set[str] = set()
    if splits:
        wanted = list(dict.fromkeys(splits))
    else:
        wanted = list(dict.fromkeys([config.split, config.train_split]))
        optional = {config.train_split} - {config.split}
    collector = _Collector()
    summaries: list[SplitSummary] = []
    shas: dict[str, list[tuple[str, str, str]]] = defaultdict(list)  # sha -> (split, id, where)
    rows_by_split: dict[str, list[PendingExample]] = {}
    for split in wanted:
        collector.split = split
        try:
            pending = read_dataset_split(
                config, task, base_dir, split, cache_dir=cache_dir, on_problem=collector.problem
            )
            rows = collector.check_images(pending.examples(), pending.max_side, shas)
        except SplitNotFound as exc:
            absent_ok = split in optional
            collector.add(
                "info" if absent_ok else "error",
                None,
                _where(exc),
                "missing_split",
                exc.message,
                (
                    "nothing to do unless a trained baseline needs it: add rows with this split, or set "
                    "`train_split`"
                    if absent_ok
                    else "check the split name (`split:` in the experiment, or --split) against the data"
                ),
            )
            summaries.append(SplitSummary(split, 0, 0, checked=False))
            continue
        except DatasetError as exc:
            collector.add(
                "error", None, _where(exc), "dataset_error", exc.message, CODES["dataset_error"].fix
            )
            summaries.append(SplitSummary(split, 0, 0, checked=False))
            continue
        collector.check_grades(rows, task)
        rows_by_split[split] = rows
        summaries.append(SplitSummary(split, len(rows), 0, checked=True))

    _duplicate_images(collector, shas, evaluation=config.split, train=config.train_split)
    summaries = [_with_usable(s, rows_by_split.get(s.split, []), collector.findings) for s in summaries]
    order = {severity: rank for rank, severity in enumerate(SEVERITIES)}
    findings = sorted(collector.findings, key=lambda f: order[f.severity])
    return ValidationReport(config.resolved(Path(base_dir)).display_name, summaries, findings)


# --------------------------------------------------------------------------------------------------
# collecting


class _Collector:
    """Findings in discovery order, without the repeats that come from reading one labels file per split."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.split: str | None = None
        self._seen: set[tuple[str, str, str | None, str]] = set()

    def add(
        self,
        severity: Severity,
        example_id: str | None,
        where: str,
        code: str,
        message: str,
        fix: str,
        split: str | None = None,
    ) -> None:
        key = (code, where, example_id, message)
        if key in self._seen:
            return
        self._seen.add(key)
        self.findings.append(Finding(severity, example_id, where, code, message, fix, split or self.split))

    def problem(self, problem: Problem) -> None:
        """The loader's ``on_problem``: every label, id and path problem it finds is an error."""
        where = problem.path if problem.line is None else f"{problem.path}:{problem.line}"
        self.add(
            "error", problem.example_id, where, problem.code, problem.message, problem.fix, problem.split
        )

    def check_images(
        self,
        examples: Iterable[PendingExample],
        max_side: int,
        shas: dict[str, list[tuple[str, str, str]]],
    ) -> list[PendingExample]:
        """Decode every image (threads, in bounded chunks); returns the examples, in order."""
        seen: list[PendingExample] = []
        workers = min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for chunk in _chunks(examples, _CHUNK):
                for example, (found, sha) in zip(
                    chunk, pool.map(lambda e: _check_image(e, max_side), chunk), strict=True
                ):
                    seen.append(example)
                    for finding in found:
                        self.add(*finding, split=example.split)
                    if sha is not None:
                        shas[sha].append((example.split, example.id, example.image.where))
        return seen

    def check_grades(self, rows: list[PendingExample], task: Task) -> None:
        """``missing_grade``: per example when some have grades, once when the whole split has none."""
        grade = task.grade.name
        bad = {
            f.example_id
            for f in self.findings
            if f.code in ("invalid_grade", "grade_out_of_range") and f.split == self.split
        }
        ungraded = [r for r in rows if r.labels.grade is None and r.id not in bad]
        if not rows or not ungraded:
            return
        if len(ungraded) == len(rows):
            self.add(
                "warning",
                None,
                _file_of(rows[0].where),
                "missing_grade",
                f"no example of split {self.split!r} has a {grade}: grade_accuracy and grade_mae will be empty",
                f"add a {grade} column to the labels, or a grades CSV (`grades:` in the dataset section); "
                "fine if you only score categories",
            )
            return
        for row in ungraded:
            self.add(
                "warning",
                row.id,
                row.where,
                "missing_grade",
                f"no {grade} given: grade metrics will exclude this example (categories are still scored)",
                f"add its {grade}, or leave it empty on purpose if it cannot be judged",
            )


T = TypeVar("T")


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _file_of(where: str) -> str:
    """``labels.csv:12`` -> ``labels.csv``: a finding about a whole split points at the file."""
    path, _, line = where.rpartition(":")
    return path if path and line.isdigit() else where


def _where(error: DatasetError) -> str:
    if error.path is None:
        return ""
    return error.path if error.line is None else f"{error.path}:{error.line}"


def _with_usable(summary: SplitSummary, rows: list[PendingExample], findings: list[Finding]) -> SplitSummary:
    """Examples with no error attached to them; an id used twice is unusable wherever it appears."""
    duplicated = {f.example_id for f in findings if f.code == "duplicate_id"}
    failed = {f.example_id for f in findings if f.severity == "error" and f.split == summary.split}
    usable = sum(1 for r in rows if r.id not in failed and r.id not in duplicated)
    return SplitSummary(summary.split, summary.n_examples, usable, summary.checked)


def _duplicate_images(
    collector: _Collector, shas: dict[str, list[tuple[str, str, str]]], *, evaluation: str, train: str
) -> None:
    """The same pixels under two ids: double-counted, or worse, tested on what a baseline trained on.

    A leak is reported on the evaluation-split copies (the ones to drop); otherwise on every copy
    after the first.
    """
    for copies in shas.values():
        if len(copies) < 2:
            continue
        splits = {split for split, _, _ in copies}
        leaks = evaluation in splits and train in splits and evaluation != train
        flagged = [c for c in copies if c[0] == evaluation] if leaks else copies[1:]
        for copy in flagged:
            split, example_id, where = copy
            others = ", ".join(f"{i!r} ({s})" for s, i, _ in copies if (s, i, _) != copy)
            if leaks:
                collector.add(
                    "error",
                    example_id,
                    where,
                    "duplicate_image",
                    f"same image as {others}: it is in both the {train!r} and the {evaluation!r} split, so a "
                    "trained baseline is tested on an image it learned from",
                    f"remove it from the {evaluation!r} split (or the copy from {train!r})",
                    split,
                )
            else:
                collector.add(
                    "warning",
                    example_id,
                    where,
                    "duplicate_image",
                    f"same image as {others}: it counts twice in the metrics",
                    "remove one copy, unless they really are two different trays photographed identically",
                    split,
                )


# --------------------------------------------------------------------------------------------------
# one image

_Found = tuple[Severity, str | None, str, str, str, str]


def _check_image(example: PendingExample, max_side: int) -> tuple[list[_Found], str | None]:
    """Findings for one example's image, and the sha256 of what the model would see (None if unusable)."""
    where = example.image.where
    try:
        data = example.image.fetch()
    except ImageUnavailable as exc:
        return [("error", example.id, where, exc.code, exc.reason, _IMAGE_FIXES[exc.code] + _SKIPPED)], None
    try:
        prepared = prepare_image(data, max_side=max_side, source=where)
    except ImageError as exc:
        message = exc.message
        if exc.code == "unsupported_format":
            message = _name_foreign_format(data) or message
        fix = _IMAGE_FIXES.get(exc.code, _IMAGE_FIXES["unreadable_image"]) + _SKIPPED
        return [("error", example.id, where, exc.code, message, fix)], None
    found: list[_Found] = []
    for severity, code, message, fix in _inspect(data, max_side):
        found.append((severity, example.id, where, code, message, fix))
    return found, prepared.sha256


def _name_foreign_format(data: bytes) -> str | None:
    """Name a format Pillow knows but the grading path refuses (ICO, PSD, JPEG 2000, …).

    Lab-only: the grading path pins the formats it opens so a crafted file never reaches a rare
    decoder. Here only the header is parsed, of a file that is in the user's own dataset.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(BytesIO(data)) as image:
                name, description = image.format, image.format_description
    except Exception:  # any plugin may fail in its own way; unnamed is the honest answer
        return None
    if not name:
        return None
    kind = f"{name} ({description})" if description and description != name else name
    return f"file is {kind}, which is not supported; convert it to JPEG or PNG"


def _inspect(data: bytes, max_side: int) -> list[tuple[Severity, str, str, str]]:
    """What normalisation will change, read from the original bytes (already known to decode)."""
    found: list[tuple[Severity, str, str, str]] = []
    with Image.open(BytesIO(data)) as image:
        width, height = image.size
        orientation = _orientation(image)
        if orientation in (5, 6, 7, 8):
            width, height = height, width  # the size as the model will see it
        frames = getattr(image, "n_frames", 1)
        conversion = _conversion(image, data)
    size = f"{width}×{height}"
    longest, shortest = max(width, height), min(width, height)
    if shortest < MIN_SIDE:
        found.append(
            (
                "warning",
                "too_small",
                f"only {size} px: too little detail to recognise dishes or judge what is left",
                "replace it with a larger photo (at least 256 px on the short side) or remove the example",
            )
        )
    if longest / shortest > MAX_ASPECT:
        scale = min(1.0, max_side / longest)
        found.append(
            (
                "warning",
                "extreme_aspect",
                f"{size} is {longest / shortest:.0f}:1; fitted to {max_side} px the short side is "
                f"{max(1, round(shortest * scale))} px",
                "crop it to the tray; a strip this thin is usually a banner, a panorama or a bad crop",
            )
        )
    if longest > LARGE_FACTOR * max_side or width * height > MAX_PIXELS // 2:
        found.append(
            (
                "info",
                "too_large",
                f"{size} ({width * height / 1e6:.0f} MP) is decoded in full, then downscaled to {max_side} px "
                "on the long side",
                f"optional: pre-shrink to about {2 * max_side} px on the long side to make loading faster",
            )
        )
    if conversion is not None:
        found.append(conversion)
    if orientation in _ORIENTATION:
        found.append(
            (
                "info",
                "exif_rotated",
                f"EXIF orientation {orientation}: will be {_ORIENTATION[orientation]} before the model sees "
                "it, as a photo viewer shows it",
                "nothing to do; save it upright if other tools that ignore EXIF will read it",
            )
        )
    if frames > 1:
        found.append(
            (
                "info",
                "multi_frame",
                f"has {frames} frames (animated or multi-page): only the first is used",
                "if the tray is not in the first frame, save that frame as its own image",
            )
        )
    return found


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(0x0112, 1)
    except (OSError, ValueError, TypeError, SyntaxError, KeyError):
        return 1  # a malformed EXIF block: prepare_image ignores it too
    return value if isinstance(value, int) else 1


def _png_bit_depth(data: bytes) -> int | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) > 24:
        return data[24]
    return None


def _conversion(image: Image.Image, data: bytes) -> tuple[Severity, str, str, str] | None:
    """``converted_mode``: what turning this image into 8-bit RGB does, and whether that matters.

    A warning when the model will see something a person looking at the file might not expect
    (no colour, white where it is transparent, approximate colours); info when nothing visible changes.
    """
    mode = image.mode
    parts: list[tuple[Severity, str, str]] = []
    if mode == "CMYK":
        if image.info.get("icc_profile"):
            parts.append(("info", "converted to sRGB with its embedded colour profile", "nothing to do"))
        else:
            parts.append(
                (
                    "warning",
                    "no colour profile, so converted to RGB by formula: colours may shift",
                    "export it as an sRGB JPEG",
                )
            )
    elif mode in ("I", "F") or mode.startswith("I;16"):
        parts.append(
            (
                "warning",
                "16/32-bit greyscale: scaled to 8 bits; the model sees a grey image",
                "use the colour original if there is one",
            )
        )
    elif mode in ("1", "L", "LA", "La"):
        parts.append(
            (
                "warning",
                "greyscale: the model sees no colour, which hides cues such as sauce or browning",
                "use the colour original if there is one",
            )
        )
    elif mode in ("P", "PA"):
        parts.append(("info", "palette image (at most 256 colours): expanded to RGB", "nothing to do"))
    elif mode not in ("RGB", "RGBA", "RGBa"):
        parts.append(("info", f"{mode}: converted to RGB", "nothing to do"))
    if _png_bit_depth(data) == 16 and mode in ("RGB", "RGBA"):
        parts.append(("info", "16 bits per channel: reduced to 8 (no visible change)", "nothing to do"))
    transparent = _transparent(image)
    if transparent is True:
        parts.append(
            (
                "warning",
                "has transparent pixels: they are filled with white, so the model sees white there",
                "flatten it on the background you want, or accept white",
            )
        )
    elif transparent is False:
        parts.append(
            ("info", "has an alpha channel but no transparent pixel: the channel is dropped", "nothing to do")
        )
    if not parts:
        return None
    severity: Severity = "warning" if any(p[0] == "warning" for p in parts) else "info"
    fixes = list(dict.fromkeys(p[2] for p in parts if p[2] != "nothing to do")) or ["nothing to do"]
    label = f"{image.format} {mode}" if image.format else mode
    return severity, "converted_mode", f"{label}: " + "; ".join(p[1] for p in parts), "; ".join(fixes)


def _transparent(image: Image.Image) -> bool | None:
    """True/False when the image has an alpha channel (or transparent colour); None when it has none.

    Needs the pixels, so it is only decoded for images that can be transparent at all.
    """
    if image.mode not in _ALPHA_MODES and "transparency" not in image.info:
        return None
    try:
        alpha = image.convert("RGBA").getchannel("A")
    except (OSError, ValueError):
        return None
    low, _ = alpha.getextrema()
    return low < 255


__all__ = ["CODES", "SEVERITIES", "Finding", "SplitSummary", "ValidationReport", "validate_dataset"]
