"""Which trays a person should label first, and why.

A labeller's minute is worth most where a candidate abstained (its samples did not agree enough to
answer: in production that tray goes to a person anyway), then where the labels are missing, then where
the sweep's candidates
disagree (the truth there decides which prompt wins), then where answers failed to parse (the image
may be odd), and least where every candidate already agrees — among those, first where they agree
against the current label (a probable labelling mistake, see ``suspects``). The reason travels with each task, so
the annotator sees why a tray is at the top of the queue.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from promptgrade.labels.votes import Answer, SweepAnswers
from promptgrade.task import Task

ABSTAINED, UNLABELLED, DISAGREEMENT = "abstained", "unlabelled", "disagreement"
FAILURES, AGREEMENT = "parse_failures", "agreement"
TIERS = (ABSTAINED, UNLABELLED, DISAGREEMENT, FAILURES, AGREEMENT)


@dataclass(frozen=True)
class Current:
    """An example's labels as the labels file holds them now (empty categories: not labelled yet)."""

    example_id: str
    split: str
    categories: tuple[str, ...]
    grade: float | None


@dataclass(frozen=True)
class Priority:
    example_id: str
    tier: str
    disagreement: float  # 0 (all agree) … 1: the larger of the category split and the grade range
    reason: str
    agreement_with_chosen: float | None  # share of answering candidates that agree with the chosen one
    against_label: bool = False  # the candidates agree with each other, not with the current label


def _category_key(answer: Answer) -> tuple[str, ...]:
    return tuple(sorted(answer.categories))


def assess(current: Current, answers: list[Answer], chosen: Answer | None, task: Task) -> Priority:
    """One example's place in the queue, from its labels and the candidates' answers (pure)."""
    answered = [a for a in answers if a.status == "ok"]
    failed = [a for a in answers if a.status != "ok"]
    votes = Counter(_category_key(a) for a in answered)
    category_split = 1 - votes.most_common(1)[0][1] / len(answered) if answered else 0.0
    grades = [a.grade for a in answered if a.grade is not None]
    width = task.grade.maximum - task.grade.minimum
    grade_range = max(grades) - min(grades) if grades else 0.0
    disagreement = max(category_split, grade_range / width)
    described = ", ".join(f"{' + '.join(k) or '–'} {n}/{len(answered)}" for k, n in votes.most_common(3))
    spread = f"; {task.grade.name} {_short(min(grades))}–{_short(max(grades))}" if grades else ""
    agreement = None
    if chosen is not None and chosen.status == "ok" and answered:
        agreement = votes[_category_key(chosen)] / len(answered)
    abstained = [a.candidate for a in answers if a.abstained]
    if abstained:
        tier = ABSTAINED
        reason = f"abstained by {', '.join(abstained)} (its samples disagree); candidates: {described or 'none answered'}{spread}"
    elif not current.categories or current.grade is None:
        missing = "no label yet" if not current.categories else f"no {task.grade.name} label yet"
        tier, reason = UNLABELLED, f"{missing}; candidates: {described or 'none answered'}{spread}"
    elif category_split > 0 or grade_range > task.grade.tolerance:
        tier, reason = DISAGREEMENT, f"candidates disagree: {described}{spread}"
    elif failed:
        kinds = ", ".join(sorted({a.status for a in failed}))
        tier = FAILURES
        reason = (
            f"{len(failed)} of {len(answers)} candidate answer(s) failed ({kinds}); the rest: {described}"
        )
    elif answered:
        tier, reason = AGREEMENT, f"all {len(answered)} candidates agree: {described}{spread}"
        consensus = answered[0]
        against = not set(consensus.categories) & set(current.categories) or (
            consensus.grade is not None and abs(consensus.grade - current.grade) > task.grade.tolerance
        )
        if against:
            reason += f" — against the label ({' + '.join(current.categories)} · {current.grade:g})"
            return Priority(current.example_id, tier, disagreement, reason, agreement, against_label=True)
    else:
        tier, reason = AGREEMENT, "not in the sweep: no candidate answered it"
    return Priority(current.example_id, tier, disagreement, reason, agreement)


def _short(value: float) -> str:
    """A trained baseline's grade has 15 digits; a person reads one decimal at most."""
    return f"{round(value, 1):g}"


def order(current: list[Current], sweep: SweepAnswers | None, task: Task) -> list[Priority]:
    """Most useful first: by tier, then the larger disagreement, then id (a stable, reproducible queue)."""
    assessed = [
        assess(
            c,
            sweep.of(c.example_id) if sweep else [],
            sweep.chosen_answer(c.example_id) if sweep else None,
            task,
        )
        for c in current
    ]
    return sorted(
        assessed, key=lambda p: (TIERS.index(p.tier), not p.against_label, -p.disagreement, p.example_id)
    )
