"""Pure scoring: (prediction, labels) → outcome → metrics. No I/O, so it is trivially testable.

Every example of the split counts. A failed call or an unparseable answer is *wrong*, never dropped:
dropping failures would reward a prompt that makes the model refuse its hardest trays.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from promptgrade.grading import GradingResult, Voted
from promptgrade.task import Task

Status = Literal["ok", "parse_failure", "error", "skipped"]
Z95 = 1.959963984540054


class Sample(BaseModel):
    """One of an example's k answers, as it voted (or failed to)."""

    model_config = ConfigDict(frozen=True)

    status: Status
    categories: tuple[str, ...] = ()
    grade: float | None = None
    category_correct: bool = False
    error_kind: str | None = None


class Outcome(BaseModel):
    """One row of the predictions table: truth, prediction, correctness, and what it cost."""

    model_config = ConfigDict(frozen=True)

    example_id: str
    status: Status
    true_categories: tuple[str, ...]
    true_grade: float | None
    predicted_categories: tuple[str, ...] = ()
    predicted_grade: float | None = None
    category_correct: bool = False
    category_top1_correct: bool = False
    grade_correct: bool | None = None  # None: the example has no grade label
    grade_abs_error: float | None = None
    error_kind: str | None = None
    error_message: str | None = None
    answer: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: float | None = None
    estimated_input_tokens: int | None = None  # the pre-call estimate (None: no model was called)
    # with ``samples: k`` > 1: each answer, how far they agreed (see grading.vote), and whether the
    # example was abstained (its agreement under the candidate's ``abstain_below``: a person decides)
    samples: tuple[Sample, ...] = ()
    agreement: float | None = None
    grade_spread: float | None = None
    abstained: bool = False


def score(
    example_id: str,
    true_categories: Sequence[str],
    true_grade: float | None,
    result: GradingResult,
    task: Task,
    *,
    estimated_input_tokens: int | None = None,
) -> Outcome:
    completion = result.completion
    common = {
        "estimated_input_tokens": estimated_input_tokens,
        "example_id": example_id,
        "true_categories": tuple(true_categories),
        "true_grade": true_grade,
        "answer": completion.text,
        "input_tokens": completion.input_tokens,
        "output_tokens": completion.output_tokens,
        "latency_ms": completion.latency_ms,
        "error_kind": result.error_kind,
        "error_message": result.error_message,
    }
    prediction = result.prediction
    if prediction is None:
        return Outcome(
            status=result.status,
            grade_correct=None if true_grade is None else False,
            grade_abs_error=None if true_grade is None else worst_grade_error(true_grade, task),
            **common,
        )
    truth = set(true_categories)
    grade_error = None if true_grade is None else abs(prediction.grade - true_grade)
    return Outcome(
        status="ok",
        predicted_categories=prediction.categories,
        predicted_grade=prediction.grade,
        category_correct=bool(truth.intersection(prediction.categories)),
        category_top1_correct=prediction.top1 in truth,
        grade_correct=None if grade_error is None else grade_error <= task.grade.tolerance + 1e-9,
        grade_abs_error=grade_error,
        **common,
    )


def score_vote(
    example_id: str,
    true_categories: Sequence[str],
    true_grade: float | None,
    voted: Voted,
    task: Task,
    *,
    estimated_input_tokens: int | None = None,
    abstain_below: float | None = None,
) -> Outcome:
    """The voted answer scored as any answer is; with several samples, each sample and the agreement.

    One sample scores exactly as ``score`` does (only ``abstained`` can differ, when asked for)."""
    outcome = score(
        example_id,
        true_categories,
        true_grade,
        voted.result,
        task,
        estimated_input_tokens=estimated_input_tokens,
    )
    abstained = voted.abstained(abstain_below)
    if len(voted.samples) == 1:
        return outcome.model_copy(update={"abstained": True}) if abstained else outcome
    truth = set(true_categories)
    samples = tuple(
        Sample(
            status=r.status,
            categories=r.prediction.categories if r.prediction else (),
            grade=r.prediction.grade if r.prediction else None,
            category_correct=bool(r.prediction and truth.intersection(r.prediction.categories)),
            error_kind=r.error_kind,
        )
        for r in voted.samples
    )
    return outcome.model_copy(
        update={
            "samples": samples,
            "agreement": voted.agreement,
            "grade_spread": voted.grade_spread,
            "abstained": abstained,
        }
    )


