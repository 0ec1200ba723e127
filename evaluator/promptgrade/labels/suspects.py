"""``promptgrade label suspects``: labels the sweep's good candidates contradict — probably wrong.

The cleanlab idea (confident learning): a label is suspect when models that are right most of the
time confidently say otherwise. Here the "model" is the panel of the sweep's good candidates — every
prompt and the trained baseline whose accuracy clears ``min_accuracy`` — and its predicted
probability of a category is the smoothed share of them naming it. Every answer was produced
out-of-sample (a prompt never saw the labels; a baseline predicts the evaluation split it was not
trained on), which is what cleanlab's estimates assume. Categories are multi-label, so cleanlab's
multi-label ``find_label_issues`` and label quality scores are used. Grades are continuous, which
cleanlab's regression module handles only by refitting a model of its own; instead a grade is
suspect when every good candidate puts it beyond the task's tolerance on the same side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from promptgrade.files import write_text
from promptgrade.labels.exporter import current_labels, load
from promptgrade.labels.votes import read_sweep
from promptgrade.tracking.read import RunStore


@dataclass(frozen=True)
class Suspect:
    example_id: str
    field: str  # "categories" or the grade's name
    label: str
    candidates_say: str
    quality: float | None  # cleanlab's label quality score (0 worst … 1), categories only
    flagged_by: tuple[str, ...]  # "cleanlab", "unanimous"

    def as_dict(self) -> dict[str, object]:
        return {
            "example_id": self.example_id,
            "field": self.field,
            "label": self.label,
            "candidates_say": self.candidates_say,
            "quality": self.quality,
            "flagged_by": list(self.flagged_by),
        }


@dataclass(frozen=True)
class SuspectReport:
    suspects: list[Suspect]
    category_voters: list[str]
    grade_voters: list[str]
    examples: int

    def write_json(self, path: Path) -> None:
        write_text(path, json.dumps([s.as_dict() for s in self.suspects], indent=2) + "\n")


def find_suspects(
    experiment_path: Path,
    *,
    tracking_uri: str | None = None,
    run: str | None = None,
    min_accuracy: float = 0.5,
) -> SuspectReport:
    experiment, task = load(experiment_path)
    sweep = read_sweep(RunStore(experiment.name, tracking_uri), run)
    split = sweep.split or experiment.dataset.split
    labelled = {e.id: e.labels for e in current_labels(experiment, task, split).values()}
    category_voters = [r.name for r in sweep.candidates if r.metric("category_accuracy") >= min_accuracy]
    grade_voters = [r.name for r in sweep.candidates if r.metric("grade_accuracy") >= min_accuracy]
    index = {category: k for k, category in enumerate(task.categories)}

    ids, labels, probs, said = [], [], [], {}
    for example_id, truth in sorted(labelled.items()):
        votes = [a for a in sweep.of(example_id) if a.candidate in category_voters and a.status == "ok"]
        if not truth.categories or not votes:
            continue
        counts = np.zeros(len(task.categories))
        for answer in votes:
            for category in answer.categories:
                if category in index:
                    counts[index[category]] += 1
        ids.append(example_id)
        labels.append([index[c] for c in truth.categories])
        probs.append((counts + 0.5) / (len(votes) + 1))  # smoothed: cleanlab wants probabilities in (0, 1)
        unanimous = len(votes) == len(category_voters) and all(
            not set(a.categories) & set(truth.categories) for a in votes
        )
        said[example_id] = (unanimous, "; ".join(sorted({"; ".join(a.categories) for a in votes})))

    suspects: list[Suspect] = []
    if ids:
        from cleanlab.filter import find_label_issues
        from cleanlab.multilabel_classification import get_label_quality_scores

        pred_probs = np.vstack(probs)
        flagged = find_label_issues(labels, pred_probs, multi_label=True)
        quality = get_label_quality_scores(labels, pred_probs)
        for position, example_id in enumerate(ids):
            unanimous, shown = said[example_id]
            by = tuple(
                n for n, hit in (("cleanlab", bool(flagged[position])), ("unanimous", unanimous)) if hit
            )
            if by:
                truth = labelled[example_id]
                suspects.append(
                    Suspect(
                        example_id,
                        "categories",
                        "; ".join(truth.categories),
                        shown,
                        float(quality[position]),
                        by,
                    )
                )
    suspects.sort(key=lambda s: (s.quality if s.quality is not None else 1.0, s.example_id))

    tolerance = task.grade.tolerance
    for example_id, truth in sorted(labelled.items()):
        if truth.grade is None or not grade_voters:
            continue
        grades = [
            a.grade
            for a in sweep.of(example_id)
            if a.candidate in grade_voters and a.status == "ok" and a.grade is not None
        ]
        if len(grades) < len(grade_voters):
            continue
        above = all(g > truth.grade + tolerance for g in grades)
        below = all(g < truth.grade - tolerance for g in grades)
        if above or below:
            shown = ", ".join(f"{round(g, 1):g}" for g in sorted(grades))
            suspects.append(
                Suspect(example_id, task.grade.name, f"{truth.grade:g}", shown, None, ("unanimous",))
            )
    return SuspectReport(suspects, category_voters, grade_voters, len(ids))
