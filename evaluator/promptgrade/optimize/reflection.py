"""What the reflection model is shown: the parent template, its rendered text, the training trays it
got wrong (answers, truths, error kinds) and those trays' images on one contact sheet.

The reflection prompt is itself a versioned template (``prompts/_optimizer/reflect/v<N>.jinja``), so
its text is on record in every optimisation run and can be improved like any other prompt. The
``_optimizer`` folder's leading underscore keeps it out of ``prompts list``/``check`` and sweeps,
whose prompt names cannot start with one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptgrade.config import ModelSpec, Plan, price_for
from promptgrade.errors import ConfigError
from promptgrade.optimize.proposals import IMAGE_VARIABLES
from promptgrade.prompts import PromptLibrary, PromptVersion
from promptgrade.providers.base import GenerationSettings, ImageInput
from promptgrade.scoring import Outcome
from promptgrade.sheets import contact_sheet, sheet_size
from promptgrade.task import Task

OPTIMIZER_DIR = "_optimizer"
REFLECT_NAME = "reflect"
MAX_ANSWER_CHARS = 400  # a failure's raw answer as shown to the reflection model
REFLECTION_SETTINGS = GenerationSettings(temperature=1.0, max_output_tokens=4096)


def reflection_library(prompts_dir: Path) -> PromptLibrary:
    """The experiment's ``prompts/_optimizer``, else the one promptgrade ships: inside the wheel
    (``promptgrade/_optimizer``, see pyproject's force-include) or in the checkout's ``prompts/``."""
    own = prompts_dir / OPTIMIZER_DIR
    if (own / REFLECT_NAME).is_dir():
        return PromptLibrary(own)
    package = Path(__file__).resolve().parents[1]
    for shipped in (package / OPTIMIZER_DIR, package.parents[1] / "prompts" / OPTIMIZER_DIR):
        if (shipped / REFLECT_NAME).is_dir():
            return PromptLibrary(shipped)
    raise ConfigError(
        f"no reflection prompt: expected {own / REFLECT_NAME}/v<N>.jinja (promptgrade ships "
        "prompts/_optimizer/reflect/v1.jinja)"
    )


def reflection_prompt(prompts_dir: Path) -> PromptVersion:
    library = reflection_library(prompts_dir)
    return library.get(REFLECT_NAME, library.versions(REFLECT_NAME)[-1])


def reflection_spec(plan: Plan, model: str | None) -> ModelSpec:
    """``--reflection-model`` (an experiment model keeps its provider and endpoint; any other id is a
    Gemini model at the experiment's endpoint), else the experiment's strongest Gemini model — the one
    with the highest output price in the table, which tracks model size closely enough to choose by."""
    specs = plan.experiment.models
    if model is not None:
        found = next((s for s in specs if s.model == model), None)
        chosen = found or ModelSpec(provider="gemini", model=model)
    else:
        gemini = [s for s in specs if s.provider == "gemini"]
        if not gemini:
            raise ConfigError(
                "the experiment has no Gemini model to reflect with: name one with --reflection-model",
                path=plan.experiment.path,
            )

        def strength(spec: ModelSpec) -> float:
            price = price_for(spec.model, plan.prices)
            return -1.0 if price is None else price.output

        chosen = max(gemini, key=strength)
    return chosen.model_copy(update={"settings": REFLECTION_SETTINGS, "grid": {}})


@dataclass(frozen=True)
class Shown:
    """One training tray as the reflection model sees it."""

    outcome: Outcome
    image: ImageInput
    wrong_on: tuple[str, ...]


def wrong_on(outcome: Outcome) -> tuple[str, ...]:
    if outcome.status != "ok":
        return (f"answer ({outcome.status.replace('_', ' ')})",)
    wrong = []
    if not outcome.category_correct:
        wrong.append("category")
    elif not outcome.category_top1_correct:
        wrong.append("first category")
    if outcome.grade_correct is False:
        wrong.append("grade")
    return tuple(wrong) or ("the optimised metric",)


def render_reflection(
    template: PromptVersion,
    task: Task,
    *,
    parent: PromptVersion,
    parent_ref: str,
    shown: Sequence[Shown],
    n_minibatch: int,
    answer_format: str | None,
    metric: str,
    proposal_id: str,
) -> str:
    failures: list[dict[str, Any]] = []
    for number, item in enumerate(shown, start=1):
        o = item.outcome
        answer = " ".join((o.answer or "").split())
        if len(answer) > MAX_ANSWER_CHARS:
            answer = answer[: MAX_ANSWER_CHARS - 1] + "…"
        failures.append(
            {
                "number": number,
                "true_categories": list(o.true_categories),
                "true_grade": o.true_grade,
                "answer": answer,
                "status": o.status,
                "predicted_categories": list(o.predicted_categories),
                "predicted_grade": o.predicted_grade,
                "error_kind": o.error_kind,
                "error_message": o.error_message,
                "wrong_on": list(item.wrong_on),
            }
        )
    rendered = parent.render_prompt(task)
    # a parent that shows references: its text with each image named where it goes, and the names
    # that place them among what a proposal may use
    shown_text = rendered.display if parent.references else rendered.text
    variables = set(task.template_variables()) | (IMAGE_VARIABLES if parent.references else set())
    return template.render(
        task,
        parent_template=parent.body.strip(),
        parent_ref=parent_ref,
        rendered_prompt=shown_text.strip(),
        failures=failures,
        n_shown=n_minibatch,
        n_failed=len(failures),
        has_sheet=bool(shown),
        answer_format=answer_format,
        metric=metric,
        variables=sorted(variables),
        proposal_id=proposal_id,
    )


__all__ = [
    "REFLECTION_SETTINGS",
    "Shown",
    "contact_sheet",
    "reflection_prompt",
    "reflection_spec",
    "render_reflection",
    "sheet_size",
    "wrong_on",
]
