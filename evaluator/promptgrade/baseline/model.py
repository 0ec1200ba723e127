"""Which kinds of baseline there are, making or loading one, and a baseline as an MLflow model.

The kinds (``classical``, ``cnn``) are imported only when one is asked for: torch is an optional
extra. What they share (the interface, the decision rule, the saved form) is in ``base``.

mlflow is imported inside functions only: training and predicting must not pay for (or depend on) it,
and ``BaselinePyfunc`` is built on first use through the module's ``__getattr__``.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from importlib import metadata
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
# MLflow: a pyfunc whose input is base64 images and whose output is the answer's two fields


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


def _predict_frame(baseline: Baseline, frame: pd.DataFrame) -> pd.DataFrame:
    """Serve exactly what was measured: raw bytes go through the same ``prepare_image`` as datasets."""
    from promptgrade.images import prepare_image

    if baseline.task is None:
        raise ProviderError("the baseline is not trained")
    images = decode_images(frame)
    prepared = [prepare_image(data, source=f"row {i}").data for i, data in enumerate(images)]
    return predictions_frame(baseline.predict_images(prepared), baseline.task)


@cache
def _pyfunc_class() -> type:
    import mlflow.pyfunc

    class BaselinePyfunc(mlflow.pyfunc.PythonModel):
        """A saved baseline (the ``baseline`` artifact) behind MLflow's pyfunc interface."""

        def __init__(self) -> None:
            self.baseline: Baseline | None = None

        def load_context(self, context: Any) -> None:
            self.baseline = load_baseline(context.artifacts["baseline"])

        # mlflow 3 reads these hints (resolved in this module's globals, hence pandas imported at the
        # top): a DataFrame hint leaves the schema to the signature logged with the model.
        def predict(
            self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
        ) -> pd.DataFrame:
            if self.baseline is None:
                self.load_context(context)
            assert self.baseline is not None
            return _predict_frame(self.baseline, model_input)

    BaselinePyfunc.__qualname__ = "BaselinePyfunc"  # so pickle finds it as model.BaselinePyfunc
    return BaselinePyfunc


def __getattr__(name: str) -> Any:
    """``BaselinePyfunc`` is defined on first access so that importing this module never imports mlflow."""
    if name == "BaselinePyfunc":
        return _pyfunc_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _requirements(kind: str) -> list[str]:
    """Pinned to what trained the model: a pickled scikit-learn model is only safe in the same version."""
    names = ["mlflow", "numpy", "pandas", "pillow", "pydantic", "pyyaml", "scikit-learn"]
    if kind == "cnn":
        names.append("torch")
    pins = []
    for name in names:
        try:
            version = metadata.version(name).split("+")[0]  # torch's "+cpu" is not on PyPI
        except metadata.PackageNotFoundError:
            continue
        pins.append(f"{name}=={version}")
    return pins


@contextmanager
def _tracking_uri(uri: str | None) -> Iterator[None]:
    """Use ``uri`` for the duration only: mlflow's fluent API keeps it process-global (and in the
    environment), and the caller's own setting — or its absence — must survive this call."""
    import mlflow
    from mlflow.tracking import is_tracking_uri_set

    if uri is None:
        yield
        return
    previous = mlflow.get_tracking_uri() if is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]  # None unsets it again


def log_baseline_model(
    run_id: str,
    baseline: Baseline,
    task: Task,
    sample_images: Sequence[bytes],
    *,
    tracking_uri: str | None = None,
    name: str = "model",
) -> str:
    """Log ``baseline`` as an MLflow pyfunc model into the existing run ``run_id``; return its model URI.

    The run keeps the status it had: ``mlflow.start_run(run_id=...)`` would mark it FINISHED on exit,
    but the caller (the tracker) owns the run's life. ``sample_images`` (raw bytes, at least one) give
    the input example and signature. Loading the returned URI needs the same tracking URI.
    """
    import tempfile

    import mlflow
    from mlflow.models import infer_signature

    if baseline.task is None:
        raise ProviderError("cannot log an untrained baseline")
    if baseline.task != task:
        raise ProviderError(
            f"the baseline was trained for task {baseline.task.name!r}, not {task.name!r}; "
            "its categories and grade scale would not match the experiment's"
        )
    if not sample_images:
        raise DatasetError("log_baseline_model needs at least one sample image for the signature")

    input_example = pd.DataFrame(
        {IMAGE_COLUMN: [base64.b64encode(data).decode("ascii") for data in sample_images[:2]]}
    )
    output = _predict_frame(baseline, input_example)
    signature = infer_signature(input_example, output)
    # The promptgrade package travels with the model, so it loads where promptgrade is not installed.
    package = Path(__file__).resolve().parents[1]

    with _tracking_uri(tracking_uri), tempfile.TemporaryDirectory() as tmp:
        saved = baseline.save(Path(tmp) / "baseline")
        client = mlflow.MlflowClient()
        status = client.get_run(run_id).info.status
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name=name,
                python_model=_pyfunc_class()(),
                artifacts={"baseline": str(saved)},
                code_paths=[str(package)],
                signature=signature,
                input_example=input_example,
                pip_requirements=_requirements(baseline.name),
            )
        if status == "RUNNING":
            client.update_run(run_id, status="RUNNING")
    return str(info.model_uri)


__all__ = [
    "KINDS",
    "Baseline",
    "BaselinePyfunc",  # noqa: F822 — provided lazily by __getattr__
    "Progress",
    "available_kinds",
    "create_baseline",
    "load_baseline",
    "log_baseline_model",
    "predictions_frame",
]
