"""``promptgrade monitor sample|score``: is production still as accurate as the experiment said?

The experiment measured the promoted candidate on a labelled split; production grades trays nobody
has labelled. So a sample of production's results is labelled later (in Label Studio, with
production's answer as the pre-annotation: most labels are one click), and scored the way the sweep
scores a candidate.

The sample has two parts, and they answer two questions:

* **uniform**: drawn at random (seeded) from *every* result of the bundle. Only this part estimates
  production's accuracy — it is the one compared with the candidate's measured figures.
* **flagged**: the trays whose samples disagreed (``needs_review`` first, then the lowest agreement),
  drawn first because that is where production is most likely wrong and a label teaches most. Their
  accuracy is reported apart: mixed into the estimate, they would make production look worse than it is.

The comparison is a two-proportion z-test (pooled, one-sided: production lower), one per metric
(category accuracy, grade accuracy), Holm-adjusted over the two; production is "significantly
worse" when an adjusted p-value is below alpha. The candidate's side is its figure and its example
count as the bundle's provenance recorded them at promotion.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptgrade.answers import Prediction
from promptgrade.bundle import Bundle, load_bundle
from promptgrade.errors import PromptgradeError
from promptgrade.files import write_text
from promptgrade.grading import GradingResult
from promptgrade.labels import studio
from promptgrade.production.s3 import ProductionError, S3Location, pages, read_json
from promptgrade.providers.base import Completion
from promptgrade.scoring import Estimate, Outcome, score, wilson
from promptgrade.stats import ProportionTest, holm, two_proportions
from promptgrade.stored_results import IMAGES, REVIEW, ResultLayout, bundle_sha256

SAMPLE_KIND = "promptgrade.monitor_sample"
METRICS = ("category_accuracy", "grade_accuracy")
FLAGGED, UNIFORM = "flagged", "uniform"


def current_bundle(bundle_dir: Path) -> tuple[Bundle, str]:
    try:
        bundle = load_bundle(bundle_dir)
    except PromptgradeError as exc:
        raise ProductionError(f"the bundle production runs: {exc}") from None
    return bundle, bundle_sha256(bundle.manifest)


# -- sample --------------------------------------------------------------------------------------------
@dataclass
class MonitorSample:
    tasks: list[dict[str, Any]]
    config: str
    record: dict[str, Any]
    results: int  # how many results of the bundle there were to draw from
    flagged: int  # how many of them were flagged

    def write(self, tasks_path: Path, config_path: Path, sample_path: Path) -> None:
        write_text(tasks_path, json.dumps(self.tasks, indent=1, ensure_ascii=False) + "\n")
        write_text(config_path, self.config)
        write_text(sample_path, json.dumps(self.record, indent=1, ensure_ascii=False) + "\n")


def draw(images: list[str], flagged: list[str], n: int, seed: int, max_flagged: int) -> list[tuple[str, str]]:
    """(image sha256, tier) pairs: up to ``max_flagged`` flagged trays in their order, and a uniform
    random draw (seeded) from all images for the rest of ``n``. A flagged tray the uniform draw picks
    counts as uniform (the uniform part must stay uniform), and the next flagged one takes its place."""
    n_flagged = min(len(flagged), max_flagged, n)
    uniform = random.Random(seed).sample(sorted(images), min(n - n_flagged, len(images)))
    drawn = set(uniform)
    first = [sha for sha in flagged if sha not in drawn][:n_flagged]
    return [(sha, FLAGGED) for sha in first] + [(sha, UNIFORM) for sha in uniform]


def sample(
    results_uri: str, *, bundle_dir: Path, n: int, seed: int, s3: Any, max_flagged: int | None = None
) -> MonitorSample:
    """Draw ``n`` results of the current bundle and make them Label Studio tasks."""
    bundle, sha = current_bundle(bundle_dir)
    results = S3Location.parse(results_uri, "--results", folder=True)
    layout = ResultLayout(results.prefix, sha)
    images = _names(s3, results.bucket, layout.folder(IMAGES))
    if not images:
        prompt = bundle.manifest.prompt
        raise ProductionError(
            f"no results of the current bundle ({prompt.name}@v{prompt.version}, bundle {sha[:12]}) under "
            f"{results}: is it the function's output prefix, and has this bundle graded anything yet?"
        )
    known = set(images)
    # review/<agreement>-<sha>: in key order, the least agreed first
    flagged = [name.rpartition("-")[2] for name in _names(s3, results.bucket, layout.folder(REVIEW))]
    flagged = [f for f in flagged if f in known]
    chosen = draw(images, flagged, n, seed, n // 2 if max_flagged is None else max_flagged)
    items, tasks = [], []
    for rank, (image, tier) in enumerate(chosen, start=1):
        result = read_json(s3, results.bucket, layout.image(image))
        items.append(_item(image, tier, layout.image(image), result, bundle))
        tasks.append(_task(items[-1], rank, seed, bundle))
    record = {
        "kind": SAMPLE_KIND,
        "bundle_sha256": sha,
        "prompt": bundle.manifest.prompt.model_dump(exclude={"file"}),
        "results": str(results),
        "seed": seed,
        "n": n,
        "items": items,
    }
    return MonitorSample(tasks, studio.label_config(bundle.task), record, len(images), len(flagged))


def _names(s3: Any, bucket: str, folder: str) -> list[str]:
    """The file names (without ``.json``) in one folder of the results, in key order."""
    keys = [o["Key"] for page in pages(s3, S3Location(bucket, folder)) for o in page]
    return [key.removeprefix(folder).removesuffix(".json") for key in keys]


def _item(image: str, tier: str, key: str, result: dict[str, Any], bundle: Bundle) -> dict[str, Any]:
    grade = result.get(bundle.task.grade.name)
    return {
        "image_sha256": image,
        "tier": tier,
        "key": key,
        "source": result.get("source"),
        "categories": list(result.get("categories") or []),
        "grade": grade if isinstance(grade, int | float) else None,
        "agreement": result.get("agreement"),
        "needs_review": result.get("needs_review"),
    }


def _task(item: dict[str, Any], rank: int, seed: int, bundle: Bundle) -> dict[str, Any]:
    task, prompt = bundle.task, bundle.manifest.prompt
    categories = tuple(item["categories"])
    if item["tier"] == FLAGGED:
        why = "needs review" if item["needs_review"] else "its samples disagreed"
        reason = f"#{rank} flagged: {why} (agreement {item['agreement']:.2f})"
    else:
        reason = f"#{rank} uniform: drawn at random (seed {seed}) from every result"
    source = str(item["source"] or "")
    data = {
        "image": source if source.startswith("s3://") else "",
        "example_id": item["image_sha256"],
        "tier": item["tier"],
        "rank": rank,
        "reason": reason,
        "current_labels": f"production: {studio.format_labels(categories, item['grade'], task)}",
        "source": source,
        "result_key": item["key"],
    }
    shown: dict[str, Any] = {"data": data}
    pre = studio.prediction(
        categories, item["grade"], task, f"{prompt.name}@v{prompt.version}", item["agreement"]
    )
    if pre is not None:
        shown["predictions"] = [pre]
    return shown


# -- score ---------------------------------------------------------------------------------------------
@dataclass
class Comparison:
    metric: str
    production: Estimate
    measured: float
    measured_n: int
    test: ProportionTest
    adjusted_p: float = math.nan


@dataclass
class MonitorScore:
    uniform: dict[str, Estimate]
    flagged: dict[str, Estimate]
    comparisons: list[Comparison]
    alpha: float
    labelled: int
    unlabelled: int
    bundle_sha256: str
    notes: list[str] = field(default_factory=list)

    @property
    def worse(self) -> bool:
        return any(c.test.p_a < c.test.p_b and c.adjusted_p < self.alpha for c in self.comparisons)


def score_labels(
    labels_path: Path, sample_path: Path, *, bundle_dir: Path, alpha: float = 0.05
) -> MonitorScore:
    """Production's figures on the labelled sample, and the test against the candidate's measurement."""
    bundle, sha = current_bundle(bundle_dir)
    record = _read_sample(sample_path, sha)
    items = {item["image_sha256"]: item for item in record["items"]}
    outcomes, unlabelled = _outcomes(labels_path, items, bundle)
    tiers = {
        tier: [o for sha_, o in outcomes.items() if items[sha_]["tier"] == tier]
        for tier in (UNIFORM, FLAGGED)
    }
    if not tiers[UNIFORM]:
        raise ProductionError(
            f"{labels_path}: no tray of the sample's uniform part is labelled: production's accuracy rests on it"
        )
    report = MonitorScore(
        uniform=_figures(tiers[UNIFORM]),
        flagged=_figures(tiers[FLAGGED]),
        comparisons=[],
        alpha=alpha,
        labelled=len(outcomes),
        unlabelled=unlabelled,
        bundle_sha256=sha,
    )
    report.comparisons = _compare(report.uniform, bundle, report.notes)
    return report


def _read_sample(path: Path, sha: str) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProductionError(
            "no such sample file: run `promptgrade monitor sample` first", path=path
        ) from None
    except (OSError, ValueError) as exc:
        raise ProductionError(f"not a sample file: {exc}", path=path) from None
    if not isinstance(record, dict) or record.get("kind") != SAMPLE_KIND:
        raise ProductionError("not a sample written by `promptgrade monitor sample`", path=path)
    if record.get("bundle_sha256") != sha:
        raise ProductionError(
            f"the sample was drawn from bundle {str(record.get('bundle_sha256'))[:12]}, not the current "
            f"{sha[:12]}: score it with the bundle it was drawn for (--bundle)",
            path=path,
        )
    return record


def _outcomes(
    labels_path: Path, items: dict[str, dict[str, Any]], bundle: Bundle
) -> tuple[dict[str, Outcome], int]:
    """Each labelled tray's production answer scored against its label (the latest annotation wins)."""
    task = bundle.task
    tasks, issues = studio.read_export(labels_path, task)
    fatal = [issue for issue in issues if issue.fatal]
    if fatal:
        more = f" (and {len(fatal) - 1} more)" if len(fatal) > 1 else ""
        raise ProductionError(f"{labels_path}: {fatal[0]}{more}")
    strangers = [t.example_id for t in tasks if t.example_id not in items]
    if strangers:
        shown = ", ".join(s[:12] for s in strangers[:3])
        raise ProductionError(
            f"{labels_path}: {len(strangers)} task(s) for trays not in the sample ({shown}…): score the "
            "export of the sample file's own tasks"
        )
    outcomes: dict[str, Outcome] = {}
    for exported in tasks:
        annotations = [a for a in exported.annotations if a.categories]
        if not annotations:
            continue
        latest = max(annotations, key=lambda a: (a.when is not None, a.when or 0))
        item = items[exported.example_id]
        answer = Prediction(
            categories=tuple(item["categories"]), grade=item["grade"] or 0.0, answer_format="json"
        )
        result = GradingResult(Completion(text=None), prediction=answer)
        outcomes[exported.example_id] = score(
            exported.example_id, latest.categories or (), latest.grade, result, task
        )
    return outcomes, len(tasks) - len(outcomes)


