"""Prepare the labelling-loop walk-through (README, "Growing the ground truth") from the sample set.

Why: the bundled sample set is fully labelled, so there is nothing to label. This copies it to
``data/label_demo/`` with the grades of the first ``--blank`` test trays removed (the labels a
person would add) and one planted wrong category (what ``label suspects`` should find), and writes
``answers.json`` for ``promptgrade fake-gemini``: per image, the true dishes and the true grade plus
seeded noise. Those answers are scripted, not a model's: they exercise the loop, never judge a prompt.

    python scripts/label_demo.py            # writes data/label_demo/ and data/label_demo/answers.json
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from promptgrade.images import prepare_image

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=REPO / "data" / "sample")
    parser.add_argument("--out", type=Path, default=REPO / "data" / "label_demo")
    parser.add_argument("--blank", type=int, default=50, help="test trays whose grade is removed")
    parser.add_argument("--max-side", type=int, default=256, help="as the experiment's image_max_side")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)

    with (args.source / "labels.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    test = sorted((r for r in rows if r["split"] == "test"), key=lambda r: r["id"])
    blanked = {r["id"] for r in test[: args.blank]}
    planted = test[-1]  # keeps its grade; its category is made wrong
    rng = np.random.default_rng(args.seed)
    answers: dict[str, str] = {}
    for row in test:
        image = prepare_image((args.source / row["file"]).read_bytes(), max_side=args.max_side)
        grade = float(row["food_remaining_pct"]) + rng.normal(0, 8)
        answer = {
            "categories": row["categories"].split(";"),
            "food_remaining_pct": float(np.clip(round(grade / 5) * 5, 0, 100)),
        }
        answers[image.sha256] = json.dumps(answer)
    true_category = planted["categories"].split(";")[0]
    planted["categories"] = "snack" if true_category != "snack" else "soup"
    for row in rows:
        if row["id"] in blanked:
            row["food_remaining_pct"] = ""

    if args.out.exists():
        shutil.rmtree(args.out)
    shutil.copytree(args.source / "images", args.out / "images")
    with (args.out / "labels.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    (args.out / "answers.json").write_text(json.dumps(answers, indent=1) + "\n", encoding="utf-8")
    with (args.source / "labels.csv").open(encoding="utf-8", newline="") as handle:
        truth = {r["id"]: r for r in csv.DictReader(handle) if r["split"] == "test"}
    (args.out / "truth.json").write_text(
        json.dumps(
            {
                i: {"categories": r["categories"].split(";"), "grade": float(r["food_remaining_pct"])}
                for i, r in truth.items()
            },
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
    print(
        f"{args.out}: {len(rows)} trays, {len(blanked)} test grades removed, {planted['id']} labelled "
        f"{planted['categories']!r} (really {true_category!r}); answers for {len(answers)} test images"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
