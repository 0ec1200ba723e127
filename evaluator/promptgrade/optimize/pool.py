"""The search's population: every template tried, how each example scored it, and the choices made
from those scores — which parent to improve next and which proposals are worth a person's review.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Literal

from promptgrade.data.examples import Example
from promptgrade.references import Reference
from promptgrade.scoring import Outcome

Status = Literal["start", "improved", "evaluated", "not_better", "rejected", "unfinished"]


@dataclass
class Node:
    """One prompt of the search: the start prompt or a proposal — its template and the reference
    trays it shows (both are what the prompt is; its answers are cached under both)."""

    id: str
    body: str
    parent: str | None
    round: int
    status: Status
    reason: str | None = None
    scores: dict[str, float] = field(default_factory=dict)  # instance (model · example id) → score
    metrics: dict[str, Any] = field(default_factory=dict)  # on the optimisation split, per task model
    minibatch: tuple[float, float] | None = None  # (parent, proposal) sums on the shared minibatch
    reflection_prompt: str | None = None  # what the reflection model was shown (with the contact sheet)
    reflection_answer: str | None = None
    written_as: str | None = None
    run_id: str | None = None
    references: tuple[Reference, ...] = field(default=(), repr=False)
    change: str = ""  # what this proposal changed in its parent, in words (the lineage's)

    @property
    def reference_ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.references)

    @property
    def score(self) -> float:
        return sum(self.scores.values()) / len(self.scores) if self.scores else math.nan


def per_example_score(outcome: Outcome, metric: str, span: float) -> float:
    """One example's contribution to the metric the search optimises, 1 best; a failure scores 0."""
    if metric == "category_accuracy":
        return float(outcome.category_correct)
    if metric == "category_top1_accuracy":
        return float(outcome.category_top1_correct)
    if metric == "grade_accuracy":
        return float(bool(outcome.grade_correct))
    error = outcome.grade_abs_error
    return 0.0 if error is None else max(0.0, 1.0 - error / span)


class Minibatches:
    """Epoch-shuffled minibatches of the training split (seeded: the same command, the same batches)."""

    def __init__(self, examples: list[Example], size: int, rng: random.Random) -> None:
        self.examples, self.size, self.rng = examples, size, rng
        self.queue: list[Example] = []

    def next(self) -> list[Example]:
        if len(self.queue) < self.size:
            shuffled = list(self.examples)
            self.rng.shuffle(shuffled)
            queued = {e.id for e in self.queue}
            self.queue += [e for e in shuffled if e.id not in queued]
        batch, self.queue = self.queue[: self.size], self.queue[self.size :]
        return sorted(batch, key=lambda e: e.id)


def select_parent(pool: list[Node], rng: random.Random) -> Node:
    """GEPA's Pareto selection: a template that is best on some example, chosen with probability in
    proportion to how many examples it is best on — so a prompt that wins a kind of tray the leader
    loses keeps being improved, instead of everything descending from one average winner."""
    instances = {key for node in pool for key in node.scores}
    wins: dict[str, int] = {}
    for key in instances:
        top = max(node.scores.get(key, 0.0) for node in pool)
        for node in pool:
            if node.scores.get(key, 0.0) == top:
                wins[node.id] = wins.get(node.id, 0) + 1
    front = [node for node in pool if wins.get(node.id)]
    if not front:
        return pool[0]
    return rng.choices(front, weights=[wins[node.id] for node in front], k=1)[0]


def worth_writing(pool: list[Node], start: Node, limit: int) -> list[Node]:
    """Proposals that beat the start prompt, best first, each better on some example than every one
    chosen before it (a rewording of the winner is noise to review); at most ``limit``."""
    ranked = sorted((n for n in pool if n is not start and n.score > start.score), key=lambda n: -n.score)
    chosen: list[Node] = []
    for node in ranked:
        if not any(all(v <= kept.scores.get(k, 0.0) for k, v in node.scores.items()) for kept in chosen):
            chosen.append(node)
    return chosen[:limit]


__all__ = ["Minibatches", "Node", "Status", "per_example_score", "select_parent", "worth_writing"]
