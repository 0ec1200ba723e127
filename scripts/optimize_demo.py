"""`promptgrade optimize` on the whole sample set against the scripted local Gemini server.

The server plays the task model (right on every tray only when the prompt holds a planted
instruction, on about half of them without it) and the reflection model (scripted proposals: one
that uses an unknown variable, then the planted improvement, then rewordings). The command itself is
the real CLI in a subprocess, with a cache and an MLflow store in a temporary folder (a copy of
``prompts/``, so the repository's prompts are never written). It prints the CLI's output and what the
server counted: calls per model and how many images of each split were sent.

    .venv/bin/python scripts/optimize_demo.py [--keep DIR]

The answers are scripted: this shows the pipeline working end to end, never a prompt's real merit.
"""

from __future__ import annotations

import argparse
import difflib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from promptgrade.config import load_experiment
from promptgrade.data.loaders import load_dataset_split
from promptgrade.prompts import PromptLibrary
from promptgrade.task import load_task
from promptgrade.testing.gemini_server import FakeGemini
from promptgrade.testing.planted import PlantedTaskModel, ScriptedProposals, fenced

ROOT = Path(__file__).resolve().parents[1]
INSTRUCTION = "Count every plate and bowl on the tray before you name a category."
EXPERIMENT = """\
name: optimize-demo
task: {root}/experiments/tasks/meal_tray.yaml
prompts_dir: {prompts}
prices: {root}/experiments/prices.yaml
base_url: {base_url}
dataset: {{kind: folder, path: {root}/data/sample, split: test, train_split: train, image_max_side: 768}}
prompts: [meal_tray_json@1]
models:
  - model: gemini-2.5-flash
    settings: {{temperature: 0.0, max_output_tokens: 256}}
concurrency: 8
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="keep the prompts, cache and MLflow store here")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="optimize-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    prompts = work / "prompts"
    shutil.rmtree(prompts, ignore_errors=True)
    shutil.copytree(ROOT / "prompts", prompts)
    start = PromptLibrary(prompts).get("meal_tray_json", 1).body.strip()
    planted = start.replace("Return a JSON object with:", f"{INSTRUCTION}\n\nReturn a JSON object with:")
    proposals = ScriptedProposals(
        [
            fenced(start + "\nNotes: {{ tray_notes }}"),
            fenced(planted),
            fenced(planted.replace("Task:", "Your task:")),
        ]
    )
    with FakeGemini() as server:
        experiment = work / "optimize-demo.yaml"
        experiment.write_text(EXPERIMENT.format(root=ROOT, prompts=prompts, base_url=server.base_url))
        loaded = load_experiment(experiment)
        task = load_task(loaded.resolve(loaded.task))
        splits = {
            name: load_dataset_split(loaded.dataset, task, loaded.base_dir, split=name)
            for name in ("train", "validation", "test")
        }
        truth = {
            e.image.sha256: (e.labels.categories, e.labels.grade or 0.0)
            for dataset in splits.values()
            for e in dataset.examples
        }
        server.default_answer = PlantedTaskModel(truth, INSTRUCTION, wrong_category="snack")
        server.model_answers["gemini-2.5-pro"] = proposals
        env = {
            **os.environ,
            "GEMINI_API_KEY": "demo-not-a-key",
            "PROMPTGRADE_CACHE": str(work / "cache.sqlite"),
        }
        env.pop("GOOGLE_GEMINI_BASE_URL", None)
        command = [
            str(Path(sys.executable).with_name("promptgrade")),
            "optimize",
            str(experiment),
            "--prompt",
            "meal_tray_json@1",
            "--reflection-model",
            "gemini-2.5-pro",
            "--max-cost-usd",
            "5",
            "--tracking-uri",
            f"sqlite:///{work / 'mlflow.db'}",
        ]
        print("$", " ".join(command[1:]), flush=True)
        for flag in ("--dry-run", None):
            done = subprocess.run([*command, flag] if flag else command, env=env, check=False)
            if done.returncode:
                sys.exit(done.returncode)
        sent = server.images_sent()
        print(f"\nserver: {server.calls} requests", end="")
        by_model: dict[str, int] = {}
        for request in server.requests:
            by_model[request.model] = by_model.get(request.model, 0) + 1
        print(" (" + ", ".join(f"{m}: {n}" for m, n in sorted(by_model.items())) + ")")
        for name, dataset in splits.items():
            images = {e.image.sha256 for e in dataset.examples}
            print(f"  {name}: {len(images & set(sent))} of {len(images)} images sent")
    written = sorted((prompts / "meal_tray_json").glob("v*.jinja"))[1:]
    for path in written:
        diff = difflib.unified_diff(
            (prompts / "meal_tray_json" / "v1.jinja").read_text().splitlines(),
            path.read_text().splitlines(),
            "v1.jinja",
            path.name,
            lineterm="",
        )
        print("\n" + "\n".join(diff))
    print(f"\noutputs in {work}")


if __name__ == "__main__":
    main()
