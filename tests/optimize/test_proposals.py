"""The reflection answer contract and the free checks a proposal must pass before anything is paid."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from promptgrade.optimize.pool import Node, per_example_score, select_parent
from promptgrade.optimize.proposals import answer_format, check_proposal, extract_template
from promptgrade.prompts import PromptLibrary, PromptVersion
from promptgrade.scoring import Outcome
from promptgrade.task import load_task

ROOT = Path(__file__).resolve().parents[2]
TASK = load_task(ROOT / "experiments/tasks/meal_tray.yaml")
LIBRARY = PromptLibrary(ROOT / "prompts")
FREETEXT = LIBRARY.get("meal_tray_freetext", 1)
JSON = LIBRARY.get("meal_tray_json", 1)


def test_the_template_is_the_first_fenced_block_or_else_the_whole_answer() -> None:
    answer = "Reasoning first.\n```jinja\nFirst {{ categories | join(', ') }}\n```\nthen\n```\nsecond\n```"
    assert extract_template(answer) == "First {{ categories | join(', ') }}\n"
    assert extract_template("```\nplain fence\n```") == "plain fence\n"
    assert extract_template("  no fence at all\n") == "no fence at all\n"
    assert extract_template(None) == "\n"
    with_front_matter = "```jinja\n{#-\ndescription: mine\n-#}\nBody\n```"
    assert extract_template(with_front_matter) == "Body\n"  # ours replaces it


def test_the_shipped_prompts_answer_formats_are_recognised() -> None:
    assert answer_format(FREETEXT.render(TASK), TASK) == "text"
    assert answer_format(JSON.render(TASK), TASK) == "json"
    assert answer_format("Describe the photo.", TASK) is None


def check(answer: str, parent: PromptVersion = FREETEXT, **overrides: object) -> str | None:
    options: dict[str, object] = {
        "structured_output": bool(parent.structured_output),
        "forbidden": {"tray-0001"},
        "seen": {},
        "max_chars": 4000,
        "max_rendered_chars": 8000,
    }
    options.update(overrides)
    return check_proposal(answer, parent, TASK, **options).reason  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("", "empty"),
        ("```jinja\n{{ oops }\n```", "unrenderable: template syntax error on line 1"),
        ("{{ categories }} {{ dish_hint }} {{ other }}", "unknown variables: dish_hint, other"),
        ("{{ categories.__class__ }}", "unrenderable"),  # the sandbox refuses it
        (
            "Name the dishes ({{ categories | join(', ') }}). Reply in prose.",
            "answer format: the parent asks",
        ),
        ("Category: <c>\nFood %: <n>%\n{% if grade %}tray-0001 is soup{% endif %}", "hard-codes"),
        ("Category: <c>\nFood %: <n>%\nsee image 3f5a9c0d1e2b4a6f7788", "hard-codes"),
        ("x" * 5000, "too long: 5,000 characters"),
        ("Category: <c>\nFood %: <n>%\n{% for i in range(3000) %}more {% endfor %}", "renders too long"),
    ],
)
def test_a_proposal_that_cannot_work_is_rejected_with_its_reason(answer: str, reason: str) -> None:
    got = check(answer)
    assert got is not None and got.startswith(reason), got


def test_unchanged_and_repeated_proposals_cost_nothing() -> None:
    assert check(FREETEXT.body) == "unchanged: the proposal is the parent template"
    body = "Look closely.\nCategory: <category>\nFood %: <number>%\n"
    assert check(body) is None
    assert check(body, seen={body: "p2"}) == "duplicate of proposal p2"


def test_a_json_prompt_may_reword_freely_but_must_still_ask_for_the_json_keys() -> None:
    assert check('Return {"categories": [...], "food_remaining_pct": n}.', parent=JSON) is None
    assert check("Describe the tray.", parent=JSON, structured_output=True).startswith("answer format")


def node(id_: str, scores: dict[str, float]) -> Node:
    return Node(id_, "", None, 0, "evaluated", scores=scores)


def test_parents_come_from_the_pareto_front_in_proportion_to_their_wins() -> None:
    leader = node("a", {"1": 1, "2": 1, "3": 1, "4": 0})
    specialist = node("b", {"1": 0, "2": 0, "3": 0, "4": 1})  # the only one right on example 4
    dominated = node("c", {"1": 0, "2": 0, "3": 0, "4": 0})
    rng = random.Random(0)
    picks = [select_parent([leader, specialist, dominated], rng).id for _ in range(400)]
    assert set(picks) == {"a", "b"}
    assert 0.65 < picks.count("a") / len(picks) < 0.85  # 3 wins of 4


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        ("category_accuracy", 1.0),
        ("category_top1_accuracy", 0.0),
        ("grade_accuracy", 0.0),
        ("grade_mae", 0.75),
    ],
)
def test_each_example_scores_the_metric_being_optimised(metric: str, expected: float) -> None:
    outcome = Outcome(
        example_id="x",
        status="ok",
        true_categories=("soup",),
        true_grade=40.0,
        predicted_categories=("stew", "soup"),
        predicted_grade=65.0,
        category_correct=True,
        category_top1_correct=False,
        grade_correct=False,
        grade_abs_error=25.0,
    )
    assert per_example_score(outcome, metric, span=100.0) == expected
    failed = Outcome(example_id="y", status="error", true_categories=("soup",), true_grade=40.0)
    assert per_example_score(failed, metric, span=100.0) == 0.0
