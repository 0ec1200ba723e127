"""The pictures a person looks at before trusting a metric, drawn from the per-example outcomes.

Each candidate run gets four (category confusion, predicted vs true grade with the tolerance band,
the grade-error distribution, what failed and how), and the sweep run one comparison of every
candidate's primary metric with its 95% interval. matplotlib's Agg backend draws them off-screen;
figures are small (about 10–30 KB) and closed at once, so a sweep's memory does not grow with them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from promptgrade.scoring import Estimate, Outcome
from promptgrade.task import Task
from promptgrade.tracking import plot_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NO_ANSWER = "(no answer)"
COMPARISON_WIDTH = 7.0  # inches; the height grows with the candidates and their names' lines
LABEL_SHARE = 0.42  # of the comparison's width, at most, for the bars' names
LABEL_SIZE = 8.0


def _figure(width: float = 6.0, height: float = 4.5, *, left: float = 0.12, bottom: float = 0.12) -> Figure:
    """Fixed margins instead of a layout engine: constrained layout doubled the cost of every plot."""
    from matplotlib.figure import Figure  # the object API: no pyplot state, safe off the main thread

    figure = Figure(figsize=(width, height), dpi=90)
    figure.subplots_adjust(left=left, bottom=bottom, right=0.97, top=0.88)
    return figure


def candidate_figures(outcomes: Sequence[Outcome], task: Task, title: str) -> dict[str, Figure]:
    """artifact path → figure, for one candidate's scored examples (skipped examples left out)."""
    scored = [o for o in outcomes if o.status != "skipped"]
    figures = {
        "plots/category_confusion.png": confusion(scored, task, title),
        "plots/grade_predicted_vs_true.png": grade_scatter(scored, task, title),
        "plots/grade_error_distribution.png": error_histogram(scored, title),
        "plots/failures.png": failures(scored, title),
    }
    if any(o.samples for o in scored):
        figures["plots/accuracy_vs_coverage.png"] = accuracy_vs_coverage(scored, title)
    return figures


def coverage_curve(outcomes: Sequence[Outcome]) -> list[tuple[float, float, float, float]]:
    """(threshold, coverage, category accuracy, grade accuracy) over the answered examples, for every
    agreement threshold worth trying: abstaining below each agreement that occurs."""
    points = []
    n = len(outcomes)
    for threshold in sorted({o.agreement or 0.0 for o in outcomes}):
        answered = [o for o in outcomes if (o.agreement or 0.0) >= threshold]
        graded = [o for o in answered if o.grade_correct is not None]
        points.append(
            (
                threshold,
                len(answered) / n,
                sum(o.category_correct for o in answered) / len(answered),
                sum(bool(o.grade_correct) for o in graded) / len(graded) if graded else math.nan,
            )
        )
    return points


def accuracy_vs_coverage(outcomes: Sequence[Outcome], title: str) -> Figure:
    """What abstaining buys: as the agreement a tray needs rises, fewer trays are answered, and those
    answered are (one hopes) answered better."""
    points = coverage_curve(outcomes)
    figure = _figure()
    axes = figure.add_subplot()
    coverage = [p[1] for p in points]
    axes.plot(coverage, [p[2] for p in points], marker="o", label="category accuracy")
    axes.plot(coverage, [p[3] for p in points], marker="s", label="grade accuracy")
    for threshold, x, y, _ in points:
        axes.annotate(f"≥{threshold:.2f}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axes.set_xlim(0, 1.05)
    axes.set_ylim(0, 1.05)
    axes.set_xlabel("coverage (share of trays answered, not sent to a person)")
    axes.set_ylabel("accuracy over the answered trays")
    axes.legend(loc="lower left", fontsize=8)
    plot_text.set_title(figure, axes, title, "accuracy against coverage as the agreement needed rises")
    return figure


def confusion(outcomes: Sequence[Outcome], task: Task, title: str) -> Figure:
    """True category (the first labelled) × the model's first-named category, counts in the cells."""
    pairs = Counter(
        (
            o.true_categories[0] if o.true_categories else "?",
            o.predicted_categories[0] if o.predicted_categories else NO_ANSWER,
        )
        for o in outcomes
    )
    present = {t for t, _ in pairs} | {p for _, p in pairs if p != NO_ANSWER}
    rows = [c for c in task.categories if c in present] + sorted(present - set(task.categories))
    columns = [*rows, NO_ANSWER] if any(p == NO_ANSWER for _, p in pairs) else rows
    matrix = [[pairs.get((r, c), 0) for c in columns] for r in rows]
    figure = _figure(max(5.0, 0.45 * len(columns) + 2.5), max(4.0, 0.4 * len(rows) + 2.0))
    _confusion_margins(figure, rows, columns)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues", aspect="auto")
    axes.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(len(rows)), rows, fontsize=8)
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            if count:
                axes.text(j, i, str(count), ha="center", va="center", fontsize=7,
                          color="white" if count > peak / 2 else "black")  # fmt: skip
    axes.set_xlabel("predicted (first named)")
    axes.set_ylabel("true (first labelled)")
    figure.colorbar(image, ax=axes, shrink=0.8, pad=0.02)
    plot_text.set_title(figure, axes, title, f"category confusion, {len(outcomes)} examples")
    return figure


