"""Merge a Label Studio export into the dataset's labels: what changes, what conflicts, what is refused.

The plan is computed in full before anything is written, so ``--dry-run`` shows exactly what a real
import would do, and a single fatal problem (an export of another project, a category outside the
task, a grade off the scale, annotators who disagree, a row edited on disk since the export) leaves
the file untouched. Only the categories and grade cells of known examples change: an id the labels
file does not know is reported, never added as a new example, and ids, image files and splits are
never written.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from promptgrade.config import Experiment
from promptgrade.data.loaders import _category_values
from promptgrade.errors import ConfigError, PromptgradeError
from promptgrade.labels import exporter
from promptgrade.labels.labelfile import LabelsFile, format_grade
from promptgrade.labels.studio import Annotation, ExportedTask, Issue, format_labels, read_export
from promptgrade.task import Task

Prefer = Literal["none", "latest"]
Origin = Literal["same", "elsewhere", "changed"]  # where an exported row came from (see _since_export)


class ImportRefused(PromptgradeError):
    """The export has problems that would make the merged labels wrong; nothing was written."""


@dataclass(frozen=True)
class Change:
    example_id: str
    task_ids: tuple[object, ...]
    old_categories: tuple[str, ...]
    new_categories: tuple[str, ...]
    old_grade: float | None
    new_grade: float | None
    annotator: str

    @property
    def kind(self) -> str:
        """``changed`` if a label that was there is now different; ``added`` if only empty cells filled."""
        replaced = (self.old_categories and self.new_categories != self.old_categories) or (
            self.old_grade is not None and self.new_grade != self.old_grade
        )
        return "changed" if replaced else "added"

    def as_dict(self) -> dict[str, object]:
        return {
            "example_id": self.example_id,
            "kind": self.kind,
            "task_ids": list(self.task_ids),
            "old": {"categories": list(self.old_categories), "grade": self.old_grade},
            "new": {"categories": list(self.new_categories), "grade": self.new_grade},
            "annotator": self.annotator,
        }


@dataclass
class ImportPlan:
    export: Path
    labels: LabelsFile
    task: Task
    changes: list[Change] = field(default_factory=list)
    unchanged: int = 0
    issues: list[Issue] = field(default_factory=list)

    @property
    def fatal(self) -> list[Issue]:
        return [i for i in self.issues if i.fatal]

    @property
    def notes(self) -> list[Issue]:
        return [i for i in self.issues if not i.fatal]

    def write(self) -> Path | None:
        """Apply the changes (atomically, previous file kept); refuse if anything is fatal."""
        if self.fatal:
            raise refusal(self.fatal)
        if not self.changes:
            return None
        positions = self.labels.index()
        for change in self.changes:
            if change.example_id not in positions:  # a grades CSV gaining a row for a dataset example
                self.labels.rows.append([""] * len(self.labels.header))
                self.labels.set(len(self.labels.rows) - 1, "id", change.example_id)
                positions[change.example_id] = len(self.labels.rows) - 1
            position = positions[change.example_id]
            if self.labels.column("categories") is not None and change.new_categories:
                self.labels.set(position, "categories", ";".join(change.new_categories))
            if change.new_grade is not None:
                self.labels.set(position, self.task.grade.name, format_grade(change.new_grade))
        return self.labels.write({"export": str(self.export), "changes": [c.as_dict() for c in self.changes]})


def refusal(fatal: list[Issue]) -> ImportRefused:
    if len(fatal) == 1:
        return ImportRefused(f"{fatal[0]}; nothing written")
    return ImportRefused(f"{len(fatal)} problems in the export (listed above); nothing written")


def plan_experiment_import(
    experiment_path: Path, export: Path, *, labels: Path | None = None, prefer: Prefer = "none"
) -> ImportPlan:
    """``plan_import`` into an experiment's labels file (or ``labels``), knowing its dataset's examples."""
    experiment, task = exporter.load(experiment_path)
    target = exporter.labels_path(experiment, labels)
    if target is None:
        raise ConfigError(
            f"dataset kind {experiment.dataset.kind!r} has no labels file to write: set dataset.grades "
            "(a CSV id,<grade>) or pass --labels PATH"
        )
    # A folder's labels.csv is the dataset; any other labels file may not have a row for each example yet.
    folder = experiment.dataset.kind == "folder" and labels is None
    return plan_import(
        export,
        target,
        task,
        prefer=prefer,
        dataset_ids=None if folder else functools.partial(_dataset_ids, experiment, task),
    )


def _dataset_ids(experiment: Experiment, task: Task) -> set[str]:
    """The examples of the evaluation and training splits; a split that cannot be read adds none."""
    found: set[str] = set()
    for name in {experiment.dataset.split, experiment.dataset.train_split}:
        try:
            found |= set(exporter.current_labels(experiment, task, name))
        except PromptgradeError:
            continue
    return found


def plan_import(
    export: Path,
    labels_path: Path,
    task: Task,
    *,
    prefer: Prefer = "none",
    dataset_ids: Callable[[], set[str]] | None = None,
) -> ImportPlan:
    """What importing ``export`` into ``labels_path`` would change; nothing is written here.

    ``dataset_ids`` lists the dataset's examples when the labels file is a grades CSV that need not
    hold a row for each of them yet (a hub dataset's grades); for a folder's labels.csv the file's own
    rows are the dataset.
    """
    tasks, issues = read_export(export, task)
    labels = LabelsFile.read(labels_path)
    plan = ImportPlan(export, labels, task, issues=issues)
    positions = labels.index()
    known = set(positions)
    if dataset_ids is not None:
        known |= dataset_ids()
    if labels.column("categories") is None and any(a.categories for t in tasks for a in t.annotations):
        issues.append(
            Issue(None, None, f"{labels_path.name} has no categories column: only grades are written", False)
        )
    where = labels_path.name if dataset_ids is None else f"{labels_path.name} nor the dataset"
    grouped: dict[str, list[ExportedTask]] = {}
    for exported in tasks:
        grouped.setdefault(exported.example_id, []).append(exported)
    origins: set[Origin] = set()
    for example_id, group in grouped.items():
        if example_id not in known:
            issues.append(
                Issue(group[0].task_id, example_id, f"unknown example id: not in {where}, not added", False)
            )
            continue
        change = _example_change(plan, example_id, group, prefer, positions.get(example_id))
        if change is None:
            continue
        origin, conflict = _since_export(group[0], plan, labels_path, change)
        origins.add(origin)
        if conflict is not None:
            issues.append(conflict)
            continue
        plan.changes.append(change)
    issues.extend(_origin_notes(origins, labels_path))
    return plan


def _example_change(
    plan: ImportPlan, example_id: str, group: list[ExportedTask], prefer: Prefer, position: int | None
) -> Change | None:
    """What one example's annotations change in its row; None when there is nothing to merge: no
    annotation, annotators who disagree (an issue says so), or the labels it already has."""
    annotations = [a for t in group for a in t.annotations]
    if not annotations:
        return None
    labels, task = plan.labels, plan.task
    chosen = _resolve(annotations, prefer, task, plan.issues)
    if chosen is None:
        return None
    old_categories = _old_categories(labels, position, task)
    old_grade = _old_grade(labels, position, task)
    new_categories = chosen.categories if chosen.categories is not None else old_categories
    if labels.column("categories") is None:
        new_categories = old_categories
    new_grade = chosen.grade if chosen.grade is not None else old_grade
    if (new_categories, new_grade) == (old_categories, old_grade):
        plan.unchanged += 1  # also when this export was imported before: nothing to merge
        return None
    ids = tuple(t.task_id for t in group)
    return Change(example_id, ids, old_categories, new_categories, old_grade, new_grade, chosen.annotator)


def _since_export(
    exported: ExportedTask, plan: ImportPlan, labels_path: Path, change: Change
) -> tuple[Origin, Issue | None]:
    """Whether the row was exported from this file as it is now: ``elsewhere`` (another labels file,
    nothing to compare), ``changed`` (this file changed on disk since), or ``same``. A row that itself
    changed since is a fatal issue: merging would overwrite an edit nobody saw in Label Studio."""
    exported_hash = exported.data.get("labels_sha256")
    if exported.data.get("labels_file") not in (None, str(labels_path)):
        return "elsewhere", None
    if not exported_hash or exported_hash == plan.labels.sha256:
        return "same", None
    then = _exported_labels(exported)
    if then == (change.old_categories, change.old_grade):
        return "changed", None
    now = format_labels(change.old_categories, change.old_grade, plan.task)
    conflict = Issue(
        change.task_ids[0],
        change.example_id,
        f"{labels_path.name} changed on disk since the export (sha256 {str(exported_hash)[:12]}… "
        f"then, {plan.labels.sha256[:12]}… now) and so did this row: "
        f"{format_labels(*then, plan.task)} then, {now} now; "
        "re-export, or import into the file as it was",
        True,
    )
    return "changed", conflict


def _origin_notes(origins: set[Origin], labels_path: Path) -> list[Issue]:
    notes = []
    if "elsewhere" in origins:
        notes.append(
            Issue(
                None,
                None,
                f"the tasks were exported from another labels file than {labels_path}: no check for "
                "changes since the export",
                False,
            )
        )
    if "changed" in origins:
        notes.append(
            Issue(
                None,
                None,
                f"{labels_path.name} changed on disk since the export; the rows this import touches did not",
                False,
            )
        )
    return notes


def _resolve(
    annotations: list[Annotation], prefer: Prefer, task: Task, issues: list[Issue]
) -> Annotation | None:
    """One annotation per example: annotators who agree are one answer; who disagree, a conflict."""
    answers = {(tuple(sorted(a.categories or ())), a.grade) for a in annotations}
    if len(answers) == 1:
        return annotations[-1]
    shown = "; ".join(
        f"{a.annotator}: {format_labels(a.categories or (), a.grade, task)}" for a in annotations
    )
    first = annotations[0]
    if prefer == "latest":
        latest = max(annotations, key=lambda a: a.when or datetime.min.replace(tzinfo=UTC))
        issues.append(
            Issue(
                first.task_id,
                first.example_id,
                f"annotators disagree ({shown}); latest wins: {latest.annotator}",
                False,
            )
        )
        return latest
    issues.append(
        Issue(
            first.task_id,
            first.example_id,
            f"annotators disagree ({shown}): settle it in Label Studio, or pass --prefer latest",
            True,
        )
    )
    return None


def _old_categories(labels: LabelsFile, position: int | None, task: Task) -> tuple[str, ...]:
    if position is None:
        return ()
    named = _category_values(labels.cell(position, "categories"))
    return tuple(task.canonical_category(n) or n for n in named)


def _old_grade(labels: LabelsFile, position: int | None, task: Task) -> float | None:
    if position is None:
        return None
    text = labels.cell(position, task.grade.name).removesuffix("%")
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _exported_labels(exported: ExportedTask) -> tuple[tuple[str, ...], float | None]:
    categories = exported.data.get("current_categories") or []
    grade = exported.data.get("current_grade")
    return tuple(str(c) for c in categories), (float(grade) if isinstance(grade, int | float) else None)
