"""Runs a sweep: every candidate on every example, within limits, without losing or re-buying answers.

Scheduling lives here once, not in each provider. A fixed pool of workers pulls (candidate, example)
pairs from one iterator, so memory does not grow with the dataset and the first candidate finishes
(and is logged) first. Around each call, in order: the answer cache (a hit costs nothing), the budget
(never start a call that could overspend), the model's limits (concurrency, requests and tokens per
minute), and retries of transient errors — exponential backoff with jitter, never shorter than the
server's RetryInfo delay, which the SDK itself ignores. Conditions that retrying cannot fix (a daily
quota, a model that keeps failing, the budget) stop the sweep cleanly: what finished is kept, and
running the same command again resumes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from aiolimiter import AsyncLimiter
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_result,
    stop_after_attempt,
    wait_exponential_jitter,
)

from promptgrade.cache import AnswerCache, cache_key
from promptgrade.candidates import BaselineCandidate, Candidate
from promptgrade.config import Limits, Plan, price_for
from promptgrade.data.examples import Example, LoadedDataset
from promptgrade.errors import SweepAborted
from promptgrade.estimate import reference_sizes, request_input_tokens, size_of
from promptgrade.grading import build_request, interpret, vote
from promptgrade.providers.base import Completion, CompletionRequest, ErrorKind, Provider
from promptgrade.scoring import Estimate, Outcome, score_vote, skipped, summarise
from promptgrade.tokens import EXPECTED_OUTPUT_TOKENS


@dataclass
class CandidateResult:
    candidate: Candidate | BaselineCandidate
    outcomes: list[Outcome] = field(default_factory=list)
    metrics: dict[str, Estimate | float] = field(default_factory=dict)
    run_id: str | None = None
    skipped_reason: str | None = None
    partial: bool = False
    calls: int = 0  # API requests made for this candidate in this run (cache hits excluded)
    cache_hits: int = 0


class SweepListener(Protocol):
    """What the CLI (progress bars) and the tracker (MLflow) hear about a running sweep."""

    def candidate_started(self, candidate: Candidate, total: int) -> None: ...
    def example_done(self, candidate: Candidate, outcome: Outcome) -> None: ...
    def candidate_done(self, result: CandidateResult) -> None: ...
    def training(self, candidate: Any, stage: str, fraction: float) -> None: ...


class SweepStopped(SweepAborted):
    """Stopped on purpose (quota, budget, failing model): finished work is logged, the rest resumes."""

    def __init__(self, reason: str, kind: str) -> None:
        self.kind = kind
        super().__init__(reason)


class TrackingStopped(SweepStopped):
    """The MLflow store cannot be written (a tracking server lost mid-sweep): answers bought so far are
    in the cache, and the same command resumes once the store is back."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}; run the same command again once the store is back to resume", "tracking")


class ModelStopped(SweepStopped):
    """One model keeps failing (a mistyped model id, a server that refuses connections): its
    candidates stop, the other models' go on, and the sweep ends stopped, so the same command resumes."""

    def __init__(self, reason: str, model: tuple[str, str]) -> None:
        self.model = model
        super().__init__(reason, "failing")


@dataclass
class CacheMode:
    cache: AnswerCache | None = None
    read: bool = True  # --refresh: call again, but store the new answers

    @classmethod
    def off(cls) -> CacheMode:
        return cls(None, read=False)


class Budget:
    """Spending and call limits for one run of a sweep. Single-threaded (asyncio), so no locks needed."""

    def __init__(self, max_cost_usd: float | None, max_calls: int | None) -> None:
        self.max_cost_usd = max_cost_usd
        self.max_calls = max_calls
        self.spent_usd = 0.0
        self.reserved_usd = 0.0
        self.calls = 0

    def reserve(self, estimated_usd: float) -> None:
        if self.max_calls is not None and self.calls >= self.max_calls:
            raise SweepStopped(f"max_calls={self.max_calls} reached", "budget")
        if (
            self.max_cost_usd is not None
            and self.spent_usd + self.reserved_usd + estimated_usd > self.max_cost_usd
        ):
            raise SweepStopped(
                f"max_cost_usd=${self.max_cost_usd:g} reached (spent ${self.spent_usd:.4f}; the next call "
                f"would cost ~${estimated_usd:.4f})",
                "budget",
            )
        self.calls += 1
        self.reserved_usd += estimated_usd

    def settle(self, estimated_usd: float, actual_usd: float) -> None:
        self.reserved_usd -= estimated_usd
        self.spent_usd += actual_usd


