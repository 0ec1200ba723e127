"""Train a baseline on one split and predict another, refusing to let evaluation examples leak in.

A baseline's figure is only a floor worth beating if it was earned on unseen images: an example (or
the very same image under another id) in both splits would let the model memorise its answer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from promptgrade.answers import Prediction
from promptgrade.baseline.model import Baseline, Progress, create_baseline
from promptgrade.errors import DatasetError
from promptgrade.task import Task

if TYPE_CHECKING:
    from promptgrade.data.examples import Example

_SHOWN = 5


def check_disjoint(train: Sequence[Example], evaluate: Sequence[Example]) -> None:
    """Raise DatasetError if the splits share an id or an identical image."""
    shared_ids = sorted({e.id for e in train} & {e.id for e in evaluate})
    if shared_ids:
        raise DatasetError(
            f"train and evaluation splits share examples: {_listed(shared_ids)}; "
            "a baseline must never see the examples it is scored on"
        )
    train_images = {e.image.sha256: e.id for e in train}
    duplicates = sorted(
        f"{e.id} = {train_images[e.image.sha256]}" for e in evaluate if e.image.sha256 in train_images
    )
    if duplicates:
        raise DatasetError(
            f"train and evaluation splits share identical images (evaluation = train): {_listed(duplicates)}; "
            "remove the duplicates so the baseline is scored on images it has not seen"
        )


def _listed(items: Sequence[str]) -> str:
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def train_and_predict(
    kind: str,
    train: list[Example],
    evaluate: list[Example],
    task: Task,
    seed: int = 0,
    progress: Progress | None = None,
    **options: Any,
) -> tuple[Baseline, list[Prediction], dict[str, float]]:
    """Fit a ``kind`` baseline on ``train`` only; return it, its predictions for ``evaluate`` (in
    order) and training stats (``train_seconds``, ``n_train``, ``predict_seconds``, ``n_evaluate``).

    ``options`` go to the baseline's constructor (e.g. ``epochs=5`` for the cnn).
    """
    check_disjoint(train, evaluate)
    baseline = create_baseline(kind, **options)
    started = time.perf_counter()
    baseline.fit(train, task, seed=seed, progress=progress)
    trained = time.perf_counter()
    predictions = baseline.predict(evaluate)
    finished = time.perf_counter()
    stats = {
        "train_seconds": trained - started,
        "n_train": float(len(train)),
        "predict_seconds": finished - trained,
        "n_evaluate": float(len(evaluate)),
    }
    return baseline, predictions, stats
