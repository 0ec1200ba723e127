"""A trained baseline as an MLflow pyfunc model: logged into its candidate run, loadable anywhere.

Input is a column ``image`` of base64 images, output the answer's two fields (``baseline.model``'s
interface); the saved baseline, the promptgrade package and pinned requirements travel with the model,
so ``mlflow.pyfunc.load_model(uri).predict(frame)`` works where promptgrade is not installed.
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd  # mlflow 3 resolves the pyfunc's type hints in this module's globals
from mlflow.models import infer_signature
from mlflow.tracking import is_tracking_uri_set

from promptgrade.baseline.model import IMAGE_COLUMN, Baseline, load_baseline, predict_frame
from promptgrade.errors import DatasetError, ProviderError
from promptgrade.task import Task


@cache
def _pyfunc_class() -> type:
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
            return predict_frame(self.baseline, model_input)

    BaselinePyfunc.__qualname__ = "BaselinePyfunc"  # so pickle finds it as models.BaselinePyfunc
    return BaselinePyfunc


BaselinePyfunc = _pyfunc_class()


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
    output = predict_frame(baseline, input_example)
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
