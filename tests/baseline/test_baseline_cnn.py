"""The CNN baseline (optional ``cnn`` extra): trains, predicts valid answers, reproducibly."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from helpers.cnn_extra import import_torch
from promptgrade.baseline import load_baseline, train_and_predict
from promptgrade.data.examples import Example

torch = import_torch()  # skipped without the cnn extra, unless PROMPTGRADE_REQUIRE_CNN=1
# imported once torch is known to be there: the module imports it at the top
CnnBaseline = importlib.import_module("promptgrade.baseline.cnn").CnnBaseline


@pytest.fixture(scope="module")
def tiny(make) -> list[Example]:
    return make(16, seed=1)


@pytest.fixture(scope="module")
def held_out(make) -> list[Example]:
    return make(24, seed=2, prefix="held-out")


@pytest.fixture(scope="module")
def trained(tiny, task) -> CnnBaseline:
    return CnnBaseline(epochs=2, batch_size=8).fit(tiny, task, seed=3)


def test_it_predicts_valid_categories_and_grades(trained, held_out, task) -> None:
    predictions = trained.predict(held_out)
    assert len(predictions) == len(held_out)
    for prediction in predictions:
        assert 1 <= len(prediction.categories) <= task.max_categories
        assert set(prediction.categories) <= {"soup", "salad", "dessert", "bread"}
        assert task.grade.minimum <= prediction.grade <= task.grade.maximum


def test_the_same_seed_gives_the_same_predictions(trained, tiny, held_out, task) -> None:
    again = CnnBaseline(epochs=2, batch_size=8).fit(tiny, task, seed=3)
    assert again.predict(held_out) == trained.predict(held_out)


def test_training_leaves_the_callers_torch_settings_alone(tiny, task) -> None:
    rng_state, threads = torch.get_rng_state(), torch.get_num_threads()
    CnnBaseline(epochs=1, batch_size=8).fit(tiny[:8], task, seed=1)
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()


def test_predictions_are_the_same_with_or_without_deterministic_kernels(trained, held_out) -> None:
    """Prediction leaves torch's determinism flag as the caller set it (setting it costs a process
    torch's compiler stack): the forward pass gives the same predictions either way."""
    plain = trained.predict(held_out)
    assert not torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        strict = trained.predict(held_out)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    assert strict == plain


def test_a_saved_cnn_loads_back_and_predicts_the_same(trained, held_out, tmp_path: Path) -> None:
    folder = trained.save(tmp_path / "cnn")
    loaded = load_baseline(folder)
    assert isinstance(loaded, CnnBaseline)
    assert loaded.vocabulary == trained.vocabulary and loaded.task == trained.task
    assert loaded.predict(held_out) == trained.predict(held_out)


def test_with_a_few_epochs_it_learns_colour_and_coverage(make, held_out, task, metrics) -> None:
    """Colour-separable trays: a working CNN clears chance (25% top-1 for 4 colours) by far."""
    progress: list[float] = []
    _, predictions, stats = train_and_predict(
        "cnn",
        make(48, seed=1),
        held_out,
        task,
        seed=0,
        progress=lambda _message, done: progress.append(done),
        epochs=10,
        batch_size=16,
    )
    scores = metrics(predictions, held_out)
    assert scores["category_top1_accuracy"] >= 0.8
    assert scores["grade_mae"] < 15
    assert progress[-1] == 1.0 and stats["n_train"] == 48


def test_a_logged_cnn_loads_back_through_mlflow(store, trained, held_out, task) -> None:
    import base64

    import mlflow
    import pandas as pd

    from promptgrade.tracking.models import log_baseline_model

    uri, run_id = store
    model_uri = log_baseline_model(run_id, trained, task, [held_out[0].image.data], tracking_uri=uri)
    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model(model_uri).predict(
        pd.DataFrame({"image": [base64.b64encode(e.image.data).decode("ascii") for e in held_out[:4]]})
    )
    assert list(served.columns) == ["categories", "food_remaining_pct"]
    assert all(set(c.split("; ")) <= set(trained.vocabulary) for c in served["categories"])
    assert served["food_remaining_pct"].between(0, 100).all()
