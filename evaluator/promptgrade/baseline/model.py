"""Which kinds of baseline there are, making or loading one, and a baseline's model interface.

The kinds (``classical``, ``cnn``) are imported only when one is asked for: torch is an optional
extra. What they share (the interface, the decision rule, the saved form) is in ``base``. The model
interface — base64 images in, the answer's two fields out — is plain pandas here; wrapping it as an
MLflow pyfunc is ``tracking.models``'s job (the only package that imports mlflow).
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd  # already loaded by scikit-learn; needed at run time for the pyfunc's type hints

from promptgrade.answers import Prediction
from promptgrade.baseline.base import Baseline, Progress, read_manifest
from promptgrade.errors import DatasetError, ProviderError
from promptgrade.task import Task

KINDS = ("classical", "cnn")
CNN_INSTALL_HINT = "install the cnn extra: pip install 'promptgrade[cnn]'"


# --------------------------------------------------------------------------------------------------
# Kinds


def available_kinds() -> dict[str, str | None]:
    """Each kind → None if it can be trained here, else what to do about it."""
    try:
        has_torch = importlib.util.find_spec("torch") is not None  # cheap: does not import torch
    except (ImportError, ValueError):  # a broken or blocked install is as good as none
        has_torch = False
    return {"classical": None, "cnn": None if has_torch else CNN_INSTALL_HINT}


def _baseline_class(kind: str) -> type[Baseline]:
    if kind == "classical":
        from promptgrade.baseline.classical import ClassicalBaseline

        return ClassicalBaseline
    if kind == "cnn":
        reason = available_kinds()["cnn"]
        if reason is not None:
            raise ProviderError(f"the cnn baseline cannot be used: {reason}")
        from promptgrade.baseline.cnn import CnnBaseline

        return CnnBaseline
    raise ProviderError(f"unknown baseline kind {kind!r} (known: {', '.join(KINDS)})")


def create_baseline(kind: str, **options: Any) -> Baseline:
    """An untrained baseline of ``kind``; ``options`` go to its constructor (e.g. ``epochs`` for cnn)."""
    return _baseline_class(kind)(**options)


def load_baseline(directory: str | Path) -> Baseline:
    """Whatever kind of baseline was saved in ``directory``."""
    kind = read_manifest(directory).get("kind")
    return _baseline_class(str(kind)).load(directory)


# --------------------------------------------------------------------------------------------------
# The model interface: base64 images in, the answer's two fields out


IMAGE_COLUMN = "image"
CATEGORIES_COLUMN = "categories"
CATEGORY_SEPARATOR = "; "


def decode_images(frame: pd.DataFrame) -> list[bytes]:
    """The ``image`` column's base64 strings as bytes, with the row named when one is not base64."""
    if IMAGE_COLUMN not in frame.columns:
        raise DatasetError(
            f"input needs a column {IMAGE_COLUMN!r} of base64-encoded images (got {list(frame.columns)})"
        )
    images = []
    for position, value in enumerate(frame[IMAGE_COLUMN].tolist()):
        if isinstance(value, bytes | bytearray):  # a caller that already decoded: accept it as is
            images.append(bytes(value))
            continue
        if not isinstance(value, str) or not value.strip():
            raise DatasetError(f"row {position}: {IMAGE_COLUMN!r} must be a non-empty base64 string")
        try:
            images.append(base64.b64decode(value.strip(), validate=True))
        except (binascii.Error, ValueError):
            raise DatasetError(f"row {position}: {IMAGE_COLUMN!r} is not valid base64") from None
    return images


def predictions_frame(predictions: Sequence[Prediction], task: Task) -> pd.DataFrame:
    return pd.DataFrame(
        {
            CATEGORIES_COLUMN: [CATEGORY_SEPARATOR.join(p.categories) for p in predictions],
            task.grade.name: [float(p.grade) for p in predictions],
        }
    )


def predict_frame(baseline: Baseline, frame: pd.DataFrame) -> pd.DataFrame:
    """Serve exactly what was measured: raw bytes go through the same ``prepare_image`` as datasets."""
    from promptgrade.images import prepare_image

    if baseline.task is None:
        raise ProviderError("the baseline is not trained")
    images = decode_images(frame)
    prepared = [prepare_image(data, source=f"row {i}").data for i, data in enumerate(images)]
    return predictions_frame(baseline.predict_images(prepared), baseline.task)


__all__ = [
    "KINDS",
    "Baseline",
    "Progress",
    "available_kinds",
    "create_baseline",
    "load_baseline",
    "predict_frame",
    "predictions_frame",
]
