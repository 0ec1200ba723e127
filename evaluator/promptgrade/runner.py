"""Runs a sweep: every candidate on every example, with bounded concurrency and retries.

Scheduling lives here once, not in each provider: a fixed pool of workers pulls (candidate, example)
pairs from one iterator, so memory does not grow with the dataset and the first candidate finishes
(and is logged) first. Transient API errors are retried with exponential backoff and jitter, waiting
at least as long as the server's RetryInfo asks — which the SDK itself ignores.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_result,
    stop_after_attempt,
    wait_exponential_jitter,
)

from promptgrade.candidates import Candidate
from promptgrade.config import Plan, price_for
from promptgrade.data.examples import Example, LoadedDataset
from promptgrade.grading import build_request, interpret
from promptgrade.providers.base import Completion, CompletionRequest, Provider
from promptgrade.scoring import Estimate, Outcome, score, skipped, summarise


@dataclass
class CandidateResult:
    candidate: Candidate
    outcomes: list[Outcome] = field(default_factory=list)
    metrics: dict[str, Estimate | float] = field(default_factory=dict)
    run_id: str | None = None
    skipped_reason: str | None = None


class SweepListener(Protocol):
    """What the CLI (progress bars) and the tracker (MLflow) hear about a running sweep."""

    def candidate_started(self, candidate: Candidate, total: int) -> None: ...
    def example_done(self, candidate: Candidate, outcome: Outcome) -> None: ...
    def candidate_done(self, result: CandidateResult) -> None: ...


class _Retrying:
    """Backoff policy: exponential with jitter, floored by the server's own retry delay."""

    def __init__(self, max_retries: int, *, initial_s: float = 1.0, max_s: float = 60.0) -> None:
        self.max_retries = max_retries
        self._jitter = wait_exponential_jitter(initial=initial_s, max=max_s)

    def _wait(self, state: RetryCallState) -> float:
        backoff = self._jitter(state)
        result = state.outcome.result() if state.outcome and not state.outcome.failed else None
        if isinstance(result, Completion) and result.error and result.error.retry_after_s is not None:
            return max(result.error.retry_after_s, min(backoff, result.error.retry_after_s * 2))
        return backoff

    async def call(self, provider: Provider, request: CompletionRequest) -> Completion:
        retrying = AsyncRetrying(
            retry=retry_if_result(lambda c: c.error is not None and c.error.transient),
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
            reraise=True,
        )
        return await retrying(provider.complete, request)


def _pairs(candidates: list[Candidate], examples: list[Example]) -> Iterator[tuple[Candidate, Example]]:
    for candidate in candidates:
        for example in examples:
            yield candidate, example


async def run_sweep(
    plan: Plan,
    dataset: LoadedDataset,
    candidates: list[Candidate],
    providers: dict[tuple[str, str], Provider],
    listeners: list[SweepListener] | None = None,
    *,
    backoff_initial_s: float = 1.0,
    clock: Callable[[], float] = time.perf_counter,
) -> list[CandidateResult]:
    """Run ``candidates`` (those whose provider is in ``providers``) over ``dataset``'s examples."""
    listeners = listeners or []
    experiment = plan.experiment
    retrying = _Retrying(experiment.max_retries, initial_s=backoff_initial_s)
    results = {c.key: CandidateResult(c) for c in candidates}
    runnable = [c for c in candidates if (c.provider, c.model) in providers]
    total = len(dataset.examples) + len(dataset.skipped)
    remaining = {c.key: len(dataset.examples) for c in runnable}

    def finish(candidate: Candidate) -> None:
        result = results[candidate.key]
        order = {e.id: i for i, e in enumerate(dataset.examples)}
        result.outcomes.sort(key=lambda o: order.get(o.example_id, len(order)))
        for skip in dataset.skipped:
            result.outcomes.append(skipped(skip.id, (), None, skip.reason))
        result.metrics = summarise(result.outcomes, price_for(candidate.model, plan.prices))
        for listener in listeners:
            listener.candidate_done(result)

    for candidate in runnable:
        for listener in listeners:
            listener.candidate_started(candidate, total)
        if not dataset.examples:
            finish(candidate)

    pairs = _pairs(runnable, dataset.examples)

    async def worker() -> None:
        for candidate, example in pairs:
            provider = providers[(candidate.provider, candidate.model)]
            request = build_request(candidate.rendered_prompt, plan.task, candidate.settings, example.image)
            started = clock()
            completion = await retrying.call(provider, request)
            if not completion.latency_ms:
                completion = _with_latency(completion, (clock() - started) * 1000)
            outcome = score(
                example.id,
                example.labels.categories,
                example.labels.grade,
                interpret(completion, plan.task),
                plan.task,
            )
            results[candidate.key].outcomes.append(outcome)
            for listener in listeners:
                listener.example_done(candidate, outcome)
            remaining[candidate.key] -= 1
            if remaining[candidate.key] == 0:
                finish(candidate)

    await asyncio.gather(*(worker() for _ in range(experiment.concurrency)))
    return [results[c.key] for c in candidates]


def _with_latency(completion: Completion, latency_ms: float) -> Completion:
    from dataclasses import replace

    return replace(completion, latency_ms=latency_ms)
