"""The one grading path: render → call → parse. The evaluator measures it; the Lambda runs it.

An accuracy figure in MLflow is only worth something if production runs exactly what was measured,
so both call these functions. Retries, caching and timeouts wrap ``call`` from outside: they change
*whether* an answer arrives, never *how* it is asked for or read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from promptgrade.answers import ParseFailure, Prediction, parse_answer
from promptgrade.prompts import PromptVersion
from promptgrade.providers.base import Completion, CompletionRequest, GenerationSettings, ImageInput, Provider
from promptgrade.references import RenderedPrompt
from promptgrade.task import Task

Call = Callable[[CompletionRequest], Awaitable[Completion]]


@dataclass(frozen=True, slots=True)
class GradingResult:
    completion: Completion
    prediction: Prediction | None = None
    failure: ParseFailure | None = None

    @property
    def status(self) -> Literal["ok", "parse_failure", "error"]:
        if self.prediction is not None:
            return "ok"
        return "error" if self.completion.error is not None else "parse_failure"

    @property
    def error_kind(self) -> str | None:
        """The API's reason when there is one (e.g. ``truncated``), else the parser's."""
        if self.prediction is not None:
            return None
        if self.completion.error is not None:
            return self.completion.error.kind.value
        return self.failure.reason if self.failure else None

    @property
    def error_message(self) -> str | None:
        if self.prediction is not None:
            return None
        parts = [self.completion.error.message if self.completion.error else None]
        parts.append(self.failure.message if self.failure else None)
        return "; ".join(p for p in parts if p) or None


def effective_settings(
    prompt: PromptVersion, settings: GenerationSettings, *, explicit: set[str]
) -> GenerationSettings:
    """The template's structured-output preference applies unless the candidate set it explicitly."""
    if "structured_output" in explicit or prompt.structured_output is None:
        return settings
    return settings.model_copy(update={"structured_output": prompt.structured_output})


def build_request(
    rendered_prompt: RenderedPrompt | str, task: Task, settings: GenerationSettings, image: ImageInput
) -> CompletionRequest:
    """The request for one tray: a plain prompt is the tray then the text; a prompt that places images
    (reference trays, ``{{ image }}``) is its whole sequence, the tray in its slot."""
    if isinstance(rendered_prompt, str):
        text, parts = rendered_prompt, ()
    else:
        text, parts = rendered_prompt.text, rendered_prompt.request_parts(image)
    return CompletionRequest(
        prompt=text,
        image=image,
        settings=settings,
        response_schema=task.response_schema() if settings.structured_output else None,
        parts=parts,
    )


def interpret(completion: Completion, task: Task) -> GradingResult:
    """A completion with an error has no prediction; a truncated answer is still tried, then failed."""
    if completion.error is not None and completion.text is None:
        return GradingResult(completion)
    parsed = parse_answer(completion.text, task)
    if isinstance(parsed, Prediction):
        return GradingResult(completion, prediction=parsed)
    return GradingResult(completion, failure=parsed)


async def grade_image(
    rendered_prompt: RenderedPrompt | str,
    task: Task,
    settings: GenerationSettings,
    image: ImageInput,
    provider: Provider,
    call: Call | None = None,
) -> GradingResult:
    request = build_request(rendered_prompt, task, settings, image)
    completion = await (call or provider.complete)(request)
    return interpret(completion, task)