def _confusion_margins(figure: Figure, rows: list[str], columns: list[str]) -> None:
    """Room for the category names as drawn: the row names beside the matrix, and below it the column
    names turned 60° (they reach down sin 60° of their length) with the axis label under them; the
    figure grows rather than cutting "predicted (first named)" off its bottom edge."""
    width = plot_text.measure(figure)
    dpi, base = figure.dpi, figure.get_figheight()
    below = (0.87 * max((width(c, 8) for c in columns), default=0.0) + 48) / dpi  # inches
    height = base + max(0.0, below - 0.22 * base)
    figure.set_size_inches(figure.get_figwidth(), height)
    left = (max((width(r, 8) for r in rows), default=0.0) + 44) / figure.bbox.width
    figure.subplots_adjust(left=max(0.12, left), bottom=below / height)


def grade_scatter(outcomes: Sequence[Outcome], task: Task, title: str) -> Figure:
    scale = task.grade
    points = [
        (o.true_grade, o.predicted_grade)
        for o in outcomes
        if o.true_grade is not None and o.predicted_grade is not None
    ]
    missing = sum(1 for o in outcomes if o.true_grade is not None and o.predicted_grade is None)
    figure = _figure()
    axes = figure.add_subplot()
    line = [scale.minimum, scale.maximum]
    axes.fill_between(line, [v - scale.tolerance for v in line], [v + scale.tolerance for v in line],
                      color="tab:green", alpha=0.15, label=f"within ±{scale.tolerance:g} (correct)")  # fmt: skip
    axes.plot(line, line, color="tab:green", linewidth=1)
    if points:
        axes.scatter([t for t, _ in points], [p for _, p in points], s=14, alpha=0.7, color="tab:blue")
    axes.set_xlim(scale.minimum, scale.maximum)
    axes.set_ylim(scale.minimum, scale.maximum)
    axes.set_xlabel(f"true {scale.name}")
    axes.set_ylabel(f"predicted {scale.name}")
    note = f", {missing} more without a usable answer" if missing else ""
    plot_text.set_title(figure, axes, title, f"{len(points)} examples shown{note}")
    axes.legend(loc="upper left", fontsize=8)
    return figure


def error_histogram(outcomes: Sequence[Outcome], title: str) -> Figure:
    """|predicted − true| as grade_mae counts it: a failure is the worst error the scale allows."""
    errors = [o.grade_abs_error for o in outcomes if o.grade_abs_error is not None]
    figure = _figure()
    axes = figure.add_subplot()
    if errors:
        axes.hist(
            errors,
            bins=min(20, max(5, int(math.sqrt(len(errors))) + 1)),
            color="tab:orange",
            edgecolor="white",
        )
    axes.set_xlabel("absolute grade error (failures count as the worst possible)")
    axes.set_ylabel("examples")
    mean = sum(errors) / len(errors) if errors else math.nan
    plot_text.set_title(
        figure, axes, title, f"grade error distribution, mean {mean:.1f}, {len(errors)} examples"
    )
    return figure


