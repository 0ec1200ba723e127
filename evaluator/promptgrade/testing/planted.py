"""A planted improvement for testing ``promptgrade optimize`` against the local Gemini server.

The task model answers every tray right only when the prompt contains a given instruction, and about
half of them without it; the reflection model (another model id, so another request path) answers
with scripted proposals in order. A search that works finds the instruction, and a test can assert
exactly which proposal won, what was rejected and why, and which images were sent.

``PlantedReferences`` plants a reference set instead: the grade comes out right only when the trays
shown before the one graded carry exactly the planted grades, in order.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence

from promptgrade.testing.gemini_wire import RequestInfo

Truth = dict[str, tuple[tuple[str, ...], float]]  # image sha256 → (categories, grade)


class PlantedTaskModel:
    """Answers as a task model would, right for every image only if ``instruction`` is in the prompt."""

    def __init__(
        self, truth: Truth, instruction: str, *, wrong_share: float = 0.5, wrong_category: str
    ) -> None:
        self.truth = truth
        self.instruction = instruction
        self.wrong_share = wrong_share
        self.wrong_category = wrong_category

    def hard(self, sha256: str) -> bool:
        """The trays a prompt without the instruction gets wrong (a fixed share, by image hash)."""
        return int(hashlib.sha256(sha256.encode()).hexdigest()[:8], 16) % 1000 < self.wrong_share * 1000

    def __call__(self, request: RequestInfo) -> str:
        sha = request.image_sha256 or ""
        if sha not in self.truth:
            return json.dumps({"categories": [self.wrong_category], "food_remaining_pct": 0})
        categories, grade = self.truth[sha]
        if self.instruction not in request.prompt and self.hard(sha):
            categories, grade = (self.wrong_category,), 100.0 - grade
        if request.has_response_schema or '"categories"' in request.prompt:
            return json.dumps({"categories": list(categories), "food_remaining_pct": grade})
        return f"Category: {', '.join(categories)}\nFood %: {grade:g}%"


class PlantedReferences:
    """Answers as a task model would: categories right, the grade right only when the references shown
    (every image before the tray, known by hash in ``truth``) are graded exactly ``wanted``, in order.

    With ``dishes_from_references``, the model also knows only the dishes its references show: it names
    the tray's dishes that some reference shows, and otherwise the first dish the references show."""

    def __init__(
        self, truth: Truth, wanted: Sequence[float], *, dishes_from_references: bool = False
    ) -> None:
        self.truth = truth
        self.wanted = [float(g) for g in wanted]
        self.dishes_from_references = dishes_from_references

    def shown(self, request: RequestInfo) -> list[float | None]:
        return [self.truth[s][1] if s in self.truth else None for s in request.image_sha256s[:-1]]

    def __call__(self, request: RequestInfo) -> str:
        categories, grade = self.truth.get(request.image_sha256 or "", (("snack",), 0.0))
        if self.shown(request) != self.wanted:
            grade = 100.0 if grade < 50 else 0.0
        if self.dishes_from_references:
            known = sorted(
                {c for s in request.image_sha256s[:-1] if s in self.truth for c in self.truth[s][0]}
            )
            categories = tuple(c for c in categories if c in known) or tuple(known[:1]) or ("snack",)
        return json.dumps({"categories": list(categories), "food_remaining_pct": grade})


class ScriptedProposals:
    """A reflection model's answers, in order (the last one repeats); records the prompts it was sent."""

    def __init__(self, answers: Sequence[str]) -> None:
        self.answers = list(answers)
        self.prompts: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, request: RequestInfo) -> str:
        with self._lock:
            index = min(len(self.prompts), len(self.answers) - 1)
            self.prompts.append(request.prompt)
            return self.answers[index]


def fenced(template: str) -> str:
    """A reflection answer in the documented contract: a little prose, then the template fenced."""
    return (
        f"The failures come from misread trays. Here is the revised template:\n\n```jinja\n{template}\n```\n"
    )


__all__ = ["PlantedReferences", "PlantedTaskModel", "ScriptedProposals", "Truth", "fenced"]
