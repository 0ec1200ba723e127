"""Paired tests for "is the challenger measurably better than the incumbent on the same examples?".

Both prompts answered the same trays, so their outcomes are paired; unpaired tests would throw that
information away and need far more examples to see the same difference.
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