class _Gate:
    """One model's limits and health: in-flight cap, request and token rates, consecutive failures."""

    def __init__(self, limits: Limits, concurrency: int) -> None:
        self.semaphore = asyncio.Semaphore(min(limits.concurrency or concurrency, concurrency))
        self.rpm = AsyncLimiter(limits.rpm, 60) if limits.rpm else None
        self.tpm = AsyncLimiter(limits.tpm, 60) if limits.tpm else None
        self.consecutive_failures = 0
        self.last_failure = ""

    async def enter(self, tokens: int) -> None:
        if self.rpm is not None:
            await self.rpm.acquire()
        if self.tpm is not None:
            await self.tpm.acquire(min(tokens, self.tpm.max_rate))


class Caller:
    """A candidate's call, with everything around it that turns a flaky paid API into a reliable one."""

    def __init__(
        self,
        plan: Plan,
        cache: CacheMode,
        budget: Budget,
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        experiment = plan.experiment
        self.plan = plan
        self.cache = cache
        self.budget = budget
        self.clock = clock
        self.max_retries = experiment.max_retries
        self.retry_answers = {ErrorKind(kind) for kind in experiment.retry_answers}
        self.max_consecutive_failures = experiment.max_consecutive_failures
        self._jitter = wait_exponential_jitter(initial=experiment.retry_initial_s, max=experiment.retry_max_s)
        limits = {(m.provider, m.model): m.limits for m in experiment.models}
        self.gates = {key: _Gate(value, experiment.concurrency) for key, value in limits.items()}
        self._sizes: dict[str, tuple[tuple[int, int], ...]] = {}

    def _retryable(self, completion: Completion) -> bool:
        error = completion.error
        return error is not None and (error.transient or error.kind in self.retry_answers)

    def _wait(self, state: RetryCallState) -> float:
        backoff = self._jitter(state)
        outcome = state.outcome
        result = outcome.result() if outcome is not None and not outcome.failed else None
        if isinstance(result, Completion) and result.error and result.error.retry_after_s is not None:
            delay = result.error.retry_after_s
            return max(delay, min(backoff, delay * 2))
        return backoff

    def input_tokens(self, candidate: Candidate, request: CompletionRequest) -> int:
        """The input tokens a call is expected to cost: for the token limiter, the budget and the
        estimated-vs-actual check after the sweep (the same rule as the dry run, every image counted)."""
        return request_input_tokens(
            self.plan,
            candidate.model,
            request.prompt,
            size_of(request.image),
            request.settings.media_resolution,
            self._reference_sizes(candidate),
        )

    def _reference_sizes(self, candidate: Candidate) -> tuple[tuple[int, int], ...]:
        sizes = self._sizes.get(candidate.key)
        if sizes is None:
            sizes = self._sizes[candidate.key] = reference_sizes(candidate)
        return sizes

    async def _attempt(
        self, provider: Provider, request: CompletionRequest, candidate: Candidate, tokens: int
    ) -> Completion:
        gate = self.gates[(candidate.provider, candidate.model)]
        price = price_for(candidate.model, self.plan.prices, batch=candidate.batch)
        # the worst case for output: a call may use every token it is allowed
        output = request.settings.max_output_tokens or EXPECTED_OUTPUT_TOKENS
        estimated = 0.0 if price is None else price.cost(tokens, output)
        self.budget.reserve(estimated)
        actual = 0.0
        try:
            async with gate.semaphore:
                await gate.enter(tokens)
                started = self.clock()
                completion = await provider.complete(request)
                if not completion.latency_ms:
                    completion = replace(completion, latency_ms=(self.clock() - started) * 1000)
            if price is not None:
                actual = price.cost(completion.input_tokens, completion.output_tokens)
            return completion
        finally:
            self.budget.settle(estimated, actual)

    async def complete(
        self,
        candidate: Candidate,
        provider: Provider,
        request: CompletionRequest,
        tokens: int,
        sample: int = 0,
    ) -> tuple[Completion, int]:
        """The answer (sample ``sample`` of the candidate's k) and how many API requests it took (0 when
        it came from the cache)."""
        cache = self.cache.cache
        key = (
            cache_key(candidate.provider, candidate.model, request, sample, provider.base_url)
            if cache is not None
            else ""
        )
        if cache is not None and self.cache.read and (hit := cache.get(key)) is not None:
            return hit, 0
        if getattr(provider, "answers_without_calling", False):
            # a batch candidate's request its jobs did not answer: the recorded reason, never a call
            return await provider.complete(request), 0
        attempts = 0

        async def attempt() -> Completion:
            nonlocal attempts
            attempts += 1
            return await self._attempt(provider, request, candidate, tokens)

        completion = await attempt()
        if self._retryable(completion):
            completion = await self._retried(completion, attempt)
        self._health(candidate, completion)
        if cache is not None:
            cache.put(key, candidate.provider, candidate.model, completion)
        return completion, attempts

    async def _retried(self, first: Completion, attempt: Callable[[], Awaitable[Completion]]) -> Completion:
        """The retries after a first answer that needs them, by tenacity's policy.

        Most answers need none, so the first attempt is made before tenacity is entered: its set-up
        and bookkeeping per call were ~6 % of the request phase's event-loop CPU (py-spy, throughput
        benchmark). Tenacity is handed that first answer as its own first attempt, so attempts,
        backoff and RetryInfo delays are counted exactly as if it had made it.
        """
        replay = [first]

        async def first_then_again() -> Completion:
            return replay.pop() if replay else await attempt()

        retrying = AsyncRetrying(
            retry=retry_if_result(self._retryable),
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
            reraise=True,
        )
        completion: Completion = await retrying(first_then_again)
        return completion

    def _health(self, candidate: Candidate, completion: Completion) -> None:
        gate = self.gates[(candidate.provider, candidate.model)]
        error = completion.error
        if error is not None and error.kind is ErrorKind.QUOTA_EXHAUSTED:
            raise SweepStopped(
                f"{candidate.model}: daily quota exhausted ({error.message}); run the same command again "
                "when the quota resets to resume",
                "quota",
            )
        if error is not None and (error.transient or error.kind in (ErrorKind.AUTH, ErrorKind.BAD_REQUEST)):
            gate.consecutive_failures += 1
            gate.last_failure = f"{error.kind.value}: {error.message}"
            if gate.consecutive_failures >= self.max_consecutive_failures:
                raise ModelStopped(
                    f"{candidate.model} keeps failing ({gate.consecutive_failures} answers in a row, last: "
                    f"{gate.last_failure}); fix the cause and run the same command again to resume",
                    (candidate.provider, candidate.model),
                )
        else:
            gate.consecutive_failures = 0


def _pairs(candidates: list[Candidate], examples: list[Example]) -> Iterator[tuple[Candidate, Example, int]]:
    """Every (candidate, example, sample index): a candidate's k samples of a tray are k requests."""
    for candidate in candidates:
        for example in examples:
            for sample in range(candidate.samples):
                yield candidate, example, sample


async def run_sweep(
    plan: Plan,
    dataset: LoadedDataset,
    candidates: list[Candidate],
    providers: dict[tuple[str, str], Provider],
    listeners: list[SweepListener] | None = None,
    *,
    cache: CacheMode | None = None,
    budget: Budget | None = None,
    results: dict[str, CandidateResult] | None = None,
) -> list[CandidateResult]:
    """Run ``candidates`` over ``dataset``; raises SweepStopped after logging what finished."""
    experiment = plan.experiment
    budget = budget or Budget(experiment.max_cost_usd, experiment.max_calls)
    caller = Caller(plan, cache or CacheMode.off(), budget)
    run = _Run(plan, dataset, candidates, listeners or [], results if results is not None else {})
    run.start()
    pairs = _pairs(candidates, dataset.examples)
    await asyncio.gather(*(run.work(pairs, caller, providers) for _ in range(experiment.concurrency)))
    return run.end()


class _Run:
    """One run of ``run_sweep``: its candidates' results, what is left of each, and why it stopped."""

    def __init__(
        self,
        plan: Plan,
        dataset: LoadedDataset,
        candidates: list[Candidate],
        listeners: list[SweepListener],
        results: dict[str, CandidateResult],
    ) -> None:
        self.plan, self.dataset, self.candidates, self.listeners = plan, dataset, candidates, listeners
        self.results = results
        for candidate in candidates:
            results.setdefault(candidate.key, CandidateResult(candidate))
        self.remaining = {c.key: len(dataset.examples) for c in candidates}
        self.order = {e.id: i for i, e in enumerate(dataset.examples)}
        self.stopped: list[SweepStopped] = []
        self.failed_models: dict[tuple[str, str], ModelStopped] = {}
        # (candidate key, example id) -> its samples so far: an example is scored when all k are in
        self.samples: dict[tuple[str, str], list[tuple[Completion, int] | None]] = {}

    def start(self) -> None:
        total = len(self.dataset.examples) + len(self.dataset.skipped)
        for candidate in self.candidates:
            for listener in self.listeners:
                listener.candidate_started(candidate, total)
            if not self.dataset.examples:
                self.finish(candidate)

    def finish(self, candidate: Candidate, *, partial: bool = False) -> None:
        result = self.results[candidate.key]
        result.outcomes.sort(key=lambda o: self.order.get(o.example_id, len(self.order)))
        for skip in self.dataset.skipped:
            result.outcomes.append(skipped(skip.id, (), None, skip.reason))
        price = price_for(candidate.model, self.plan.prices, batch=candidate.batch)
        result.metrics = summarise(
            result.outcomes, price, self.plan.task, selective=candidate.abstain_below is not None
        )
        result.partial = partial
        for listener in self.listeners:
            listener.candidate_done(result)

    async def work(
        self,
        pairs: Iterator[tuple[Candidate, Example, int]],
        caller: Caller,
        providers: dict[tuple[str, str], Provider],
    ) -> None:
        """One worker: takes the next (candidate, example, sample) until none is left or the sweep stops."""
        plan = self.plan
        for candidate, example, sample in pairs:
            if self.stopped:
                return
            if (candidate.provider, candidate.model) in self.failed_models:
                continue  # that model's remaining examples wait for the resumed run
            provider = providers[(candidate.provider, candidate.model)]
            request = build_request(candidate.rendered, plan.task, candidate.settings, example.image)
            tokens = caller.input_tokens(candidate, request)
            try:
                completion, calls = await caller.complete(candidate, provider, request, tokens, sample)
            except ModelStopped as stop:
                self.failed_models.setdefault(stop.model, stop)
                continue
            except SweepStopped as stop:
                self.stopped.append(stop)
                return
            try:  # a listener may stop the sweep (its MLflow store is gone): the answer is kept
                self.answered(candidate, example, sample, completion, calls, tokens)
            except SweepStopped as stop:
                self.stopped.append(stop)
                return

    def answered(
        self,
        candidate: Candidate,
        example: Example,
        sample: int,
        completion: Completion,
        calls: int,
        tokens: int,
    ) -> None:
        """One sample's answer; the example is scored when its last sample is in."""
        result = self.results[candidate.key]
        result.calls += calls
        result.cache_hits += calls == 0
        slots = self.samples.setdefault((candidate.key, example.id), [None] * candidate.samples)
        slots[sample] = (completion, calls)
        if any(slot is None for slot in slots):
            return
        del self.samples[(candidate.key, example.id)]
        task = self.plan.task
        answers = [slot for slot in slots if slot is not None]
        voted = vote([interpret(answer, task) for answer, _ in answers])
        labels = example.labels
        outcome = score_vote(
            example.id,
            labels.categories,
            labels.grade,
            voted,
            task,
            estimated_input_tokens=tokens * candidate.samples,
            abstain_below=candidate.abstain_below,
        )
        if all(n == 0 for _, n in answers) and not voted.result.completion.latency_ms:
            # a batch job's answer has no latency of its own: no figure beats a false zero
            outcome = outcome.model_copy(update={"latency_ms": None})
        result.outcomes.append(outcome)
        self.remaining[candidate.key] -= 1
        for listener in self.listeners:
            listener.example_done(candidate, outcome)
        if self.remaining[candidate.key] == 0:
            self.finish(candidate)

    def end(self) -> list[CandidateResult]:
        """The results, or — if a model kept failing or the sweep was stopped — the stop, raised after
        the unfinished candidates are logged as partial."""
        if self.failed_models and not self.stopped:
            models = {(c.provider, c.model) for c in self.candidates}
            others = (
                " (the other models' candidates finished)" if len(self.failed_models) < len(models) else ""
            )
            reason = "; ".join(stop.message for stop in self.failed_models.values()) + others
            self.stopped.append(SweepStopped(reason, "failing"))
        if self.stopped:
            for candidate in self.candidates:
                if 0 < self.remaining[candidate.key] < len(self.dataset.examples):
                    self.finish(candidate, partial=True)
            raise self.stopped[0]
        return [self.results[c.key] for c in self.candidates]
