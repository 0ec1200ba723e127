"""One self-contained HTML file for a finished sweep: the candidates with intervals, their plots, and
every example with each candidate's answer — to look at, share, and open from disk with no network.

Everything is read back from MLflow (the run data, ``predictions.json`` and the plot artifacts of
each candidate run), never from a sweep's memory, so it works on any finished sweep, also one on a
shared tracking server. Images are not in MLflow: when the report is given the experiment file, the
evaluated split is loaded again and each example gets a small JPEG thumbnail embedded as a data URL
— only if the split still hashes as it did when swept, since a changed dataset would show images
next to answers they were never given.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from promptgrade.errors import TrackingError
from promptgrade.figures import metric_text, number_text
from promptgrade.files import atomic_write
from promptgrade.tracking import refs
from promptgrade.tracking.read import RunRow, RunStore, ranked

METRICS = {
    "category_accuracy": "category accuracy",
    "category_top1_accuracy": "top-1 accuracy",
    "grade_accuracy": "grade accuracy",
    "grade_mae": "grade MAE",
    "parse_failure_rate": "parse failures",
    "error_rate": "errors",
    "cost_usd": "cost (USD)",
}
CANDIDATE_PLOTS = (
    "plots/category_confusion.png",
    "plots/grade_predicted_vs_true.png",
    "plots/grade_error_distribution.png",
    "plots/failures.png",
)
THUMBNAIL_PX = 112


@dataclass
class CandidateView:
    run: RunRow
    label: str
    rows: dict[str, dict[str, Any]]
    plots: dict[str, str] = field(default_factory=dict)  # artifact path -> data URL

    def cell(self, metric: str) -> str:
        return metric_text(metric, *(self.run.metric(metric + end) for end in ("", "_ci_low", "_ci_high")))


@dataclass
class ExampleRow:
    example_id: str
    truth_categories: str
    truth_grade: str
    answers: list[dict[str, Any]]  # one per candidate, in table order
    thumbnail: str | None
    disagree: bool
    failed: bool


def _data_url(path: Path, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _plots(store: RunStore, run_id: str, paths: tuple[str, ...]) -> dict[str, str]:
    """The run's plot artifacts as data URLs; a run logged before plots existed simply has none."""
    found: dict[str, str] = {}
    for path in paths:
        if (local := store.artifact_file(run_id, path)) is not None:
            found[path] = _data_url(local)
    return found


def thumbnails(experiment_file: Path, dataset_sha256: str, split: str) -> tuple[dict[str, str], str | None]:
    """example id -> JPEG data URL from the experiment's dataset, or none and the reason why."""
    from PIL import Image

    from promptgrade.config import load_experiment
    from promptgrade.data.loaders import load_dataset_split
    from promptgrade.task import load_task

    experiment = load_experiment(experiment_file)
    task = load_task(experiment.resolve(experiment.task))
    dataset = load_dataset_split(experiment.dataset, task, experiment.base_dir, split)
    if dataset.sha256 != dataset_sha256:
        return {}, (
            f"the dataset of {experiment_file} no longer hashes as the swept one "
            f"({dataset.sha256[:12]} now, {dataset_sha256[:12]} then): images left out"
        )
    found: dict[str, str] = {}
    for example in dataset.examples:
        with Image.open(io.BytesIO(example.image.data)) as image:
            image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="JPEG", quality=70)
        found[example.id] = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return found, None


def _answer(row: dict[str, Any] | None) -> dict[str, Any]:
    if row is None:
        return {"status": "absent", "categories": "–", "grade": "–", "category_ok": None, "grade_ok": None}
    ok = row["status"] == "ok"
    return {
        "status": row["status"],
        "categories": row.get("predicted_categories") or "–",
        "grade": number_text(row.get("predicted_grade")),
        "category_ok": bool(row.get("category_correct")),
        "grade_ok": row.get("grade_correct"),
        "error": None if ok else (row.get("error_kind") or row["status"]),
        "answer": row.get("answer") or "",
    }


def example_rows(candidates: list[CandidateView], images: dict[str, str]) -> list[ExampleRow]:
    ids = sorted({i for c in candidates for i in c.rows})
    rows: list[ExampleRow] = []
    for example_id in ids:
        present = [c.rows[example_id] for c in candidates if example_id in c.rows]
        scored = [r for r in present if r["status"] != "skipped"]
        first = present[0]
        categories_right = {bool(r.get("category_correct")) for r in scored}
        grades_right = {r.get("grade_correct") for r in scored if r.get("grade_correct") is not None}
        rows.append(
            ExampleRow(
                example_id=example_id,
                truth_categories=first.get("true_categories") or "–",
                truth_grade=number_text(first.get("true_grade")),
                answers=[_answer(c.rows.get(example_id)) for c in candidates],
                thumbnail=images.get(example_id),
                disagree=len(categories_right) > 1 or len(grades_right) > 1,
                failed=any(r["status"] not in ("ok", "skipped") for r in present),
            )
        )
    return rows


def build_report(
    store: RunStore, *, sweep_run_id: str | None = None, experiment_file: Path | None = None
) -> str:
    """The HTML text of the report for ``sweep_run_id`` (default: the latest sweep)."""
    sweep = refs.run_id(store, sweep_run_id, kind="sweep") if sweep_run_id else store.latest_sweep()
    primary = store.primary_metric(sweep)
    runs = [r for r in ranked(store.candidates(sweep), primary) if r.status == "FINISHED"]
    if not runs:
        raise TrackingError(f"sweep {sweep} of {store.name!r} has no finished candidate runs to report")
    candidates: list[CandidateView] = []
    missing: list[str] = []
    for run in runs:
        try:
            rows = store.predictions(run.run_id)
        except TrackingError:
            missing.append(run.name)
            continue
        candidates.append(CandidateView(run, run.name, rows, _plots(store, run.run_id, CANDIDATE_PLOTS)))
    if not candidates:
        raise TrackingError(
            f"no candidate of sweep {sweep} has a predictions.json artifact (runs logged before per-example "
            "predictions): there is nothing to report per example"
        )
    notes = [f"{name}: no predictions.json, left out of the per-example grid" for name in missing]
    images: dict[str, str] = {}
    if experiment_file is not None:
        params = candidates[0].run.params
        images, why = thumbnails(experiment_file, params.get("dataset_sha256", ""), params.get("split", ""))
        if why:
            notes.append(why)
    else:
        notes.append(
            "no experiment file given: the report has no images (pass the experiment file, not its name)"
        )
    examples = example_rows(candidates, images)
    sweep_run = store.run(sweep)
    template = _environment().get_template("report.html.j2")
    return template.render(
        experiment=store.name,
        sweep=sweep_run,
        primary=primary,
        metrics=METRICS,
        candidates=candidates,
        sweep_plot=_plots(store, sweep, ("plots/candidates.png",)).get("plots/candidates.png"),
        examples=examples,
        notes=notes,
        counts={
            "examples": len(examples),
            "disagree": sum(e.disagree for e in examples),
            "failed": sum(e.failed for e in examples),
        },
    )


def write_report(
    store: RunStore, out: Path, *, sweep_run_id: str | None = None, experiment_file: Path | None = None
) -> Path:
    html = build_report(store, sweep_run_id=sweep_run_id, experiment_file=experiment_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, html.encode("utf-8"))  # a reader never sees half a report
    return out


def _environment() -> jinja2.Environment:
    """Autoescaped: answers are model output and ids come from a dataset, neither is trusted HTML."""
    folder = resources.files("promptgrade") / "templates"
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
