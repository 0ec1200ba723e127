"""The classical baseline: hand-made image features, one boosted-tree classifier per category, and a
boosted-tree grade regressor.

Why boosted trees: on the colour/texture features a linear model cannot express "this hue *and* this
texture", and gradient boosting trained on log-loss gives probabilities that mean something, which the
shared decision rule needs to decide whether a second category is really there. One binary model per
category (rather than one multi-class model) is what lets a tray carry two dishes.

Training runs scikit-learn single-threaded: on a few hundred images OpenMP costs more than it gains,
and a fixed thread count keeps floating-point sums — and so predictions — identical run to run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import joblib
import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from promptgrade.answers import Prediction
from promptgrade.baseline.base import (
    DEFAULT_SECOND_CATEGORY_THRESHOLD,
    Progress,
    decide,
    fallback_grade,
    manifest_task,
    read_manifest,
    training_targets,
    write_manifest,
)
from promptgrade.baseline.features import FEATURE_VERSION, image_features
from promptgrade.errors import DatasetError, ProviderError
from promptgrade.task import Task

if TYPE_CHECKING:
    from promptgrade.data.examples import Example

KIND = "classical"
_MODEL_FILE = "model.joblib"


class ClassicalBaseline:
    """Features → per-category probability and a grade; see the module docstring for the choices."""

    name = KIND

    def __init__(
        self,
        *,
        max_iter: int = 60,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 8,
        second_category_threshold: float = DEFAULT_SECOND_CATEGORY_THRESHOLD,
    ) -> None:
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.second_category_threshold = second_category_threshold
        self.task: Task | None = None
        self.vocabulary: tuple[str, ...] = ()
        self.seed: int | None = None
        self.n_train = 0
        # Per category: a fitted classifier, or a constant probability when training saw only one class.
        self._classifiers: list[HistGradientBoostingClassifier | float] = []
        self._regressor: HistGradientBoostingRegressor | float | None = None

    def fit(
        self, examples: Sequence[Example], task: Task, seed: int = 0, progress: Progress | None = None
    ) -> ClassicalBaseline:
        targets = training_targets(examples, task)
        report = progress or (lambda _message, _fraction: None)
        steps = len(targets.vocabulary) + 2
        report(f"features for {len(examples)} images", 0.0)
        features = np.stack([image_features(e.image.data) for e in examples])
        classifiers: list[HistGradientBoostingClassifier | float] = []
        with threadpool_limits(limits=1):
            for index, category in enumerate(targets.vocabulary):
                report(f"category {category!r}", (index + 1) / steps)
                column = targets.multi_hot[:, index].astype(np.int64)
                if column.min() == column.max():
                    classifiers.append(float(column[0]))
                    continue
                classifier = HistGradientBoostingClassifier(
                    max_iter=self.max_iter,
                    learning_rate=self.learning_rate,
                    max_leaf_nodes=self.max_leaf_nodes,
                    early_stopping=False,
                    random_state=seed,
                )
                classifiers.append(classifier.fit(features, column))
            report(task.grade.name, (steps - 1) / steps)
            graded = targets.graded
            regressor: HistGradientBoostingRegressor | float
            if graded.sum() >= 2:
                regressor = HistGradientBoostingRegressor(early_stopping=False, random_state=seed)
                regressor.fit(features[graded], targets.grades[graded])
            else:
                regressor = fallback_grade(targets, task)
        self.task, self.vocabulary, self.seed, self.n_train = task, targets.vocabulary, seed, len(examples)
        self._classifiers, self._regressor = classifiers, regressor
        report("trained", 1.0)
        return self

    def predict(self, examples: Sequence[Example]) -> list[Prediction]:
        return self.predict_images([e.image.data for e in examples])

    def predict_images(self, images: Sequence[bytes]) -> list[Prediction]:
        task = self._trained_task()
        if not images:
            return []
        features = np.stack([image_features(data) for data in images])
        probabilities, grades = self._scores(features)
        return decide(probabilities, grades, self.vocabulary, task, self.second_category_threshold)

    def _scores(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        columns = []
        with threadpool_limits(limits=1):
            for classifier in self._classifiers:
                if isinstance(classifier, float):
                    columns.append(np.full(len(features), classifier))
                else:
                    columns.append(classifier.predict_proba(features)[:, 1])
            regressor = self._regressor
            if isinstance(regressor, HistGradientBoostingRegressor):
                grades = regressor.predict(features)
            else:
                grades = np.full(len(features), float(regressor if regressor is not None else math.nan))
        return np.stack(columns, axis=1), grades

    def _trained_task(self) -> Task:
        if self.task is None:
            raise ProviderError("the classical baseline is not trained: call fit() or load() first")
        return self.task

    # -- saved form ------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """A manifest anyone can read, plus a joblib pickle: load it only from a source you trust."""
        task = self._trained_task()
        folder = write_manifest(
            directory,
            KIND,
            task,
            vocabulary=list(self.vocabulary),
            feature_version=FEATURE_VERSION,
            seed=self.seed,
            n_train=self.n_train,
            options=self._options(),
            scikit_learn=metadata.version("scikit-learn"),
        )
        joblib.dump({"classifiers": self._classifiers, "regressor": self._regressor}, folder / _MODEL_FILE)
        return folder

    @classmethod
    def load(cls, directory: str | Path) -> ClassicalBaseline:
        manifest = read_manifest(directory, KIND)
        if manifest.get("feature_version") != FEATURE_VERSION:
            raise DatasetError(
                f"saved with image features v{manifest.get('feature_version')}, this code computes "
                f"v{FEATURE_VERSION}: retrain the baseline",
                path=directory,
            )
        baseline = cls(**manifest.get("options", {}))
        state: dict[str, Any] = joblib.load(Path(directory) / _MODEL_FILE)
        baseline.task = manifest_task(manifest)
        baseline.vocabulary = tuple(manifest["vocabulary"])
        baseline.seed = manifest.get("seed")
        baseline.n_train = int(manifest.get("n_train", 0))
        baseline._classifiers = state["classifiers"]
        baseline._regressor = state["regressor"]
        return baseline

    def _options(self) -> dict[str, Any]:
        return {
            "max_iter": self.max_iter,
            "learning_rate": self.learning_rate,
            "max_leaf_nodes": self.max_leaf_nodes,
            "second_category_threshold": self.second_category_threshold,
        }

    def __repr__(self) -> str:
        state = f"trained on {self.n_train}" if self.task else "untrained"
        return f"ClassicalBaseline({self._options()}, {state})"
