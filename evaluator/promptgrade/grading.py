"""The one grading path: render → call → parse. The evaluator measures it; the Lambda runs it.

An accuracy figure in MLflow is only worth something if production runs exactly what was measured,
so both call these functions. Retries, caching and timeouts wrap ``call`` from outside: they change
*whether* an answer arrives, never *how* it is asked for or read.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from promptgrade.answers import ParseFailure, Prediction, parse_answer
from promptgrade.prompts import PromptVersion
from promptgrade.providers.base import (
    Completion,
    CompletionRequest,
    GenerationSettings,
    ImageInput,
    Part,
    Provider,
)
from promptgrade.references import RenderedPrompt
from promptgrade.task import Task

Call = Callable[[CompletionRequest], Awaitable[Completion]]
# answers per example: beyond this a vote buys little and the bill grows linearly (the experiment file
# and the Lambda bundle are both held to it, so a bundle can never ask for more than a sweep measured)
MAX_SAMPLES = 20


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
    parts: tuple[Part, ...] = ()
    if isinstance(rendered_prompt, str):
        text = rendered_prompt
    else:
        text, parts = rendered_prompt.text, rendered_prompt.request_parts(image)
    return CompletionRequest(
        prompt=text,
        image=image,
        settings=settings,
        response_schema=task.response_schema() if settings.structured_output else None,
        parts=parts,
    )


@dataclass(frozen=True, slots=True)
class Voted:
    """k samples of one tray reduced to the answer scoring sees, and how far the samples agreed."""

    result: GradingResult
    samples: tuple[GradingResult, ...]
    agreement: (
        float  # share of the answering samples whose first-named category is the vote (0: none answered)
    )
    grade_spread: float | None  # the answering samples' grades, max − min (None: none answered)

    def abstained(self, below: float | None) -> bool:
        """Whether a person should decide: one rule for the sweep's selective metrics and the Lambda's
        ``needs_review``, so production flags exactly the trays the measured coverage left out."""
        return below is not None and self.agreement < below


def vote(samples: Sequence[GradingResult]) -> Voted:
    """The majority of the samples' first-named categories — a tie goes to the earliest sample — with
    the median of their grades; a sample that failed or did not parse does not vote.

    The voted answer is the earliest sample naming the winning category first, with the median grade,
    so one sample is exactly that sample's answer (k = 1 scores as a single call always has). Tokens are
    the samples' sum (they were all paid for) and the latency their slowest (they run side by side).
    """
    if not samples:
        raise ValueError("vote() needs at least one sample")
    voting = [(i, r.prediction) for i, r in enumerate(samples) if r.prediction is not None]
    if len(samples) == 1:
        only = samples[0]
        return Voted(only, tuple(samples), 1.0 if voting else 0.0, 0.0 if voting else None)
    if not voting:
        return Voted(
            GradingResult(_merged(samples, samples[0].completion), failure=samples[0].failure),
            tuple(samples),
            0.0,
            None,
        )
    counts = Counter(prediction.top1 for _, prediction in voting)
    most = max(counts.values())
    index, winner = next((i, p) for i, p in voting if counts[p.top1] == most)  # the earliest of a tie
    grades = sorted(prediction.grade for _, prediction in voting)
    voted = winner.model_copy(update={"grade": statistics.median(grades)})
    completion = _merged(samples, samples[index].completion)
    return Voted(
        GradingResult(completion, prediction=voted),
        tuple(samples),
        most / len(voting),
        grades[-1] - grades[0],
    )


def _merged(samples: Sequence[GradingResult], chosen: Completion) -> Completion:
    latencies = [r.completion.latency_ms for r in samples]
    return dataclasses.replace(
        chosen,
        input_tokens=sum(r.completion.input_tokens for r in samples),
        output_tokens=sum(r.completion.output_tokens for r in samples),
        latency_ms=max(latencies) if all(latencies) else 0.0,
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
