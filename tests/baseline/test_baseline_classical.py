"""The classical baseline learns what the images show, reproducibly, and refuses what it cannot learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from promptgrade.baseline import ClassicalBaseline, load_baseline
from promptgrade.data.examples import Example, Labels
from promptgrade.errors import DatasetError, ProviderError
from promptgrade.task import Task


@pytest.fixture(scope="module")
def trained(make, task: Task) -> ClassicalBaseline:
    return ClassicalBaseline().fit(make(60, seed=1), task, seed=0)


@pytest.fixture(scope="module")
def held_out(make) -> list[Example]:
    return make(40, seed=2, prefix="held-out")


def test_it_beats_chance_on_trays_it_has_not_seen(trained, held_out, make, metrics) -> None:
    scores = metrics(trained.predict(held_out), held_out)
    # 4 colours drawn: naming one at random is right 25% of the time, naming two 50%.
    assert scores["category_top1_accuracy"] >= 0.8
    assert scores["category_accuracy"] >= 0.8
    # Predicting the training mean for every tray is the floor a grade model must clear.
    mean = float(np.mean([e.labels.grade for e in make(60, seed=1)]))
    constant = float(np.mean([abs(mean - e.labels.grade) for e in held_out]))
    assert scores["grade_mae"] < 0.5 * constant


def test_it_names_only_categories_it_learned_within_the_task(trained, held_out, task) -> None:
    assert trained.vocabulary == ("soup", "salad", "dessert", "bread")  # task order; "pasta" never seen
    for prediction in trained.predict(held_out):
        assert 1 <= len(prediction.categories) <= task.max_categories
        assert set(prediction.categories) <= set(trained.vocabulary)
        assert task.grade.minimum <= prediction.grade <= task.grade.maximum
        assert prediction.answer_format == "json"


def test_the_same_seed_gives_the_same_predictions(make, task, held_out, trained) -> None:
    again = ClassicalBaseline().fit(make(60, seed=1), task, seed=0)
    assert again.predict(held_out) == trained.predict(held_out)


def test_a_saved_model_loads_back_and_predicts_the_same(trained, held_out, tmp_path: Path) -> None:
    folder = trained.save(tmp_path / "classical")
    for loaded in (ClassicalBaseline.load(folder), load_baseline(folder)):
        assert isinstance(loaded, ClassicalBaseline)
        assert loaded.task == trained.task
        assert loaded.predict(held_out) == trained.predict(held_out)


def test_progress_is_reported_from_start_to_finish(make, task) -> None:
    calls: list[tuple[str, float]] = []
    ClassicalBaseline().fit(
        make(12, seed=5), task, progress=lambda message, done: calls.append((message, done))
    )
    fractions = [done for _, done in calls]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert fractions == sorted(fractions)


def test_it_refuses_an_empty_training_split(task) -> None:
    with pytest.raises(DatasetError, match="training split is empty"):
        ClassicalBaseline().fit([], task)


def test_it_refuses_a_training_split_with_one_category(make, task) -> None:
    with pytest.raises(DatasetError, match=r"fewer than 2 categories \(found 'soup'\)"):
        ClassicalBaseline().fit(make(10, seed=1, categories=("soup",)), task)


def test_it_refuses_a_label_the_task_does_not_allow(make, task) -> None:
    good = make(4, seed=1)
    bad = Example(id="odd-one", image=good[0].image, labels=Labels(categories=("pizza",), grade=10.0))
    with pytest.raises(DatasetError, match="'odd-one' has category 'pizza'"):
        ClassicalBaseline().fit([*good, bad], task)


def test_without_grade_labels_it_answers_mid_scale(make, task) -> None:
    ungraded = [
        Example(id=e.id, image=e.image, labels=Labels(categories=e.labels.categories)) for e in make(8, 1)
    ]
    predictions = ClassicalBaseline().fit(ungraded, task).predict(ungraded[:2])
    assert [p.grade for p in predictions] == [50.0, 50.0]


def test_it_cannot_predict_before_it_is_trained(held_out) -> None:
    with pytest.raises(ProviderError, match="not trained"):
        ClassicalBaseline().predict(held_out)
