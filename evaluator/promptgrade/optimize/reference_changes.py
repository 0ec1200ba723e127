"""The search's second lever: which training trays a prompt shows as references, besides its words.

A reference change keeps its parent's template and moves its reference set by one step. Each parent
takes the steps in a fixed order — a tray of the dish category it missed most on its minibatch, where
no reference shows that category (the one step led by its failures: a model that never saw a dish
among the anchors is shown one); one more reference (a tray at the middle of the widest stretch of the
grade scale its references leave uncovered: the anchor it most lacks); another tray at one reference's
grade point; every reference re-drawn at its grade point; one fewer — so the most informative step is
tried first, and a step that does not apply (no category missed, no room) gives way to the next. A
seeded generator picks among equally fitting trays, so the same ``--seed`` makes the same proposals (and
re-running buys nothing).

Trays come from the training split only: the split the reflection model is shown failures from,
never the split proposals are scored on (``validation``) nor the evaluation split. A start prompt's own
references are held to the same rule before anything is called.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from promptgrade.config import ModelSpec
from promptgrade.data.examples import LoadedDataset
from promptgrade.errors import ConfigError, PromptError
from promptgrade.prompts import PromptVersion
from promptgrade.providers.records import find
from promptgrade.reference_sets import check_no_leak, from_example, resolve
from promptgrade.references import Reference
from promptgrade.scoring import Outcome
from promptgrade.task import Task

STEPS = ("category", "add", "swap", "redraw", "drop")
MORE = 3  # a search may show at most this many references more than its start: keeps the bound true


@dataclass(frozen=True)
class ReferenceChange:
    """A proposed reference set and what changed, in words, for the lineage."""

    references: tuple[Reference, ...]
    change: str


def reference_ids(references: Sequence[Reference]) -> tuple[str, ...]:
    return tuple(r.id for r in references)


def resolve_start(
    start: PromptVersion,
    task: Task,
    *,
    train_split: str,
    image_max_side: int,
    scored_on: LoadedDataset,
    load_split: Callable[[str], LoadedDataset],
    evaluation: Callable[[], LoadedDataset | None],
) -> PromptVersion:
    """The start prompt with its references resolved as a sweep would — a rule only over the training
    split — and checked against the split proposals are scored on, and (for references given as files)
    the evaluation split: no call has been made yet, so a leak costs nothing to refuse."""
    spec = start.reference_spec
    if not start.references and isinstance(spec, dict) and spec.get("split") != train_split:
        raise PromptError(
            f"{start.ref} draws its references from split {spec.get('split')!r}; optimize draws references "
            f"only from the training split {train_split!r} (never from the split proposals are scored on "
            "nor from the evaluation split)",
            path=start.where,
        )
    resolved = resolve(start, task, image_max_side=image_max_side, load_split=load_split)
    if not resolved.references:
        return resolved
    check_no_leak(resolved, list(resolved.references), scored_on)
    if start.references or isinstance(spec, list):  # files or frozen: they may be any tray
        evaluated = evaluation()
        if evaluated is not None:
            check_no_leak(resolved, list(resolved.references), evaluated)
    return resolved


def missed_categories(outcomes: Iterable[Outcome]) -> tuple[str, ...]:
    """The true dish categories a prompt did not name on its answered trays, most often missed first
    (ties by name). An answer that failed to parse names nothing and says nothing of which dish the
    model could not see, so it is left out."""
    counts = Counter(
        category
        for outcome in outcomes
        if outcome.status == "ok"
        for category in outcome.true_categories
        if category not in outcome.predicted_categories
    )
    return tuple(sorted(counts, key=lambda category: (-counts[category], category)))


def max_references(start: int, specs: Sequence[ModelSpec]) -> int:
    """How many references a proposal may show: a few more than the start, within what each task
    model's API takes in one request (the tray is one image too)."""
    limits = [r.max_images - 1 for s in specs if (r := find(s.provider)) is not None and r.max_images]
    return min([start + MORE, *limits])