def _figures(outcomes: list[Outcome]) -> dict[str, Estimate]:
    graded = [o for o in outcomes if o.grade_correct is not None]
    return {
        "category_accuracy": wilson(sum(o.category_correct for o in outcomes), len(outcomes)),
        "grade_accuracy": wilson(sum(bool(o.grade_correct) for o in graded), len(graded)),
    }


def _compare(uniform: dict[str, Estimate], bundle: Bundle, notes: list[str]) -> list[Comparison]:
    measured = bundle.manifest.provenance.metrics
    n_measured = int(measured.get("n_examples", 0) or 0)
    comparisons = []
    for metric in METRICS:
        figure, estimate = measured.get(metric), uniform[metric]
        if figure is None or math.isnan(figure) or n_measured <= 0 or estimate.n == 0:
            notes.append(f"{metric}: nothing to compare (no measured figure, or no labelled tray)")
            continue
        successes = round(estimate.value * estimate.n)
        test = two_proportions(successes, estimate.n, figure, n_measured)
        comparisons.append(Comparison(metric, estimate, figure, n_measured, test))
    for comparison, adjusted in zip(comparisons, holm([c.test.p_value for c in comparisons]), strict=True):
        comparison.adjusted_p = adjusted
    return comparisons


# -- the monitoring run --------------------------------------------------------------------------------
def as_document(report: MonitorScore) -> dict[str, Any]:
    def estimate(value: Estimate) -> dict[str, float | int | None]:
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in value.model_dump().items()
        }

    return {
        "bundle_sha256": report.bundle_sha256,
        "labelled": report.labelled,
        "unlabelled": report.unlabelled,
        "uniform": {name: estimate(value) for name, value in report.uniform.items()},
        "flagged": {name: estimate(value) for name, value in report.flagged.items()},
        "test": "two-proportion z-test (pooled, one-sided: production lower), Holm-adjusted over the metrics",
        "alpha": report.alpha,
        "comparisons": [
            {
                "metric": c.metric,
                "production": c.test.p_a,
                "production_n": c.test.n_a,
                "measured": c.measured,
                "measured_n": c.measured_n,
                "z": c.test.z,
                "p_value": c.test.p_value,
                "adjusted_p_value": c.adjusted_p,
            }
            for c in report.comparisons
        ],
        "significantly_worse": report.worse,
        "notes": report.notes,
    }