def skipped(
    example_id: str, true_categories: Sequence[str], true_grade: float | None, reason: str
) -> Outcome:
    """An example whose data is unusable (e.g. unreadable image): recorded, reported, not scored."""
    return Outcome(
        example_id=example_id,
        status="skipped",
        true_categories=tuple(true_categories),
        true_grade=true_grade,
        error_kind="unusable_example",
        error_message=reason,
    )


def worst_grade_error(true_grade: float, task: Task) -> float:
    """A missing grade is as wrong as the farthest answer on the scale — never silently excused."""
    return max(true_grade - task.grade.minimum, task.grade.maximum - true_grade)


class Estimate(BaseModel):
    """A metric with its 95% confidence interval and the count it rests on."""

    model_config = ConfigDict(frozen=True)

    value: float
    ci_low: float
    ci_high: float
    n: int


def wilson(successes: int, n: int) -> Estimate:
    """Wilson score interval: honest at small n and near 0 or 1, where the normal interval is not."""
    if n == 0:
        return Estimate(value=math.nan, ci_low=math.nan, ci_high=math.nan, n=0)
    p = successes / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return Estimate(value=p, ci_low=max(0.0, centre - half), ci_high=min(1.0, centre + half), n=n)


def mean_ci(values: Sequence[float]) -> Estimate:
    n = len(values)
    if n == 0:
        return Estimate(value=math.nan, ci_low=math.nan, ci_high=math.nan, n=0)
    mean = sum(values) / n
    if n == 1:
        return Estimate(value=mean, ci_low=math.nan, ci_high=math.nan, n=1)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = Z95 * sd / math.sqrt(n)
    return Estimate(value=mean, ci_low=mean - half, ci_high=mean + half, n=n)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), without importing numpy into the grading path."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


