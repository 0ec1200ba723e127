"""Given a model's answer, the parser yields a typed prediction or a precise, recorded failure."""

from __future__ import annotations

import pytest

from promptgrade.answers import ParseFailure, Prediction, parse_answer
from promptgrade.task import GradeScale, Task

TASK = Task(
    name="meal_tray",
    categories=("soup", "stew", "rice dish", "noodle dish", "salad", "dessert"),
    max_categories=2,
    grade=GradeScale(name="food_remaining_pct", minimum=0, maximum=100, tolerance=10),
)


def ok(text: str) -> Prediction:
    result = parse_answer(text, TASK)
    assert isinstance(result, Prediction), result
    return result


def failed(text: str | None) -> ParseFailure:
    result = parse_answer(text, TASK)
    assert isinstance(result, ParseFailure), result
    return result


def test_original_study_free_text() -> None:
    result = ok("Category: soup, stew\nFood %: 40%")
    assert result.categories == ("soup", "stew")
    assert result.grade == 40
    assert result.answer_format == "text"


@pytest.mark.parametrize(
    "text",
    [
        "Category: Soups, Stew … food %: 40%",
        "**Categories:** soup and stew\n**Food %:** 40 %",
        "Categories - SOUP; stew.\nAbout 40% of the food is left.",
        "I see a soup and a stew. Roughly 40% remaining.",
    ],
)
def test_free_text_variants(text: str) -> None:
    result = ok(text)
    assert result.categories == ("soup", "stew")
    assert result.grade == 40


def test_json_structured_output() -> None:
    result = ok('{"categories": ["rice dish"], "food_remaining_pct": 12.5}')
    assert result == Prediction(categories=("rice dish",), grade=12.5, answer_format="json")


def test_json_in_code_fence_with_prose_and_string_grade() -> None:
    result = ok('Here you go:\n```json\n{"category": "Noodle dishes", "grade": "35%"}\n```')
    assert result.categories == ("noodle dish",)
    assert result.grade == 35


def test_unknown_categories_are_recorded_and_extra_ones_truncated() -> None:
    result = ok('{"categories": ["pizza", "salad", "soup", "dessert"], "food_remaining_pct": 0}')
    assert result.categories == ("salad", "soup")
    assert result.unknown_categories == ("pizza",)
    assert result.top1 is None  # the model's first choice was not an allowed category


def test_top1_is_the_model_first_name_when_allowed() -> None:
    assert ok('{"categories": ["Soups", "spaceship"], "food_remaining_pct": 0}').top1 == "soup"
    assert ok("Category: spaceship, stew\nFood %: 40%").top1 is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (None, "empty"),
        ("   ", "empty"),
        ('{"categories": ["soup"], "food_remaining_pct": ', "invalid_json"),
        ('{"food_remaining_pct": 20}', "no_categories"),
        ('{"categories": ["pizza"], "food_remaining_pct": 20}', "unknown_categories"),
        ('{"categories": ["soup"]}', "no_grade"),
        ('{"categories": ["soup"], "food_remaining_pct": 140}', "grade_out_of_range"),
        ("I cannot help with that.", "no_categories"),
        ("Category: soup", "no_grade"),
    ],
)
def test_failures_are_typed_not_crashes(text: str | None, reason: str) -> None:
    assert failed(text).reason == reason


def test_a_different_task_uses_its_own_grade_key() -> None:
    fruit = Task(
        name="fruit", categories=("apple", "pear"), grade=GradeScale(name="quality", maximum=5, tolerance=0)
    )
    result = parse_answer('{"categories": ["pear"], "quality": 4}', fruit)
    assert isinstance(result, Prediction) and result.grade == 4
    assert isinstance(parse_answer('{"categories": ["pear"], "quality": 7}', fruit), ParseFailure)