def places_references(prompt: PromptVersion, task: Task, sample: Reference) -> bool:
    """Whether the template shows the references it is given (``{{ ref.image }}`` in a loop over
    ``references``): only such a template can take a different set."""
    if prompt.references:
        return True
    try:
        rendered = prompt.with_references((sample,)).render_prompt(task)
    except PromptError:
        return False
    return 0 in rendered.parts


class ReferenceMoves:
    """Reference changes drawn from one split's labelled trays, remembering the steps each parent took."""

    def __init__(self, pool: LoadedDataset, task: Task, *, max_references: int, seed: int) -> None:
        self.split = pool.split
        self.task = task
        self.max_references = max_references
        self.rng = random.Random(seed)
        examples = sorted((e for e in pool.examples if e.labels.categories), key=lambda e: e.id)
        self.trays = [from_example(e, pool.split, pool.image_refs.get(e.id, "")) for e in examples]
        self.steps_taken: dict[str, int] = {}  # parent id → reference changes proposed from it

    def check(self, start: PromptVersion) -> None:
        """A start that cannot take reference changes is one line, before any call."""
        if not self.trays:
            raise ConfigError(f"--references: split {self.split!r} has no labelled trays to show")
        if not places_references(start, self.task, self.trays[0]):
            raise ConfigError(
                f"--references: {start.ref} places no reference images (write {{{{ ref.image }}}} in a "
                "{% for ref in references %} loop), so it cannot take reference changes; start from a "
                "version that does"
            )

    def propose(
        self,
        parent: str,
        current: tuple[Reference, ...],
        tried: set[tuple[str, ...]],
        missed: Sequence[str] = (),
    ) -> ReferenceChange | None:
        """The parent's next step that yields a set not tried with its template, or None. ``missed``: the
        categories the parent missed on its minibatch, most often first (``missed_categories``)."""
        taken = self.steps_taken.get(parent, 0)
        for offset in range(len(STEPS)):
            step = STEPS[(taken + offset) % len(STEPS)]
            change = (
                self._category(current, missed) if step == "category" else getattr(self, f"_{step}")(current)
            )
            if change is not None and reference_ids(change.references) not in tried:
                self.steps_taken[parent] = taken + offset + 1
                return change
        self.steps_taken[parent] = taken + len(STEPS)
        return None

    # -- the steps -------------------------------------------------------------------------------
    def _category(self, current: tuple[Reference, ...], missed: Sequence[str]) -> ReferenceChange | None:
        """A tray of the most-missed category no reference shows: one more reference where there is
        room, else in place of the reference nearest its grade (the grade points shown move least;
        among ungraded references, a seeded one, in its place)."""
        shown = set(reference_ids(current))
        showing = {category for r in current for category in r.categories}
        for category in missed:
            if category in showing:
                continue
            trays = [t for t in self.trays if category in t.categories and t.id not in shown]
            if not trays:
                continue
            tray = self.rng.choice(trays)
            why = f"a tray of the missed category {category}: {self._describe(tray)}"
            if len(current) < self.max_references:
                return ReferenceChange(self._placed(current, tray), f"one more reference, {why}")
            if not current:
                return None
            index = min(
                self.rng.sample(range(len(current)), len(current)),
                key=lambda i: abs((current[i].grade or 0.0) - (tray.grade or 0.0)),
            )
            if tray.grade is None:  # ungraded: where the one it replaces stood
                placed = (*current[:index], tray, *current[index + 1 :])
            else:
                placed = self._placed((*current[:index], *current[index + 1 :]), tray)
            return ReferenceChange(placed, f"reference {current[index].id} → {why}")
        return None

    def _placed(self, current: tuple[Reference, ...], added: Reference) -> tuple[Reference, ...]:
        """``added`` among graded references in grade order (ungraded ones: at the end)."""
        if added.grade is None or any(r.grade is None for r in current):
            return (*current, added)
        at = next((i for i, r in enumerate(current) if (r.grade or 0.0) > added.grade), len(current))
        return (*current[:at], added, *current[at:])

    def _add(self, current: tuple[Reference, ...]) -> ReferenceChange | None:
        if len(current) >= self.max_references:
            return None
        shown = set(reference_ids(current))
        if any(r.grade is None for r in current):  # ungraded references: a category not yet shown
            named = {r.categories[0] for r in current if r.categories}
            fresh = [t for t in self.trays if t.categories[0] not in named and t.id not in shown]
            if not fresh:
                return None
            first = min(t.categories[0] for t in fresh)
            added = self.rng.choice([t for t in fresh if t.categories[0] == first])
            return ReferenceChange((*current, added), f"one more reference: {self._describe(added)}")
        scale = self.task.grade
        edges = [scale.minimum, *sorted(r.grade or 0.0 for r in current), scale.maximum]
        gaps = sorted(itertools.pairwise(edges), key=lambda gap: -(gap[1] - gap[0]))
        for low, high in gaps:
            if high <= low:
                break
            added = self._nearest((low + high) / 2, shown)
            if added is not None:
                return ReferenceChange(
                    self._placed(current, added), f"one more reference: {self._describe(added)}"
                )
        return None

    def _swap(self, current: tuple[Reference, ...]) -> ReferenceChange | None:
        shown = set(reference_ids(current))
        for index in self.rng.sample(range(len(current)), len(current)):
            old = current[index]
            new = self._like(old, shown)
            if new is not None:
                references = (*current[:index], new, *current[index + 1 :])
                return ReferenceChange(references, f"reference {old.id} → {self._describe(new)}")
        return None

    def _redraw(self, current: tuple[Reference, ...]) -> ReferenceChange | None:
        if len(current) < 2:
            return None  # one reference re-drawn is a swap
        taken = set(reference_ids(current))
        references = []
        for old in current:
            new = self._like(old, taken)
            if new is not None:
                taken.add(new.id)
            references.append(new or old)
        if reference_ids(references) == reference_ids(current):
            return None
        ids = ", ".join(reference_ids(references))
        return ReferenceChange(tuple(references), f"references re-drawn at their grade points: {ids}")

    def _drop(self, current: tuple[Reference, ...]) -> ReferenceChange | None:
        if len(current) < 2:
            return None
        index = self.rng.randrange(len(current))
        references = (*current[:index], *current[index + 1 :])
        return ReferenceChange(references, f"one fewer reference: without {self._describe(current[index])}")

    # -- choosing trays --------------------------------------------------------------------------
    def _nearest(self, target: float, exclude: set[str]) -> Reference | None:
        """A tray whose grade is nearest ``target`` (within the task's tolerance), seeded among ties."""
        graded = [t for t in self.trays if t.grade is not None and t.id not in exclude]
        if not graded:
            return None
        best = min(abs((t.grade or 0.0) - target) for t in graded)
        if best > self.task.grade.tolerance:
            return None
        return self.rng.choice([t for t in graded if abs((t.grade or 0.0) - target) == best])

    def _like(self, reference: Reference, exclude: set[str]) -> Reference | None:
        """Another tray standing for the same point: its grade, or (ungraded) its first category."""
        if reference.grade is not None:
            return self._nearest(reference.grade, exclude)
        same = [
            t
            for t in self.trays
            if t.id not in exclude and t.categories[:1] == reference.categories[:1] and reference.categories
        ]
        return self.rng.choice(same) if same else None

    def _describe(self, reference: Reference) -> str:
        grade = "" if reference.grade is None else f", {self.task.grade.name} {reference.grade:g}"
        return f"{reference.id} ({'; '.join(reference.categories)}{grade})"


__all__ = [
    "MORE",
    "STEPS",
    "ReferenceChange",
    "ReferenceMoves",
    "max_references",
    "missed_categories",
    "places_references",
    "reference_ids",
    "resolve_start",
]
