"""train_and_predict fits on the training split only, and refuses splits that leak into each other."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

import promptgrade.baseline.train as train_module
from promptgrade.answers import Prediction
from promptgrade.baseline import ClassicalBaseline, train_and_predict
from promptgrade.data.examples import Example
from promptgrade.errors import DatasetError, ProviderError
from promptgrade.task import Task


class Spy:
    """A baseline that records what it is shown and answers a fixed prediction."""

    name = "spy"

    def __init__(self) -> None:
        self.task: Task | None = None
        self.fitted: list[str] = []
        self.predicted: list[str] = []

    def fit(self, examples: Sequence[Example], task: Task, seed: int = 0, progress=None) -> Spy:
        self.fitted = [e.id for e in examples]
        self.task = task
        return self

    def predict(self, examples: Sequence[Example]) -> list[Prediction]:
        self.predicted = [e.id for e in examples]
        return [Prediction(categories=("soup",), grade=50.0, answer_format="json") for _ in examples]


def test_fit_sees_only_the_training_examples(make, task, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy()
    monkeypatch.setattr(train_module, "create_baseline", lambda kind, **options: spy)
    train, evaluate = make(6, seed=1, prefix="train"), make(4, seed=2, prefix="test")
    baseline, predictions, stats = train_and_predict("classical", train, evaluate, task, seed=7)
    assert baseline is spy
    assert spy.fitted == [e.id for e in train]
    assert not set(spy.fitted) & {e.id for e in evaluate}
    assert spy.predicted == [e.id for e in evaluate]
    assert len(predictions) == len(evaluate)
    assert stats["n_train"] == 6 and stats["n_evaluate"] == 4 and stats["train_seconds"] >= 0


def test_splits_that_share_an_id_are_refused(make, task) -> None:
    train = make(6, seed=1)
    evaluate = [*make(2, seed=2, prefix="test"), train[3]]
    with pytest.raises(DatasetError, match=f"share examples: {train[3].id}"):
        train_and_predict("classical", train, evaluate, task)


def test_the_same_image_under_another_id_is_refused(make, task) -> None:
    train = make(6, seed=1)
    copy = Example(id="renamed", image=train[0].image, labels=train[0].labels)
    with pytest.raises(DatasetError, match=f"identical images .*renamed = {train[0].id}"):
        train_and_predict("classical", train, [copy], task)


def test_it_returns_a_trained_classical_baseline_and_one_prediction_per_example(make, task) -> None:
    evaluate = make(5, seed=2, prefix="test")
    baseline, predictions, stats = train_and_predict("classical", make(16, seed=1), evaluate, task)
    assert isinstance(baseline, ClassicalBaseline) and baseline.n_train == 16
    assert predictions == baseline.predict(evaluate)
    assert stats["n_train"] == 16.0


def test_an_unknown_kind_is_refused(make, task) -> None:
    with pytest.raises(ProviderError, match="unknown baseline kind 'svm' \\(known: classical, cnn\\)"):
        train_and_predict("svm", make(4, seed=1), make(2, seed=2, prefix="t"), task)