class Price(BaseModel):
    """USD per million tokens. Configuration, never a constant: model prices change with model ids."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float
    output: float
    # a provider's batch jobs bill their own (usually half) price; unset: a batch of this model has no price
    batch_input: float | None = None
    batch_output: float | None = None

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000

    def batch(self) -> Price | None:
        """The price of the same tokens sent as a batch job, if the table gives one."""
        if self.batch_input is None or self.batch_output is None:
            return None
        return Price(input=self.batch_input, output=self.batch_output)


def summarise(
    outcomes: Iterable[Outcome],
    price: Price | None = None,
    task: Task | None = None,
    *,
    selective: bool = False,
) -> dict[str, Estimate | float]:
    """The user-visible metrics (names are stable: see metric_names and docs/reference/metrics.md). Skipped examples are counted apart.

    Without the ``task``, the split-wide statistics that need its categories and tolerance are left out.
    Examples answered by several samples add the agreement metrics; ``selective`` (a candidate with
    ``abstain_below``) adds coverage and the accuracies over the examples not abstained."""
    rows = list(outcomes)
    scored = [o for o in rows if o.status != "skipped"]
    n = len(scored)
    graded = [o for o in scored if o.true_grade is not None]
    latencies = [o.latency_ms for o in scored if o.latency_ms is not None and o.status != "error"]
    input_tokens = sum(o.input_tokens for o in scored)
    output_tokens = sum(o.output_tokens for o in scored)
    # like for like: the estimate over the answers whose usage was reported, beside their real count
    estimated = [o.estimated_input_tokens for o in scored if o.input_tokens and o.estimated_input_tokens]
    metrics: dict[str, Estimate | float] = {
        "category_accuracy": wilson(sum(o.category_correct for o in scored), n),
        "category_top1_accuracy": wilson(sum(o.category_top1_correct for o in scored), n),
        "grade_accuracy": wilson(sum(bool(o.grade_correct) for o in graded), len(graded)),
        "grade_mae": mean_ci([o.grade_abs_error for o in graded if o.grade_abs_error is not None]),
        "parse_failure_rate": wilson(sum(o.status == "parse_failure" for o in scored), n),
        "error_rate": wilson(sum(o.status == "error" for o in scored), n),
        "latency_p50_ms": percentile(latencies, 0.50),
        "latency_p95_ms": percentile(latencies, 0.95),
        "input_tokens": float(input_tokens),
        "output_tokens": float(output_tokens),
        "n_examples": float(n),
        "n_skipped": float(len(rows) - n),
    }
    if estimated:
        metrics["estimated_input_tokens"] = float(sum(estimated))
    if price is not None:
        metrics["cost_usd"] = price.cost(input_tokens, output_tokens)
    if any(o.samples for o in scored):
        metrics.update(sample_metrics(scored))
    if selective:
        metrics.update(selective_metrics(scored))
    if task is not None:
        metrics.update(split_statistics(scored, task))
    return metrics


def sample_metrics(scored: Sequence[Outcome]) -> dict[str, Estimate | float]:
    """How far repeated samples agree: per example, then averaged; and every sample scored unvoted."""
    samples = [sample for o in scored for sample in o.samples]
    spreads = [o.grade_spread for o in scored if o.grade_spread is not None]
    return {
        "agreement_mean": mean_ci([o.agreement or 0.0 for o in scored]),
        "grade_spread_mean": mean_ci(spreads),
        "sample_category_accuracy": wilson(sum(s.category_correct for s in samples), len(samples)),
    }


def selective_metrics(scored: Sequence[Outcome]) -> dict[str, Estimate | float]:
    """The share answered (not abstained) and the accuracies over those only."""
    answered = [o for o in scored if not o.abstained]
    graded = [o for o in answered if o.true_grade is not None]
    return {
        "coverage": wilson(len(answered), len(scored)),
        "selective_category_accuracy": wilson(sum(o.category_correct for o in answered), len(answered)),
        "selective_grade_accuracy": wilson(sum(bool(o.grade_correct) for o in graded), len(graded)),
    }


def flatten(metrics: dict[str, Estimate | float]) -> dict[str, float]:
    """MLflow wants flat floats: ``x``, ``x_ci_low``, ``x_ci_high``; NaN (nothing to measure) is left out."""
    flat: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, Estimate):
            flat[name] = value.value
            flat[f"{name}_ci_low"] = value.ci_low
            flat[f"{name}_ci_high"] = value.ci_high
        else:
            flat[name] = float(value)
    return {k: v for k, v in flat.items() if not math.isnan(v)}


# --------------------------------------------------------------------------------------------------
# Statistics over the whole split: per-category F1 and the grades' weighted kappa
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CategoryScore:
    """One category's row of ``per_category.json``, counted multi-label over the named sets.

    Both the truth and the answer are sets of categories, so each category is a yes/no question on
    every example; the first-named category alone would throw the second true category away.
    """

    category: str
    support: int  # examples whose truth includes it
    predicted: int  # examples whose answer names it (a failed answer names nothing)
    true_positives: int
    precision: float  # NaN: never named, so nothing to be precise about
    recall: float  # NaN: never true, so nothing to recall
    f1: float  # 2·TP / (support + predicted); NaN only when the category neither occurs nor is named

    @property
    def false_positives(self) -> int:
        return self.predicted - self.true_positives

    @property
    def false_negatives(self) -> int:
        return self.support - self.true_positives

    def row(self) -> dict[str, str | int | float]:
        return {
            **asdict(self),
            "false_positives": self.false_positives,
            "false_negatives": self.false_negatives,
        }


def per_category(outcomes: Iterable[Outcome], categories: Sequence[str] = ()) -> list[CategoryScore]:
    """Precision, recall and F1 of each category, in the task's order (then any other seen, sorted).

    Skipped examples are not scored; a failed or unparsed answer names nothing, so it costs the
    recall of every true category of its tray — failures stay wrong here too.
    """
    rows = [(set(o.true_categories), set(o.predicted_categories)) for o in outcomes if o.status != "skipped"]
    seen = set().union(*(truth | named for truth, named in rows)) if rows else set()
    order = [*categories, *sorted(seen.difference(categories))]
    scores = []
    for category in order:
        support = sum(category in truth for truth, _ in rows)
        predicted = sum(category in named for _, named in rows)
        hits = sum(category in truth and category in named for truth, named in rows)
        scores.append(
            CategoryScore(
                category=category,
                support=support,
                predicted=predicted,
                true_positives=hits,
                precision=hits / predicted if predicted else math.nan,
                recall=hits / support if support else math.nan,
                f1=2 * hits / (support + predicted) if support + predicted else math.nan,
            )
        )
    return scores


def macro_f1(scores: Sequence[CategoryScore]) -> float:
    """Mean F1 over the categories that occur in the truth or in the answers: a category nobody ever
    mentions has no F1 to average, and counting it as 0 or 1 would move the mean by fiat."""
    defined = [s.f1 for s in scores if not math.isnan(s.f1)]
    return sum(defined) / len(defined) if defined else math.nan


def grade_bin(grade: float, tolerance: float) -> float:
    """``round(grade / tolerance)``, halves rounded up so every bin is one tolerance wide (Python's
    ``round`` rounds halves to even, which makes bins alternately wider and narrower); tolerance 0:
    the grade itself. The 1e-9 makes 0.35 / 0.1 = 3.4999… the half it means, as scoring's tolerance does."""
    if tolerance == 0:
        return grade
    return float(math.floor(grade / tolerance + 0.5 + 1e-9))


