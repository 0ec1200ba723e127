"""Train each baseline on a labelled folder's train split and score it on the test split.

Scoring goes through ``promptgrade.scoring`` — the same code that scores prompts in a sweep — so the
figures printed here are the floor a prompt's MLflow run has to beat on the same split.

    python benchmarks/baseline_compare.py                       # data/sample, train → test
    python benchmarks/baseline_compare.py --kinds classical --seed 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from promptgrade.answers import Prediction
from promptgrade.baseline import available_kinds, image_features, train_and_predict
from promptgrade.baseline.evaluate import score_predictions
from promptgrade.data.config import FolderDatasetConfig
from promptgrade.data.examples import Example
from promptgrade.data.loaders import load_dataset_split
from promptgrade.scoring import Estimate, summarise
from promptgrade.task import Task, load_task

REPO = Path(__file__).resolve().parent.parent
COLUMNS = ("category_accuracy", "category_top1_accuracy", "grade_accuracy", "grade_mae")


def metrics(predictions: Sequence[Prediction], examples: Sequence[Example], task: Task) -> dict[str, Any]:
    outcomes = score_predictions(predictions, examples, task)
    summary = summarise(outcomes)
    out: dict[str, Any] = {}
    for name in (*COLUMNS, "n_examples"):
        value = summary[name]
        out[name] = value.model_dump() if isinstance(value, Estimate) else value
    return out


def feature_ms_per_image(examples: Sequence[Example], repeats: int = 3) -> float:
    """Best of ``repeats`` passes: the least disturbed by whatever else the machine is doing."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for example in examples:
            image_features(example.image.data)
        best = min(best, time.perf_counter() - started)
    return best / len(examples) * 1000


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "cpus": str(os.cpu_count())}
    for name in ("scikit-learn", "numpy", "pillow", "torch"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _shown(path: Path) -> str:
    """Repository-relative where possible, so the committed JSON does not name one machine's paths."""
    resolved = path.resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "data" / "sample", help="folder with labels.csv")
    parser.add_argument("--task", type=Path, default=REPO / "experiments" / "tasks" / "meal_tray.yaml")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--split", default="test", help="the split that is scored")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", nargs="+", default=["classical", "cnn"])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "baseline_compare.json")
    args = parser.parse_args(argv)

    if not (args.data / "labels.csv").is_file():
        print(f"{args.data}: no labels.csv (generate the sample set: make sample-set)", file=sys.stderr)
        return 2
    task = load_task(args.task)
    config = FolderDatasetConfig(kind="folder", path=args.data.resolve())
    train = load_dataset_split(config, task, REPO, args.train_split)
    evaluate = load_dataset_split(config, task, REPO, args.split)
    print(
        f"dataset {train.name}: {len(train)} {args.train_split} → {len(evaluate)} {args.split}, seed {args.seed}"
    )
    features_ms = feature_ms_per_image(train.examples)
    print(f"image features: {features_ms:.2f} ms/image (best of 3 passes over {len(train)} images)")

    results: dict[str, Any] = {}
    reasons = available_kinds()
    header = f"{'kind':<10} {'cat_acc':>8} {'top1':>8} {'grade_acc':>10} {'grade_mae':>10} {'train_s':>8}"
    print(header)
    print("-" * len(header))
    for kind in args.kinds:
        if reasons.get(kind) is not None:
            print(f"{kind:<10} skipped: {reasons[kind]}")
            results[kind] = {"skipped": reasons[kind]}
            continue
        _, predictions, stats = train_and_predict(
            kind, train.examples, evaluate.examples, task, seed=args.seed
        )
        scores = metrics(predictions, evaluate.examples, task)
        results[kind] = {**scores, **stats}
        values = [scores[name]["value"] for name in COLUMNS]
        print(
            f"{kind:<10} {values[0]:>8.3f} {values[1]:>8.3f} {values[2]:>10.3f} {values[3]:>10.2f}"
            f" {stats['train_seconds']:>8.1f}"
        )

    report = {
        "dataset": _shown(args.data),
        "task": task.name,
        "train_split": args.train_split,
        "split": args.split,
        "train_sha256": train.sha256,
        "split_sha256": evaluate.sha256,
        "seed": args.seed,
        "feature_ms_per_image": features_ms,
        "results": results,
        "environment": versions(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {_shown(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