def log_score(
    report: MonitorScore,
    *,
    bundle_dir: Path,
    sample_path: Path,
    experiment: str | None,
    tracking_uri: str | None,
) -> Any:
    """The monitoring run in the promoted prompt's experiment, linked to the version production runs."""
    from promptgrade.tracking.monitoring import log_monitoring_run

    bundle, sha = current_bundle(bundle_dir)
    provenance = bundle.manifest.provenance
    experiment = experiment or provenance.experiment
    if not experiment:
        raise ProductionError("the bundle does not say which experiment promoted it: pass --experiment")
    uri = tracking_uri or (provenance.model_extra or {}).get("tracking_uri")
    metrics: dict[str, float] = {}
    for tier, figures in (("production", report.uniform), ("flagged", report.flagged)):
        for name, value in figures.items():
            if value.n:
                metrics |= {f"{tier}_{name}": value.value, f"{tier}_{name}_ci_low": value.ci_low}
                metrics |= {f"{tier}_{name}_ci_high": value.ci_high, f"{tier}_{name}_n": float(value.n)}
    for c in report.comparisons:
        metrics |= {f"measured_{c.metric}": c.measured, f"{c.metric}_p_value": c.test.p_value}
        metrics[f"{c.metric}_adjusted_p_value"] = c.adjusted_p
    prompt = bundle.manifest.prompt
    return log_monitoring_run(
        experiment,
        uri,
        run_name=f"monitor {prompt.name}@v{prompt.version}",
        prompt_name=prompt.name,
        prompt_sha256=prompt.sha256,
        params={"bundle_sha256": sha, "alpha": str(report.alpha), "labelled": str(report.labelled)},
        metrics=metrics,
        tags={
            "promptgrade.bundle_sha256": sha,
            "promptgrade.promoted_run_id": provenance.run_id or "",
            "promptgrade.monitor_verdict": "worse" if report.worse else "not worse",
        },
        documents={
            "monitor.json": as_document(report),
            "sample.json": json.loads(sample_path.read_text(encoding="utf-8")),
        },
    )
