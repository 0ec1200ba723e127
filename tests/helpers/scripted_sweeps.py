"""Sweeps whose answers are scripted per tray and per prompt, shared by the tests that read a finished
sweep back from MLflow (compare, report, traces): which trays each prompt gets right is planted, so
the flips, filters and assessments the tests expect are known exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from helpers import ROOT
from helpers.sweeps import examples_of
from promptgrade.data.examples import Example
from promptgrade.testing.gemini_server import RequestInfo

EXPERIMENT = """\
name: {name}
task: {root}/experiments/tasks/meal_tray.yaml
prompts_dir: {root}/prompts
prices: {root}/experiments/prices.yaml
base_url: {base_url}
dataset: {{kind: folder, path: {root}/data/sample, split: test, limit: {n}, image_max_side: 256}}
prompts: [{prompts}]
models: {models}
concurrency: 4
{extra}"""
TWO_PROMPTS = "meal_tray_freetext@1, meal_tray_json@1"
ONE_MODEL = "[{model: gemini-2.5-flash}]"


def write_experiment(
    path: Path,
    *,
    name: str,
    base_url: str,
    n: int,
    prompts: str = TWO_PROMPTS,
    extra: str = "",
    models: str = ONE_MODEL,
) -> list[Example]:
    """The experiment file on the sample set's first ``n`` test trays; returns those trays by id."""
    text = EXPERIMENT.format(
        name=name, root=ROOT, base_url=base_url, n=n, prompts=prompts, extra=extra, models=models
    )
    path.write_text(text, encoding="utf-8")
    return examples_of(path)


def planted_answers(
    examples: list[Example],
    json_right: set[str],
    text_right: set[str],
    special: Callable[[Example, bool], str | None] = lambda example, is_json: None,
) -> Callable[[RequestInfo], str]:
    """The server's answer: the truth where that prompt (JSON or free text) is planted right, else a
    wrong category and a grade out of tolerance; ``special`` may answer a tray otherwise first."""

    def right(example: Example, request: RequestInfo) -> bool:
        return example.id in (json_right if request.has_response_schema else text_right)

    return planted_by(examples, right, special)


def planted_by(
    examples: list[Example],
    right: Callable[[Example, RequestInfo], bool],
    special: Callable[[Example, bool], str | None] = lambda example, is_json: None,
) -> Callable[[RequestInfo], str]:
    """Like ``planted_answers``, with whatever decides which request is right (its model, say)."""
    by_sha = {e.image.sha256: e for e in examples}

    def answer(request: RequestInfo) -> str:
        example = by_sha[request.image_sha256 or ""]
        if (scripted := special(example, request.has_response_schema)) is not None:
            return scripted
        good = right(example, request)
        categories = list(example.labels.categories) if good else ["snack"]
        truth = example.labels.grade or 0.0
        grade = truth if good else (100.0 if truth < 50 else 0.0)
        if request.has_response_schema:
            return json.dumps({"categories": categories, "food_remaining_pct": grade})
        return f"Category: {', '.join(categories)}\nFood %: {grade:g}%"

    return answer
