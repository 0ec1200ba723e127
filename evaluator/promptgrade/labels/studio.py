"""Label Studio's own formats: the labelling config, the import tasks with pre-annotations, and the
JSON export read back.

The config is generated from the task file, so another business's task (fruit quality A/B/C, a 1–5
scale) gets its own interface with no code. The names in it are the contract with the export: the
categories come back under ``from_name="categories"`` and the grade under the task's grade name; an
export with other names is from another project and is refused.
"""

from __future__ import annotations

import base64
import json
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from promptgrade.errors import ConfigError, DatasetError
from promptgrade.task import Task

IMAGE, CATEGORIES, WHY, CURRENT = "image", "categories", "why", "current"
LOCAL_FILES_PREFIX = "/data/local-files/?d="


def label_config(task: Task) -> str:
    """The labelling interface: the image, a choice of the task's categories, a number on its scale."""
    if task.grade.name in (IMAGE, CATEGORIES, WHY, CURRENT):
        raise ConfigError(
            f"task {task.name!r}: grade name {task.grade.name!r} clashes with a config tag name"
        )
    scale = task.grade
    view = ET.Element("View")
    many = f"1 to {task.max_categories} categories" if task.max_categories > 1 else "one category"
    ET.SubElement(view, "Header", value=f"{task.name}: choose {many}, and {scale.description}")
    ET.SubElement(view, "Text", name=WHY, value="$reason")
    ET.SubElement(view, "Text", name=CURRENT, value="$current_labels")
    ET.SubElement(view, "Image", name=IMAGE, value="$image", zoom="true")
    choices = ET.SubElement(
        view,
        "Choices",
        name=CATEGORIES,
        toName=IMAGE,
        choice="multiple" if task.max_categories > 1 else "single",
        showInline="true",
        required="true",
    )
    for category in task.categories:
        ET.SubElement(choices, "Choice", value=category)
    whole = float(scale.minimum).is_integer() and float(scale.maximum).is_integer()
    ET.SubElement(
        view,
        "Number",
        name=scale.name,
        toName=IMAGE,
        min=f"{scale.minimum:g}",
        max=f"{scale.maximum:g}",
        step="1" if whole else "any",
    )
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"


def local_files_url(image: Path, document_root: Path) -> str:
    """How Label Studio serves a local file: relative to LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT."""
    try:
        # not resolve(): a symlinked folder under the root is served through the link, as here
        relative = Path(os.path.abspath(image)).relative_to(os.path.abspath(document_root))
    except ValueError:
        raise DatasetError(
            f"image {image} is outside the document root {document_root}: pass --document-root a folder "
            "that holds every image (and start Label Studio with it)"
        ) from None
    return LOCAL_FILES_PREFIX + quote(relative.as_posix())


def data_url(data: bytes, mime_type: str) -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode('ascii')}"


def format_labels(categories: tuple[str, ...], grade: float | None, task: Task) -> str:
    if not categories and grade is None:
        return "(no label yet)"
    shown_grade = "?" if grade is None else f"{grade:g}"
    return f"{'; '.join(categories) or '?'} · {task.grade.name} {shown_grade}"


def prediction(
    categories: tuple[str, ...], grade: float | None, task: Task, model_version: str, score: float | None
) -> dict[str, Any] | None:
    """A pre-annotation: the candidate's answer in Label Studio's result format (None: nothing usable)."""
    allowed = [c for c in (task.canonical_category(name) for name in categories) if c is not None]
    result: list[dict[str, Any]] = []
    if allowed:
        result.append(
            {
                "from_name": CATEGORIES,
                "to_name": IMAGE,
                "type": "choices",
                "value": {"choices": list(dict.fromkeys(allowed))[: task.max_categories]},
            }
        )
    if grade is not None and task.grade.contains(grade):
        result.append(
            {"from_name": task.grade.name, "to_name": IMAGE, "type": "number", "value": {"number": grade}}
        )
    if not result:
        return None
    shown: dict[str, Any] = {"model_version": model_version, "result": result}
    if score is not None:
        shown["score"] = round(score, 4)
    return shown


# --------------------------------------------------------------------------------------------------
# reading an export back


