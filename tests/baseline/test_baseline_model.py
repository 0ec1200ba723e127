"""The shared decision rule, the optional-extra story, and a baseline logged to MLflow and served back."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from helpers.cnn_extra import import_torch
from promptgrade.baseline import (
    KINDS,
    Baseline,
    ClassicalBaseline,
    available_kinds,
    create_baseline,
)
from promptgrade.baseline.base import decide
from promptgrade.errors import DatasetError, ProviderError
from promptgrade.task import GradeScale, Task
from promptgrade.tracking.models import log_baseline_model

VOCABULARY = ("soup", "salad", "bread")


def one_row(*probabilities: float, grade: float = 40.0, task: Task) -> tuple[tuple[str, ...], float]:
    (prediction,) = decide(np.array([probabilities]), np.array([grade]), VOCABULARY, task)
    return prediction.categories, prediction.grade


def test_the_most_probable_category_comes_first_and_a_second_only_if_probable(task) -> None:
    assert one_row(0.2, 0.9, 0.49, task=task)[0] == ("salad",)
    assert one_row(0.2, 0.9, 0.5, task=task)[0] == ("salad", "bread")
    assert one_row(0.1, 0.2, 0.3, task=task)[0] == ("bread",)  # one category always, however unsure


def test_a_task_that_allows_one_category_gets_one(task) -> None:
    single = task.model_copy(update={"max_categories": 1})
    assert one_row(0.9, 0.8, 0.7, task=single)[0] == ("soup",)


def test_grades_are_clipped_to_the_scale(task) -> None:
    assert one_row(0.9, 0.1, 0.1, grade=-7.0, task=task)[1] == 0.0
    assert one_row(0.9, 0.1, 0.1, grade=130.0, task=task)[1] == 100.0


def test_both_kinds_are_available_when_torch_is_installed() -> None:
    import_torch()
    assert available_kinds() == {"classical": None, "cnn": None}
    for kind in KINDS:
        assert isinstance(create_baseline(kind), Baseline)


def test_without_torch_the_package_imports_and_says_how_to_get_the_cnn() -> None:
    """Run where ``import torch`` fails, as on an install without the ``cnn`` extra."""
    script = """
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoTorch())  # as if torch were not installed
import promptgrade.baseline as baseline
from promptgrade.errors import ProviderError
assert "mlflow" not in sys.modules, "importing promptgrade.baseline must not import mlflow"
print(baseline.available_kinds())
try:
    baseline.create_baseline("cnn")
except ProviderError as exc:
    print(exc)
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    kinds, message = done.stdout.strip().splitlines()
    assert kinds == "{'classical': None, 'cnn': \"install the cnn extra: pip install 'promptgrade[cnn]'\"}"
    assert message == "the cnn baseline cannot be used: install the cnn extra: pip install 'promptgrade[cnn]'"


# -- MLflow ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classical(make, task) -> ClassicalBaseline:
    return ClassicalBaseline().fit(make(40, seed=1), task, seed=0)


def as_base64(images: list[bytes]) -> pd.DataFrame:
    return pd.DataFrame({"image": [base64.b64encode(data).decode("ascii") for data in images]})


def test_a_logged_baseline_loads_back_and_grades_new_images(store, classical, make, task) -> None:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.tracking import is_tracking_uri_set

    uri, run_id = store
    samples = [e.image.data for e in make(2, seed=8, prefix="sample")]
    model_uri = log_baseline_model(run_id, classical, task, samples, tracking_uri=uri)

    assert not is_tracking_uri_set(), "the caller's (unset) tracking URI must be left as it was"
    assert MlflowClient(uri).get_run(run_id).info.status == "RUNNING", "the tracker owns the run's end"

    mlflow.set_tracking_uri(uri)
    info = mlflow.models.get_model_info(model_uri)
    assert info.run_id == run_id
    assert info.signature is not None
    assert info.signature.inputs.input_names() == ["image"]
    assert info.signature.outputs.input_names() == ["categories", "food_remaining_pct"]

    new = make(6, seed=9, prefix="new")
    served = mlflow.pyfunc.load_model(model_uri).predict(as_base64([e.image.data for e in new]))
    assert list(served.columns) == ["categories", "food_remaining_pct"]
    assert len(served) == 6
    for categories, grade in zip(served["categories"], served["food_remaining_pct"], strict=True):
        assert 1 <= len(categories.split("; ")) <= 2
        assert set(categories.split("; ")) <= set(task.categories)
        assert 0.0 <= grade <= 100.0
    # Served answers are the trained model's answers (images go through prepare_image on both paths).
    from promptgrade.images import prepare_image

    direct = classical.predict_images([prepare_image(e.image.data).data for e in new])
    assert served["categories"].tolist() == ["; ".join(p.categories) for p in direct]
    assert served["food_remaining_pct"].tolist() == pytest.approx([p.grade for p in direct])


def test_a_served_request_is_checked_against_the_signature_and_the_image(
    store, classical, make, task
) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException

    from promptgrade.images import ImageError

    uri, run_id = store
    model_uri = log_baseline_model(run_id, classical, task, [make(1, seed=8)[0].image.data], tracking_uri=uri)
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(model_uri)
    with pytest.raises(MlflowException, match=r"missing inputs \['image'\]"):
        model.predict(pd.DataFrame({"picture": ["aGVsbG8="]}))
    with pytest.raises(ImageError, match="row 0: file is text, not an image"):
        model.predict(pd.DataFrame({"image": [base64.b64encode(b"hello").decode()]}))


def test_bad_base64_names_the_row(classical) -> None:
    from promptgrade.baseline.model import decode_images

    with pytest.raises(DatasetError, match="row 1: 'image' is not valid base64"):
        decode_images(pd.DataFrame({"image": ["aGVsbG8=", "not base64!"]}))


def test_a_baseline_for_another_task_is_not_logged(store, classical, make) -> None:
    uri, run_id = store
    other = Task(name="fruit", categories=("apple", "pear"), grade=GradeScale(name="quality"))
    with pytest.raises(ProviderError, match="trained for task 'synthetic_trays', not 'fruit'"):
        log_baseline_model(run_id, classical, other, [make(1, seed=8)[0].image.data], tracking_uri=uri)
