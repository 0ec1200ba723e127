"""The end-to-end experiment (``e2e-prompts``: two prompts, one Gemini model, the sample set) that the
sweep's story and the batch's story both run, and its scripted answers: right on the first half of
the trays, wrong on the rest, so every metric the tests read has a known value."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers import ROOT
from helpers.sweeps import examples_of
from promptgrade.testing.scripted import ScriptedAPI

EXPERIMENT = """\
name: e2e-prompts
task: {root}/experiments/tasks/meal_tray.yaml
prompts_dir: {root}/prompts
prices: {root}/experiments/prices.yaml
base_url: {base_url}
dataset:
  kind: folder
  path: {root}/data/sample
  split: test
  limit: {n}
  image_max_side: 256
prompts:
  - meal_tray_freetext@1
  - meal_tray_json@1
models:
  - model: gemini-2.5-flash
    settings: {{temperature: 0.0, max_output_tokens: 256}}
concurrency: 4
max_retries: 2
"""
# image sha256 → (example id, true categories, true grade), as the sweep will send them
Truth = dict[str, tuple[str, tuple[str, ...], float]]


def write_experiment(
    path: Path, base_url: str, *, n: int, name: str = "e2e-prompts", batch: bool = False
) -> Path:
    """The experiment on the sample set's first ``n`` test trays, named ``name``; ``batch`` asks for
    Gemini batch jobs instead of online calls."""
    text = EXPERIMENT.format(root=ROOT, base_url=base_url, n=n).replace("name: e2e-prompts", f"name: {name}")
    if batch:
        text = text.replace("    settings: {", "    batch: true\n    settings: {")
    path.write_text(text, encoding="utf-8")
    return path


def truth_of(path: Path) -> Truth:
    return {e.image.sha256: (e.id, e.labels.categories, e.labels.grade or 0.0) for e in examples_of(path)}


def script_answers(
    server: ScriptedAPI[Any, Any],
    truth: Truth,
    structured: Callable[[Any], bool] = lambda request: bool(request.has_response_schema),
) -> set[str]:
    """Answer truthfully for ids in the first half (text or JSON as asked), wrongly for the rest.

    ``structured`` tells whether a request asked for JSON (Gemini's response schema by default; the
    batch stories pass OpenAI's ``response_format`` or Bedrock's forced tool)."""
    ordered = sorted(truth.items(), key=lambda item: item[1][0])
    right = {sha for sha, _ in ordered[: len(ordered) // 2]}

    def answer(request: Any) -> str:
        _, categories, grade = truth[request.image_sha256 or ""]
        if request.image_sha256 not in right:
            categories, grade = ("snack",), 100 - grade if grade < 50 else 0.0
        if structured(request):
            return json.dumps({"categories": list(categories), "food_remaining_pct": grade})
        return f"Category: {', '.join(categories)}\nFood %: {grade:g}%"

    server.default_answer = answer
    return {truth[sha][0] for sha in right}
