"""Given candidates with long labels, then ``plots/candidates.png`` and every candidate plot keep all
their text inside the figure — measured with the renderer that saves the PNG, not eyeballed — and the
candidates' bars still say, in full, which candidate each one is."""

from __future__ import annotations

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from helpers import ROOT
from promptgrade.scoring import Estimate, Outcome
from promptgrade.task import load_task
from promptgrade.tracking import plots
from promptgrade.tracking.plot_text import SEPARATOR, short_names, wrap

SETTINGS = "temperature=0.0 · max_output_tokens=512"
LABELS = [
    f"meal_tray_freetext@v1 · gemini-2.5-flash · text · {SETTINGS}",
    f"meal_tray_json@v1 · gemini-2.5-flash · json · {SETTINGS}",
    f"meal_tray_anchors@v1 · gemini-2.5-flash · json · {SETTINGS}",
    f"meal_tray_anchors@v1 · gemini-2.5-flash-preview-09-2025 · json · {SETTINGS} · samples=5",
]


def estimate(value: float) -> Estimate:
    return Estimate(value=value, ci_low=max(0.0, value - 0.1), ci_high=min(1.0, value + 0.1), n=64)


def assert_inside(figure: Figure) -> None:
    """The figure's tight bounding box — everything drawn, as the renderer lays it out — lies within the
    saved figure, and so does each title, bar name and note (named when one is cut)."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    width, height = figure.bbox.width, figure.bbox.height
    texts: list[Text] = list(figure.texts)
    for axes in figure.axes:
        texts += [axes.title, axes.xaxis.label, axes.yaxis.label, *axes.get_yticklabels()]
    for text in (t for t in texts if t.get_text().strip()):
        box = text.get_window_extent(renderer)
        where = f"{text.get_text()!r} is cut: x {box.x0:.0f}–{box.x1:.0f} of {width:.0f}, y {box.y0:.0f}–{box.y1:.0f} of {height:.0f}"
        assert box.x0 >= -0.5 and box.x1 <= width + 0.5, where
        assert box.y0 >= -0.5 and box.y1 <= height + 0.5, where
    tight = figure.get_tightbbox(renderer)  # inches
    inches = figure.get_size_inches()
    assert tight.x0 >= -0.01 and tight.y0 >= -0.01, tight
    assert tight.x1 <= inches[0] + 0.01 and tight.y1 <= inches[1] + 0.01, (tight, inches)


@pytest.mark.parametrize("with_baseline", [False, True])
def test_the_comparison_keeps_every_label_inside_and_whole(with_baseline: bool) -> None:
    labels = [*LABELS, "baseline · classical"] if with_baseline else LABELS
    rows = [(label, estimate(0.5 + 0.05 * i)) for i, label in enumerate(labels)]
    figure = plots.comparison(rows, "category_accuracy", "meal-tray-prompts")

    assert_inside(figure)
    axes = figure.axes[0]
    bars = [t.get_text() for t in axes.get_yticklabels()]
    notes = " ".join(t.get_text() for t in figure.texts).replace("\n", " ")
    for label, bar in zip(labels, bars, strict=True):  # drawn in the order given: best first
        shown = set(bar.replace("\n", SEPARATOR).split(SEPARATOR))
        missing = [part for part in label.split(SEPARATOR) if part not in shown and part not in notes]
        assert not missing, f"{label!r}: {missing} shown nowhere"
    assert len(set(bars)) == len(bars)  # no two bars read the same


def test_shared_parts_are_said_once_and_the_bars_keep_what_differs() -> None:
    names, shared = short_names(LABELS[:3])
    assert names == [
        "meal_tray_freetext@v1 · text",
        "meal_tray_json@v1 · json",
        "meal_tray_anchors@v1 · json",
    ]
    assert shared == ["gemini-2.5-flash", "temperature=0.0", "max_output_tokens=512"]
    assert short_names(LABELS[:1]) == (LABELS[:1], [])


def test_wrapping_breaks_at_the_separator_then_spaces_then_anywhere() -> None:
    def width(text: str, size: float) -> float:
        return float(len(text))  # one pixel per character

    assert wrap("a · b · c", 5, 8, width) == ["a · b", "c"]
    assert wrap("alpha beta", 6, 8, width) == ["alpha", "beta"]
    assert wrap("abcdefgh", 3, 8, width) == ["abc", "def", "gh"]


def test_candidate_plot_titles_are_wrapped_not_cut() -> None:
    task = load_task(ROOT / "experiments" / "tasks" / "meal_tray.yaml")
    categories = task.categories
    outcomes = [
        Outcome(
            example_id=f"tray-{i}",
            status="ok" if i % 7 else "parse_failure",
            true_categories=(categories[i % 5],),
            true_grade=float(5 * (i % 20)),
            predicted_categories=(categories[(i * 3) % 6],) if i % 7 else (),
            predicted_grade=float(5 * (i % 19)) if i % 7 else None,
            category_correct=i % 2 == 0,
            grade_correct=i % 3 == 0,
            grade_abs_error=float(i % 30),
            error_kind=None if i % 7 else "parse_failure",
            agreement=(i % 5) / 4,
            samples=(),
        )
        for i in range(40)
    ]
    label = LABELS[-1]
    figures = plots.candidate_figures(outcomes, task, label) | {
        "plots/accuracy_vs_coverage.png": plots.accuracy_vs_coverage(outcomes, label)
    }
    for path, figure in figures.items():
        assert_inside(figure)
        title = figure.axes[0].get_title()
        assert all(part in title for part in label.split(SEPARATOR)), f"{path}: the label is not whole"
