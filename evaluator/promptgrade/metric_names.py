"""Every metric a candidate run can have, named once with what it means.

The README's and docs' metric tables are generated from this (``scripts/gen_docs.py``; a test fails when
they drift), and a test checks that ``summarise`` produces no metric missing here: a metric means
exactly what this says, in MLflow, in the CLI's tables and in the docs.
"""

from __future__ import annotations

# names (a row may define a pair) -> definition, in the order the docs list them
METRICS: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("category_accuracy",),
        "share of examples where at least one named category is a true one",
    ),
    (
        ("category_top1_accuracy",),
        (
            "share where the model's first-named category is a true one (a first name outside the task's "
            "categories is a wrong top-1, even if an allowed name follows)"
        ),
    ),
    (
        ("grade_accuracy",),
        "share of graded examples with |predicted − true| ≤ the task's tolerance (default 10 points)",
    ),
    (
        ("grade_mae",),
        (
            "mean absolute grade error; an example without a usable answer counts as the worst error possible on "
            "the scale for its true grade (with a 95% t-interval)"
        ),
    ),
    (
        ("category_macro_f1",),
        (
            "mean over categories of each category's F1, counted multi-label over the named sets (see *Which "
            "statistics, and why*); the mean is over the task's categories that occur in the truth or in the "
            "answers of the split — a category nobody names or has has no F1; no interval"
        ),
    ),
    (
        ("grade_weighted_kappa",),
        (
            "Cohen's kappa with quadratic weights between true and predicted grades, each binned as `round(grade "
            "/ tolerance)` with halves rounded up (tolerance 0: the grades themselves), over the examples that "
            "have a true grade **and** a predicted one — unlike `grade_mae`, a failed answer is left out here (it "
            "is already wrong in `grade_accuracy`, `grade_mae` and `parse_failure_rate`); 1 = perfect, 0 = "
            "chance; absent when every grade falls in one bin; no interval"
        ),
    ),
    (
        ("parse_failure_rate",),
        "share of answers that did not parse",
    ),
    (
        ("error_rate",),
        "share of examples whose call failed (after retries), was blocked, empty or truncated",
    ),
    (
        ("latency_p50_ms", "latency_p95_ms"),
        "model latency of answered calls",
    ),
    (
        ("input_tokens", "output_tokens"),
        "summed from the responses' `usageMetadata`",
    ),
    (
        ("estimated_input_tokens",),
        (
            "the pre-call estimate (the dry run's and the budget's rule) summed over the same answered examples, "
            "to compare with `input_tokens`; the sweep prints both per call"
        ),
    ),
    (
        ("cost_usd",),
        "tokens × the price table (absent when the model has no price)",
    ),
    (
        ("n_examples", "n_skipped"),
        "examples scored; examples skipped as unusable (unreadable image)",
    ),
    (
        ("agreement_mean",),
        (
            "with `samples: k` > 1: mean over examples of the share of answering samples whose first-named "
            "category is the vote (an example no sample answered counts 0), with a 95% t-interval"
        ),
    ),
    (
        ("grade_spread_mean",),
        (
            "with `samples: k` > 1: mean over examples with at least one answering sample of their grades' max − "
            "min"
        ),
    ),
    (
        ("sample_category_accuracy",),
        "with `samples: k` > 1: `category_accuracy` over every sample, unvoted (a failed sample is wrong)",
    ),
    (
        ("coverage",),
        "with `abstain_below`: share of examples answered, i.e. not abstained",
    ),
    (
        ("selective_category_accuracy", "selective_grade_accuracy"),
        "with `abstain_below`: the accuracies over the examples answered only",
    ),
)

NAMES: frozenset[str] = frozenset(name for names, _ in METRICS for name in names)


def markdown_table() -> str:
    """The metrics table as the docs show it."""
    rows = ["| metric | definition |", "| --- | --- |"]
    for names, definition in METRICS:
        shown = ", ".join(f"`{name}`" for name in names)
        escaped = definition.replace("|", "\\|")  # a literal bar inside a Markdown table cell
        rows.append(f"| {shown} | {escaped} |")
    return "\n".join(rows) + "\n"
