"""``promptgrade label export``: the Label Studio import file and its labelling config.

One task per example of the split, most useful first (see ``ordering``), each with its image as a
URL Label Studio can serve, its current labels, the hash of the labels file they came from (so the
import can tell whether the file changed since), and the chosen candidate's answer as a
pre-annotation — most labels are then one click.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptgrade.config import Experiment, load_experiment
from promptgrade.data.config import FolderDatasetConfig, S3DatasetConfig
from promptgrade.data.loaders import (
    ImageUnavailable,
    PendingExample,
    Problem,
    default_cache_dir,
    read_dataset_split,
)
from promptgrade.errors import ConfigError, DatasetError
from promptgrade.files import write_text
from promptgrade.images import ImageError, prepare_image
from promptgrade.labels import studio
from promptgrade.labels.labelfile import file_sha256
from promptgrade.labels.ordering import Current, order
from promptgrade.labels.votes import SweepAnswers, read_sweep
from promptgrade.task import Task, load_task
from promptgrade.tracking.read import RunStore


@dataclass
class ExportReport:
    tasks: list[dict[str, Any]]
    config: str
    sweep: SweepAnswers
    labels_path: Path | None
    split: str
    tiers: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def write(self, tasks_path: Path, config_path: Path) -> None:
        """The Label Studio import file (a JSON list of tasks) and the labelling config (XML)."""
        write_text(tasks_path, json.dumps(self.tasks, indent=1, ensure_ascii=False) + "\n")
        write_text(config_path, self.config)


def load(experiment_path: Path) -> tuple[Experiment, Task]:
    experiment = load_experiment(experiment_path)
    return experiment, load_task(experiment.resolve(experiment.task))


def labels_path(experiment: Experiment, override: Path | None = None) -> Path | None:
    """The file a labelling round reads its hash from and writes into.

    A folder's labels CSV; for hub, parquet and S3 datasets, whose categories live in the dataset
    itself, the experiment's ``grades`` CSV (or ``--labels``).
    """
    if override is not None:
        return override
    config = experiment.dataset.resolved(experiment.base_dir)
    if isinstance(config, FolderDatasetConfig):
        return config.grades or config.labels
    return config.grades


def build_export(
    experiment_path: Path,
    *,
    tracking_uri: str | None = None,
    run: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    embed: bool = False,
    document_root: Path | None = None,
) -> ExportReport:
    experiment, task = load(experiment_path)
    config = experiment.dataset.resolved(experiment.base_dir)
    split = split or config.split
    sweep = read_sweep(RunStore(experiment.name, tracking_uri), run)
    pending = current_labels(experiment, task, split)
    target = labels_path(experiment)
    digest = file_sha256(target) if target is not None and target.exists() else None
    current = [Current(e.id, e.split, e.labels.categories, e.labels.grade) for e in pending.values()]
    queue = order(current, sweep, task)
    if limit is not None:
        queue = queue[:limit]
    report = ExportReport([], studio.label_config(task), sweep, target, split)
    if sweep.split is not None and sweep.split != split:
        report.notes.append(
            f"the sweep scored split {sweep.split!r}, not {split!r}: these tasks have no pre-annotations and "
            "are ordered by missing labels only"
        )
    root = document_root or (config.path if isinstance(config, FolderDatasetConfig) else None)
    for rank, priority in enumerate(queue, start=1):
        example = pending[priority.example_id]
        data: dict[str, Any] = {
            "image": _image_url(example, config, embed, root),
            "example_id": example.id,
            "split": example.split,
            "rank": rank,
            "priority": priority.tier,
            "reason": f"#{rank} {priority.tier}: {priority.reason}",
            "current_labels": studio.format_labels(example.labels.categories, example.labels.grade, task),
            "current_categories": list(example.labels.categories),
            "current_grade": example.labels.grade,
            "labels_sha256": digest,
            "labels_file": None if target is None else str(target),
        }
        item: dict[str, Any] = {"data": data}
        answer = sweep.chosen_answer(example.id)
        if answer is not None and answer.status == "ok":
            pre = studio.prediction(
                answer.categories, answer.grade, task, sweep.chosen.name, priority.agreement_with_chosen
            )
            if pre is not None:
                item["predictions"] = [pre]
        report.tasks.append(item)
        report.tiers[priority.tier] += 1
    return report


def current_labels(experiment: Experiment, task: Task, split: str) -> dict[str, PendingExample]:
    """The split's examples with their labels; an example with no categories yet is welcome here."""

    def on_problem(problem: Problem) -> None:
        if problem.code != "missing_labels":
            raise problem.error()

    pending = read_dataset_split(experiment.dataset, task, experiment.base_dir, split, on_problem=on_problem)
    return {example.id: example for example in pending.examples()}


def _image_url(example: PendingExample, config: Any, embed: bool, root: Path | None) -> str:
    if embed:
        try:
            prepared = prepare_image(
                example.image.fetch(), max_side=config.image_max_side, source=example.where
            )
        except ImageError as exc:
            raise DatasetError(f"example {example.id!r}: {exc.message}") from None
        except ImageUnavailable as exc:
            raise DatasetError(f"example {example.id!r}: {exc.reason}") from None
        return studio.data_url(prepared.data, prepared.mime_type)
    if isinstance(config, S3DatasetConfig):
        local = default_cache_dir() / "s3" / config.bucket / config.prefix
        relative = Path(example.image.where).relative_to(local).as_posix()
        return f"s3://{config.bucket}/{config.prefix}{relative}"
    if isinstance(config, FolderDatasetConfig):
        assert root is not None
        return studio.local_files_url(Path(example.image.where), root)
    raise ConfigError(
        f"dataset kind {config.kind!r}: its images are not files Label Studio can serve; pass --embed to "
        "put each image in its task as a data URL"
    )
