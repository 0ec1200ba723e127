"""The paired bootstrap interval of the accuracy difference B − A, checked against the bootstrap
distribution worked out exactly (by hand, or by enumerating every resample of a tiny split), and in
``compare --runs`` (printed and in ``--json``) after a scripted sweep."""

from __future__ import annotations

import json
import math
from collections import Counter
from itertools import product
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.scripted_sweeps import planted_answers, write_experiment
from promptgrade.cli import app
from promptgrade.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, paired_bootstrap
from promptgrade.testing.gemini_server import FakeGemini

RUNNER = CliRunner(env={"COLUMNS": "240"})


def test_no_disagreement_is_a_point_interval() -> None:
    same = paired_bootstrap([True, False, True], [True, False, True])
    assert (same.difference, same.ci_low, same.ci_high, same.n) == (0.0, 0.0, 0.0, 3)
    better = paired_bootstrap([False] * 4, [True] * 4)
    assert (better.difference, better.ci_low, better.ci_high) == (1.0, 1.0, 1.0)


def test_two_examples_by_hand() -> None:
    # B alone right on one of two: a resample's difference is 0, 1/2 or 1 with chances 1/4, 1/2, 1/4,
    # so the 2.5% and 97.5% points are 0 and 1
    interval = paired_bootstrap([False, False], [True, False])
    assert (interval.difference, interval.ci_low, interval.ci_high) == (0.5, 0.0, 1.0)


def test_one_sided_disagreement_is_a_binomial_by_hand() -> None:
    # B alone right on 6 of 10, the rest ties: 10 × a resample's difference ~ Binomial(10, 0.6);
    # P(X ≤ 2) = 0.012 < 0.025 ≤ P(X ≤ 3) = 0.055 and P(X ≤ 8) = 0.954 < 0.975 ≤ P(X ≤ 9) = 0.994
    interval = paired_bootstrap([True] * 4 + [False] * 6, [True] * 10)
    assert (interval.difference, interval.ci_low, interval.ci_high) == pytest.approx((0.6, 0.3, 0.9))
    assert (interval.resamples, interval.seed, interval.confidence) == (10_000, 0, 0.95)


def test_the_interval_is_the_exact_bootstrap_distributions_quantiles() -> None:
    """Every one of the 5^5 resamples of a five-example split, enumerated: B alone right on three,
    A alone on one, one tie."""
    a = [False, False, False, True, False]
    b = [True, True, True, False, False]
    differences = [int(y) - int(x) for x, y in zip(a, b, strict=True)]
    counts = Counter(sum(pick) / 5 for pick in product(differences, repeat=5))
    cumulative, quantiles = 0, {}
    for value in sorted(counts):
        cumulative += counts[value]
        for q in (0.025, 0.975):
            if q not in quantiles and cumulative / 5**5 >= q:
                quantiles[q] = value
    interval = paired_bootstrap(a, b)
    assert (interval.ci_low, interval.ci_high) == pytest.approx((quantiles[0.025], quantiles[0.975]))
    assert (interval.ci_low, interval.ci_high) == pytest.approx((-0.4, 1.0))


def test_seeded_and_stated() -> None:
    a = [i % 3 == 0 for i in range(200)]
    b = [i % 2 == 0 for i in range(200)]
    first, again = paired_bootstrap(a, b), paired_bootstrap(a, b)
    assert first == again  # the same runs always print the same interval
    assert paired_bootstrap(a, b, seed=1) != first
    assert (first.resamples, first.seed) == (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
    small = paired_bootstrap(a, b, resamples=200)
    assert small.resamples == 200 and small.as_dict()["resamples"] == 200


def test_nothing_to_resample() -> None:
    empty = paired_bootstrap([], [])
    assert empty.n == 0 and math.isnan(empty.difference)
    assert empty.as_dict()["ci_low"] is None  # valid JSON, not NaN
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap([True], [])


def test_compare_runs_prints_and_writes_the_interval(
    tmp_path: Path, tracking: str, gemini_server: FakeGemini, fake_api_key: str
) -> None:
    """A = JSON, right on the first 4 of 10 trays; B = free text, right on all 10 (category and grade):
    the binomial case above, so [+30, +90] points."""
    path = tmp_path / "exp.yaml"
    examples = write_experiment(path, name="boot", base_url=gemini_server.base_url, n=10)
    ids = [e.id for e in examples]
    gemini_server.default_answer = planted_answers(examples, set(ids[:4]), set(ids))
    assert RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", tracking]).exit_code == 0
    out = tmp_path / "compare.json"
    result = RUNNER.invoke(
        app,
        [
            "compare",
            str(path),
            "--runs",
            "meal_tray_json@1",
            "meal_tray_freetext@1",
            "--json",
            str(out),
            "--tracking-uri",
            tracking,
        ],
    )
    assert result.exit_code == 0, result.output
    expected = {
        "difference_b_minus_a": pytest.approx(0.6),
        "ci_low": pytest.approx(0.3),
        "ci_high": pytest.approx(0.9),
        "n": 10,
        "confidence": 0.95,
        "resamples": 10_000,
        "seed": 0,
    }
    data = json.loads(out.read_text())
    assert data["category"]["accuracy_difference"] == expected
    assert data["grade"]["accuracy_difference"] == expected
    text = " ".join(result.output.split())
    line = (
        "accuracy B − A: +60.0 points, 95% paired bootstrap interval [+30.0, +90.0] "
        "(10,000 resamples of the 10 examples, seed 0)"
    )
    assert text.count(line) == 2  # category, then grade
