"""Paired tests for "is the challenger measurably better than the incumbent on the same examples?".

Both prompts answered the same trays, so their outcomes are paired; unpaired tests would throw that
information away and need far more examples to see the same difference. (One unpaired test is here
too, ``two_proportions``: production's labelled sample against the promoted candidate's measurement,
which share no trays.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PairedTest:
    name: str
    n: int
    p_value: float
    challenger_better: bool  # the direction of the observed difference
    detail: str

    def significant(self, alpha: float) -> bool:
        return self.p_value < alpha


def mcnemar(incumbent: Sequence[bool], challenger: Sequence[bool]) -> PairedTest:
    """Exact McNemar test: only the examples where exactly one of the two was right carry information."""
    if len(incumbent) != len(challenger):
        raise ValueError("paired outcomes must have the same length")
    only_challenger = sum(1 for a, b in zip(incumbent, challenger, strict=True) if b and not a)
    only_incumbent = sum(1 for a, b in zip(incumbent, challenger, strict=True) if a and not b)
    discordant = only_challenger + only_incumbent
    if discordant == 0:
        p = 1.0
    else:
        tail = sum(math.comb(discordant, k) for k in range(min(only_challenger, only_incumbent) + 1))
        p = min(1.0, 2 * tail / 2**discordant)
    return PairedTest(
        name="McNemar (exact)",
        n=len(incumbent),
        p_value=p,
        challenger_better=only_challenger > only_incumbent,
        detail=f"challenger right where incumbent wrong: {only_challenger}; the reverse: {only_incumbent}",
    )


def wilcoxon_errors(incumbent: Sequence[float], challenger: Sequence[float]) -> PairedTest:
    """Wilcoxon signed-rank test on per-example absolute grade errors (no normality assumed)."""
    from scipy.stats import wilcoxon

    if len(incumbent) != len(challenger):
        raise ValueError("paired outcomes must have the same length")
    differences = [a - b for a, b in zip(incumbent, challenger, strict=True)]
    mean_gain = sum(differences) / len(differences) if differences else 0.0
    p = 1.0 if not any(differences) else float(wilcoxon(incumbent, challenger, zero_method="wilcox").pvalue)
    return PairedTest(
        name="Wilcoxon signed-rank on |grade error|",
        n=len(incumbent),
        p_value=p,
        challenger_better=mean_gain > 0,
        detail=f"mean reduction in absolute grade error: {mean_gain:+.2f}",
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment, in the order given: reject where the adjusted p is below alpha.

    Picking the best of m challengers and testing it alone at alpha finds a "better" prompt by luck far
    more often than alpha; Holm keeps that chance (the family-wise error) at most alpha for any
    dependence between the tests — they share the incumbent's answers — and rejects at least as
    often as Bonferroni.
    """
    m = len(p_values)
    adjusted = [1.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class BootstrapInterval:
    """accuracy(B) − accuracy(A) on the same examples, with a paired percentile bootstrap interval."""

    difference: float
    ci_low: float
    ci_high: float
    n: int
    confidence: float = 0.95
    resamples: int = BOOTSTRAP_RESAMPLES
    seed: int = BOOTSTRAP_SEED

    def as_dict(self) -> dict[str, float | int | None]:
        def clean(value: float) -> float | None:
            return None if math.isnan(value) else value

        return {
            "difference_b_minus_a": clean(self.difference),
            "ci_low": clean(self.ci_low),
            "ci_high": clean(self.ci_high),
            "n": self.n,
            "confidence": self.confidence,
            "resamples": self.resamples,
            "seed": self.seed,
        }


def paired_bootstrap(
    right_a: Sequence[bool],
    right_b: Sequence[bool],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = 0.95,
) -> BootstrapInterval:
    """Resample the examples (each with both runs' answers, so the pairing is kept) with replacement.

    McNemar says whether B differs from A; the interval says by how much, on the accuracy scale a
    person reads. Each example's difference is +1, 0 or −1, so the counts of each in a resample of
    n examples are multinomial: drawing those counts is the same distribution as drawing n indices,
    in O(1) per resample whatever n is. Seeded, so the same runs always print the same interval.
    """
    import numpy as np

    if len(right_a) != len(right_b):
        raise ValueError("paired outcomes must have the same length")
    n = len(right_a)
    if n == 0:
        return BootstrapInterval(math.nan, math.nan, math.nan, 0, confidence, resamples, seed)
    only_b = sum(1 for a, b in zip(right_a, right_b, strict=True) if b and not a)
    only_a = sum(1 for a, b in zip(right_a, right_b, strict=True) if a and not b)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, [only_b / n, only_a / n, (n - only_b - only_a) / n], size=resamples)
    differences = (counts[:, 0] - counts[:, 1]) / n
    tail = (1 - confidence) / 2
    low, high = np.quantile(differences, [tail, 1 - tail])
    return BootstrapInterval((only_b - only_a) / n, float(low), float(high), n, confidence, resamples, seed)


@dataclass(frozen=True)
class ProportionTest:
    """Is proportion a (``successes_a``/``n_a``) below proportion b? One-sided, on different examples."""

    p_a: float
    n_a: int
    p_b: float
    n_b: int
    z: float
    p_value: float  # P(a this far below b | the same proportion)

    def worse(self, alpha: float) -> bool:
        return self.p_a < self.p_b and self.p_value < alpha


def two_proportions(successes_a: int, n_a: int, p_b: float, n_b: int) -> ProportionTest:
    """Two-proportion z-test (pooled, one-sided: a lower than b).

    Unpaired, unlike the tests above: production's labelled sample and the candidate's evaluation
    split are different trays, so there is no pairing to use. ``p_b`` is given as a proportion
    because the other side may be known only by its figure and count (an MLflow metric and its n).
    """
    if n_a <= 0 or n_b <= 0:
        raise ValueError("both proportions need at least one example")
    p_a = successes_a / n_a
    pooled = (successes_a + p_b * n_b) / (n_a + n_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    z = (p_a - p_b) / spread if spread > 0 else 0.0  # no spread: both all right or all wrong, equal
    p_value = 0.5 * math.erfc(-z / math.sqrt(2))  # the normal's lower tail at z
    return ProportionTest(p_a, n_a, p_b, n_b, z, p_value)