@dataclass(frozen=True)
class Issue:
    """One thing wrong or worth knowing about an export; ``fatal`` ones stop the write."""

    task_id: Any  # None: not about one task
    example_id: str | None
    message: str
    fatal: bool

    def __str__(self) -> str:
        if self.task_id is None:  # about the export or the labels file as a whole
            return self.message
        where = f"task {self.task_id}" + (f" (example {self.example_id!r})" if self.example_id else "")
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class Annotation:
    """One annotator's submitted answer for one example (None: that field was left empty)."""

    task_id: Any
    annotation_id: Any
    example_id: str
    annotator: str
    when: datetime | None
    categories: tuple[str, ...] | None
    grade: float | None


@dataclass
class ExportedTask:
    task_id: Any
    example_id: str
    data: dict[str, Any]
    annotations: list[Annotation] = field(default_factory=list)


def read_export(path: Path, task: Task) -> tuple[list[ExportedTask], list[Issue]]:
    """Label Studio's JSON export (a list of tasks; or one task) as annotations checked against the task."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError("Label Studio export not found", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read Label Studio export: {exc}", path=path) from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"not JSON: {exc.msg}", path=path, line=exc.lineno) from None
    items = [raw] if isinstance(raw, dict) else raw
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise DatasetError("not a Label Studio JSON export (expected a list of tasks)", path=path)
    tasks: list[ExportedTask] = []
    issues: list[Issue] = []
    for position, item in enumerate(items):
        task_id = item.get("id", f"#{position + 1}")
        data = item.get("data")
        example_id = data.get("example_id") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(example_id, str) or not example_id:
            issues.append(
                Issue(
                    task_id,
                    None,
                    "no data.example_id: this task was not made by `promptgrade label export`",
                    True,
                )
            )
            continue
        exported = ExportedTask(task_id, example_id, data)
        annotations = item.get("annotations", item.get("completions")) or []
        submitted = [
            a
            for a in annotations
            if isinstance(a, dict) and not a.get("was_cancelled") and not a.get("skipped") and a.get("result")
        ]
        if not submitted:
            issues.append(
                Issue(task_id, example_id, "no annotation (not labelled, or skipped): left as is", False)
            )
        for annotation in submitted:
            parsed = _annotation(task_id, example_id, annotation, task, issues)
            if parsed is not None:
                exported.annotations.append(parsed)
        tasks.append(exported)
    return tasks, issues


def _annotation(
    task_id: Any, example_id: str, annotation: dict[str, Any], task: Task, issues: list[Issue]
) -> Annotation | None:
    def fatal(message: str) -> None:
        issues.append(Issue(task_id, example_id, message, True))

    categories: tuple[str, ...] | None = None
    grade: float | None = None
    ok = True
    for region in annotation.get("result") or []:
        name = region.get("from_name") if isinstance(region, dict) else None
        value = region.get("value") if isinstance(region, dict) else None
        if not isinstance(value, dict):
            value = {}
        if name == CATEGORIES:
            chosen = value.get("choices")
            if not isinstance(chosen, list) or not chosen:
                fatal("the categories result has no choices")
                ok = False
                continue
            canonical = []
            for choice in chosen:
                category = task.canonical_category(str(choice))
                if category is None:
                    fatal(f"category {choice!r} is not in task {task.name!r}")
                    ok = False
                elif category not in canonical:
                    canonical.append(category)
            if len(canonical) > task.max_categories:
                fatal(
                    f"{len(canonical)} categories chosen; task {task.name!r} allows at most {task.max_categories}"
                )
                ok = False
            categories = tuple(canonical)
        elif name == task.grade.name:
            number = value.get("number")
            if isinstance(number, bool) or not isinstance(number, int | float) or math.isnan(number):
                fatal(f"{task.grade.name} {number!r} is not a number")
                ok = False
            elif not task.grade.contains(float(number)):
                scale = task.grade
                fatal(
                    f"{scale.name} {number:g} is outside the task's scale [{scale.minimum:g}, {scale.maximum:g}]"
                )
                ok = False
            else:
                grade = float(number)
        else:
            fatal(
                f"unknown from_name {name!r} (expected {CATEGORIES!r} or {task.grade.name!r}): an export of "
                "another project or labelling config?"
            )
            ok = False
    if not ok:
        return None
    return Annotation(
        task_id,
        annotation.get("id"),
        example_id,
        _annotator(annotation.get("completed_by")),
        _when(annotation.get("updated_at") or annotation.get("created_at")),
        categories,
        grade,
    )


def _annotator(completed_by: Any) -> str:
    if isinstance(completed_by, dict):
        return str(completed_by.get("email") or completed_by.get("id") or "?")
    return "?" if completed_by is None else f"user {completed_by}"


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)  # comparable with the others