def failures(outcomes: Sequence[Outcome], title: str) -> Figure:
    kinds = Counter("answered" if o.status == "ok" else (o.error_kind or o.status) for o in outcomes)
    labels = sorted(kinds, key=lambda k: (k != "answered", -kinds[k], k))
    figure = _figure(left=0.25)
    axes = figure.add_subplot()
    colors = ["tab:green" if k == "answered" else "tab:red" for k in labels]
    axes.barh(labels, [kinds[k] for k in labels], color=colors)
    axes.invert_yaxis()
    axes.set_xlabel("examples")
    plot_text.set_title(figure, axes, title, f"answers and failure kinds, {len(outcomes)} examples")
    return figure


def comparison(rows: Sequence[tuple[str, Estimate | float | None]], metric: str, title: str) -> Figure:
    """Every candidate's primary metric with its 95% interval, in the order given: best first, as
    ``promptgrade.ranking`` ranks them (the sweep passes them so), so the top bar is the winner every
    command names.

    Bars are named by what differs between candidates, wrapped to fit; what all of them share is
    written once under the plot, so each candidate's full label is in the figure and none is cut.
    """
    shown = [(name, value) for name, value in rows if value is not None and not _nan(value)]
    names, shared = plot_text.short_names([name for name, _ in shown])
    figure = _figure(COMPARISON_WIDTH, 3.0)
    width = plot_text.measure(figure)
    width_px = figure.bbox.width
    wrapped = ["\n".join(plot_text.wrap(n, LABEL_SHARE * width_px, LABEL_SIZE, width)) for n in names]
    footer = plot_text.wrap(
        "every candidate: " + plot_text.SEPARATOR.join(shared) if shared else "", 0.96 * width_px, 7.5, width
    )
    heading = plot_text.wrap(f"{title}: candidates by {metric}", 0.96 * width_px, 9, width)
    per_bar = max(0.45, max((n.count("\n") + 1 for n in wrapped), default=1) * _line_in(LABEL_SIZE) + 0.15)
    top_in = 0.2 + len(heading) * _line_in(9)
    bottom_in = 0.6 + (len(footer) * _line_in(7.5) + 0.1 if shared else 0.0)
    height = top_in + bottom_in + per_bar * max(1, len(shown))
    figure.set_size_inches(COMPARISON_WIDTH, height)
    label_px = max((width(line, LABEL_SIZE) for n in wrapped for line in n.split("\n")), default=0.0)
    figure.subplots_adjust(
        left=(label_px + 16) / width_px, right=0.96, top=1 - top_in / height, bottom=bottom_in / height
    )
    axes = figure.add_subplot()
    values = [_value(v) for _, v in shown]
    errors: list[list[float]] = [[], []]
    for _, value in shown:
        if isinstance(value, Estimate) and not (math.isnan(value.ci_low) or math.isnan(value.ci_high)):
            # an interval read back from a partial run may not straddle its value: never a negative bar
            errors[0].append(max(0.0, value.value - value.ci_low))
            errors[1].append(max(0.0, value.ci_high - value.value))
        else:
            errors[0].append(0.0)
            errors[1].append(0.0)
    positions = list(range(len(shown)))
    axes.barh(positions, values, xerr=errors, color="tab:blue", alpha=0.8, capsize=3)
    axes.set_yticks(positions, wrapped, fontsize=LABEL_SIZE)
    axes.invert_yaxis()
    axes.set_xlabel(f"{metric} (95% interval)")
    if shared:
        figure.text(0.02, 0.08 / height, "\n".join(footer), fontsize=7.5, va="bottom", color="dimgray")
    figure.suptitle("\n".join(heading), fontsize=9, y=1 - 0.08 / height, va="top")
    return figure


def _line_in(size: float) -> float:
    """The height of one line of text of ``size`` points, in inches (matplotlib's 1.2 spacing, rounded up)."""
    return size * 1.3 / 72


def _value(value: Any) -> float:
    return float(value.value if isinstance(value, Estimate) else value)


def _nan(value: Any) -> bool:
    return math.isnan(_value(value))
