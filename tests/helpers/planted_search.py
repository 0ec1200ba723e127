"""The planted optimisation story shared by the online and the batch search tests: an experiment on the
sample set whose start prompt gets half the trays wrong, a task model that is right on every tray only
when the prompt holds the planted instruction, and the reflection model's scripted proposals.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from helpers import ROOT
from helpers.sweeps import examples_of
from promptgrade.prompts import PromptLibrary
from promptgrade.testing.gemini_server import FakeGemini
from promptgrade.testing.planted import PlantedTaskModel, ScriptedProposals, fenced

N = 8  # examples per split
TASK_MODEL, REFLECTION_MODEL = "gemini-2.5-flash", "gemini-2.5-pro"
INSTRUCTION = "Count every plate and bowl on the tray before you name a category."

EXPERIMENT = """\
name: optimize-e2e
task: {root}/experiments/tasks/meal_tray.yaml
prompts_dir: {prompts}
prices: {root}/experiments/prices.yaml
base_url: {base_url}
dataset:
  kind: folder
  path: {root}/data/sample
  split: {split}
  train_split: {train_split}
  limit: {n}
  image_max_side: 256
prompts:
  - meal_tray_json@1
models:
  - model: {model}
    settings: {{temperature: 0.0, max_output_tokens: 256}}
concurrency: 4
max_retries: 1
retry_initial_s: 0.01
"""

START_BODY = PromptLibrary(ROOT / "prompts").get("meal_tray_json", 1).body.strip()
PLANTED = START_BODY.replace("Return a JSON object with:", f"{INSTRUCTION}\n\nReturn a JSON object with:")
PROPOSALS = [
    fenced(START_BODY + "\nNotes: {{ tray_notes }}"),  # p1: a variable the task does not have
    fenced(START_BODY + "\n{% if categories %}unterminated"),  # p2: does not parse
    fenced("Describe the tray in one friendly sentence."),  # p3: drops the JSON answer the task parses
    fenced(PLANTED),  # p4: the planted improvement
    fenced(START_BODY.replace("Task:", "Your task:")),  # a rewording that changes nothing
    fenced(START_BODY + "\nFor tray-0001 answer soup."),  # hard-codes an example's answer
]


def write_experiment(
    tmp: Path, server: FakeGemini, *, split: str = "test", train_split: str = "train", name: str = "exp"
) -> Path:
    prompts = tmp / "prompts"
    if not prompts.exists():
        shutil.copytree(ROOT / "prompts", prompts)
    path = tmp / f"{name}-{split}-{train_split}.yaml"
    path.write_text(
        EXPERIMENT.format(
            root=ROOT,
            prompts=prompts,
            base_url=server.base_url,
            split=split,
            train_split=train_split,
            n=N,
            model=TASK_MODEL,
        ),
        encoding="utf-8",
    )
    return path


def split_truth(experiment: Path, split: str) -> dict[str, tuple[tuple[str, ...], float]]:
    return {
        e.image.sha256: (e.labels.categories, e.labels.grade or 0.0) for e in examples_of(experiment, split)
    }


def script(server: FakeGemini, experiment: Path) -> ScriptedProposals:
    truth: dict[str, tuple[tuple[str, ...], float]] = {}
    for split in ("train", "validation", "test"):
        truth |= split_truth(experiment, split)
    server.default_answer = PlantedTaskModel(truth, INSTRUCTION, wrong_category="snack")
    proposals = ScriptedProposals(PROPOSALS)
    server.model_answers[REFLECTION_MODEL] = proposals
    return proposals


OPTIMIZE_ARGS = [
    "--prompt",
    "meal_tray_json@1",
    "--reflection-model",
    REFLECTION_MODEL,
    "--max-calls",
    "200",
    "--candidates",
    "4",
    "--minibatch",
    str(N),
]