def weighted_kappa(truth: Sequence[float], predicted: Sequence[float]) -> float:
    """Cohen's kappa with quadratic weights, the weight of a disagreement being the squared distance
    between the two values on their own scale.

    With those weights the chance disagreement of all n² pairings has a closed form (the two
    variances plus the squared difference of the means), so no confusion matrix — and no
    scikit-learn import, a second of start-up — is needed; it equals ``cohen_kappa_score(...,
    weights="quadratic", labels=<every integer bin in range>)``. NaN when there is nothing to agree on
    (no pairs, or every value the same).
    """
    if len(truth) != len(predicted):
        raise ValueError("paired grades must have the same length")
    n = len(truth)
    if n == 0:
        return math.nan
    mean_t, mean_p = sum(truth) / n, sum(predicted) / n
    observed = sum((t - p) ** 2 for t, p in zip(truth, predicted, strict=True)) / n
    chance = (
        sum((t - mean_t) ** 2 for t in truth) / n
        + sum((p - mean_p) ** 2 for p in predicted) / n
        + (mean_t - mean_p) ** 2
    )
    return 1 - observed / chance if chance > 0 else math.nan


def grade_weighted_kappa(outcomes: Iterable[Outcome], tolerance: float) -> float:
    """Kappa between binned true and predicted grades, over the examples that have both: a failed
    answer has no grade to bin, and grade_mae and grade_accuracy already count it as wrong."""
    pairs = [
        (grade_bin(o.true_grade, tolerance), grade_bin(o.predicted_grade, tolerance))
        for o in outcomes
        if o.status != "skipped" and o.true_grade is not None and o.predicted_grade is not None
    ]
    return weighted_kappa([t for t, _ in pairs], [p for _, p in pairs])


def split_statistics(outcomes: Sequence[Outcome], task: Task) -> dict[str, Estimate | float]:
    """``category_macro_f1`` and ``grade_weighted_kappa``: whole-split figures, without intervals."""
    return {
        "category_macro_f1": macro_f1(per_category(outcomes, task.categories)),
        "grade_weighted_kappa": grade_weighted_kappa(outcomes, task.grade.tolerance),
    }
