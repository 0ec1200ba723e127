"""What every kind of trained baseline is and shares: the interface, the training targets, the
decision rule and the saved form.

A baseline answers with the same ``Prediction`` a prompted model's answer parses into, so the scorer
(and therefore every figure in MLflow) cannot tell the two apart. The decision rule that turns scores
into an answer lives here once, so the classical model and the CNN are compared on their scores, not
on two different ways of choosing categories.

The kinds (``classical``, ``cnn``) import this module; ``model`` chooses among them, so nothing here
may import a kind.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from promptgrade.answers import Prediction
from promptgrade.errors import DatasetError
from promptgrade.task import Task

if TYPE_CHECKING:
    from promptgrade.data.examples import Example

Progress = Callable[[str, float], None]
"""Called with a short message and the fraction of training done (0–1)."""

MANIFEST = "baseline.json"
MANIFEST_FORMAT = 1
DEFAULT_SECOND_CATEGORY_THRESHOLD = 0.5


@runtime_checkable
class Baseline(Protocol):
    """A model trained on labelled images that answers like a prompted model does."""

    name: str  # the kind: "classical", "cnn"
    task: Task | None  # set by fit/load; None before

    def fit(
        self, examples: Sequence[Example], task: Task, seed: int = 0, progress: Progress | None = None
    ) -> Baseline: ...

    def predict(self, examples: Sequence[Example]) -> list[Prediction]: ...

    def predict_images(self, images: Sequence[bytes]) -> list[Prediction]:
        """Predict from image bytes alone: what serving (MLflow pyfunc, a Lambda) has."""
        ...

    def save(self, directory: str | Path) -> Path: ...

    @classmethod
    def load(cls, directory: str | Path) -> Baseline: ...


# --------------------------------------------------------------------------------------------------
# Training targets and the decision rule, shared by every kind


class Targets:
    """Multi-hot category targets over the categories seen in training, and grades (NaN if unlabelled)."""

    def __init__(self, vocabulary: tuple[str, ...], multi_hot: np.ndarray, grades: np.ndarray) -> None:
        self.vocabulary = vocabulary
        self.multi_hot = multi_hot
        self.grades = grades

    @property
    def graded(self) -> np.ndarray:
        return ~np.isnan(self.grades)


def training_targets(examples: Sequence[Example], task: Task) -> Targets:
    """The targets, or a DatasetError when there is nothing a classifier could learn from.

    The vocabulary is the task's categories that occur in training, in task order: a category never
    seen cannot be predicted, and keeping task order makes saved models stable across runs.
    """
    if not examples:
        raise DatasetError("cannot train a baseline: the training split is empty")
    rows: list[set[str]] = []
    for example in examples:
        names: set[str] = set()
        for raw in example.labels.categories:
            canonical = task.canonical_category(raw)
            if canonical is None:
                raise DatasetError(
                    f"cannot train a baseline: example {example.id!r} has category {raw!r}, "
                    f"which task {task.name!r} does not allow"
                )
            names.add(canonical)
        rows.append(names)
    seen = set().union(*rows)
    vocabulary = tuple(c for c in task.categories if c in seen)
    if len(vocabulary) < 2:
        found = ", ".join(repr(c) for c in vocabulary) or "none"
        raise DatasetError(
            f"cannot train a baseline: the training split ({len(examples)} examples) has labels for "
            f"fewer than 2 categories (found {found}); a classifier needs at least two to tell apart"
        )
    multi_hot = np.array([[c in names for c in vocabulary] for names in rows], dtype=np.float32)
    grades = np.array(
        [math.nan if e.labels.grade is None else float(e.labels.grade) for e in examples], dtype=np.float64
    )
    return Targets(vocabulary, multi_hot, grades)


def decide(
    probabilities: np.ndarray,
    grades: np.ndarray,
    vocabulary: Sequence[str],
    task: Task,
    second_category_threshold: float = DEFAULT_SECOND_CATEGORY_THRESHOLD,
) -> list[Prediction]:
    """Always the most probable category; a second only if the model believes it is there too.

    Naming a second category can only raise ``category_accuracy`` (any named true category counts),
    so it must be earned by probability, not added by default — otherwise the baseline's figure would
    reflect the metric's generosity rather than what the model knows.
    """
    predictions = []
    low, high = task.grade.minimum, task.grade.maximum
    for row, grade in zip(probabilities, grades, strict=True):
        order = np.argsort(-row, kind="stable")
        chosen = [vocabulary[order[0]]]
        if task.max_categories >= 2 and len(order) > 1 and row[order[1]] >= second_category_threshold:
            chosen.append(vocabulary[order[1]])
        predictions.append(
            Prediction(
                categories=tuple(chosen),
                grade=float(min(high, max(low, float(grade)))),
                answer_format="json",
            )
        )
    return predictions


def fallback_grade(targets: Targets, task: Task) -> float:
    """The grade to predict when too few training examples carry one: their mean, else mid-scale."""
    graded = targets.grades[targets.graded]
    if graded.size:
        return float(graded.mean())
    return (task.grade.minimum + task.grade.maximum) / 2


# --------------------------------------------------------------------------------------------------
# The saved form: a manifest every kind writes, plus the kind's own files


def write_manifest(directory: str | Path, kind: str, task: Task, **details: Any) -> Path:
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"format": MANIFEST_FORMAT, "kind": kind, "task": task.model_dump(mode="json"), **details}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder


def read_manifest(directory: str | Path, kind: str | None = None) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError("not a saved baseline (no baseline.json)", path=directory) from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"baseline.json is not valid JSON: {exc.msg}", path=directory) from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise DatasetError(
            f"saved baseline has format {manifest.get('format')!r}; this promptgrade reads {MANIFEST_FORMAT}",
            path=directory,
        )
    if kind is not None and manifest.get("kind") != kind:
        raise DatasetError(f"saved baseline is {manifest.get('kind')!r}, not {kind!r}", path=directory)
    return manifest


def manifest_task(manifest: dict[str, Any]) -> Task:
    return Task.model_validate(manifest["task"])
