"""Write data/demo_answers.json: what the local Gemini stand-in answers in the README's offline first loop.

Why: a stand-in that answers every prompt alike makes every prompt tie, so a newcomer's first sweep
would show no winner and ``compare --runs`` no flip. These answers differ per prompt — each prompt is
right on its own, seeded share of the 64 test trays, with its own grading noise, and the free-text
prompt sometimes answers out of format — so the walk-through shows a winner, flips both ways and a
promotion. They are scripted, not a model's: they exercise the loop, never judge a prompt.

The file is keyed by the sha256 of each image as a sweep of ``experiments/meal_tray.yaml`` sends it
(loaded and prepared the same way), and the stand-in tells the prompts apart by a phrase of their text.
The output is deterministic; a test regenerates it and fails when the committed file is stale.

    python scripts/make_demo_answers.py          # rewrites data/demo_answers.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from promptgrade.config import load_experiment
from promptgrade.data.loaders import load_dataset_split
from promptgrade.task import load_task

REPO = Path(__file__).resolve().parent.parent
ABOUT = (
    "Scripted answers for `promptgrade fake-gemini --answers data/demo_answers.json`: per test tray of "
    "data/sample and per prompt, so the README's offline first loop shows a winner and flips. Not a "
    "model's answers. Made by scripts/make_demo_answers.py."
)


@dataclass(frozen=True)
class Style:
    """How one prompt's scripted answers behave."""

    phrase: str  # a phrase only this prompt's text has: how the stand-in recognises it
    right: float  # the chance that its categories are right
    grade_noise: float  # standard deviation of its grade error, in points
    text: bool = False  # free text ("Category: …\nFood %: …") instead of JSON
    out_of_format: int = 0  # trays it answers with prose the parser cannot read


STYLES = {
    "meal_tray_freetext": Style("Answer in exactly this format", 0.72, 13.0, text=True, out_of_format=2),
    "meal_tray_json": Style("Allowed dish categories", 0.8, 10.0),
    "meal_tray_anchors": Style("Judge the area of each dish", 0.9, 7.0),
}


def answer(
    style: Style, truth: tuple[str, ...], grade: float, vocabulary: list[str], rng: random.Random
) -> str:
    categories = list(truth)
    if rng.random() >= style.right:
        wrong = rng.choice([c for c in vocabulary if c not in truth])
        categories = [wrong, *truth[1:]] if rng.random() < 0.5 else [wrong]
    said = min(100.0, max(0.0, 5 * round((grade + rng.gauss(0.0, style.grade_noise)) / 5)))
    if style.text:
        return f"Category: {', '.join(categories)}\nFood %: {said:g}%"
    return json.dumps({"categories": categories, "food_remaining_pct": said})


def build(experiment: Path, seed: int) -> dict[str, object]:
    loaded = load_experiment(experiment)
    task = load_task(loaded.resolve(loaded.task))
    examples = sorted(load_dataset_split(loaded.dataset, task, loaded.base_dir).examples, key=lambda e: e.id)
    rng = random.Random(seed)
    vocabulary = list(task.categories)
    prose = {name: set(rng.sample(range(len(examples)), s.out_of_format)) for name, s in STYLES.items()}
    answers: dict[str, dict[str, str]] = {}
    for index, example in enumerate(examples):
        truth, grade = example.labels.categories, example.labels.grade or 0.0
        answers[example.image.sha256] = {
            name: "I cannot tell which dishes these are from this photo."
            if index in prose[name]
            else answer(style, truth, grade, vocabulary, rng)
            for name, style in STYLES.items()
        }
    return {"about": ABOUT, "prompts": {name: s.phrase for name, s in STYLES.items()}, "answers": answers}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", type=Path, default=REPO / "experiments" / "meal_tray.yaml")
    parser.add_argument("--out", type=Path, default=REPO / "data" / "demo_answers.json")
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args(argv)
    data = build(args.experiment, args.seed)
    args.out.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{args.out}: answers for {len(data['answers'])} trays × {len(STYLES)} prompts")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
