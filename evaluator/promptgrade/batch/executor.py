"""Batch jobs as the second executor of a sweep's requests (the first is the online ``Caller``).

Both fill the same answer cache under the same keys; nothing downstream knows which ran. This module
turns a batch candidate's uncached requests into jobs (journalled first, see ``journal``) on whichever
provider's batch service the model's record names — Gemini, Bedrock or OpenAI, each a ``BatchBackend``
(``providers.batch_base``) — cut to that service's limits (``split``), follows the jobs until they end
— polling with backoff, waiting out a 429's retry delay — and reads their results into the answer
cache, matched by key. After that the ordinary sweep runs over the cache and
makes no calls: a request the jobs did not answer reaches the runner as a recorded ``batch_failed``
answer (``JournalAnswers``), scored as an error with its reason, and the next run resubmits it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from promptgrade.batch.journal import SUBMITTING, BatchJournal, JobRecord
from promptgrade.batch.split import split
from promptgrade.cache import AnswerCache, cache_key, cacheable
from promptgrade.candidates import Candidate
from promptgrade.config import Plan, price_for
from promptgrade.data.examples import LoadedDataset
from promptgrade.estimate import reference_sizes, request_input_tokens, size_of
from promptgrade.grading import build_request
from promptgrade.providers.base import Completion, CompletionRequest, ErrorInfo, ErrorKind
from promptgrade.providers.batch_base import SUCCEEDED, BatchAPIError, BatchBackend, JobStatus, request_bytes
from promptgrade.runner import Budget, SweepStopped
from promptgrade.tokens import EXPECTED_OUTPUT_TOKENS

MAX_POLL_FAILURES = 8  # consecutive failed polls (5xx, connection) before the wait stops, resumable


class BatchesPending(SweepStopped):
    """Jobs are submitted or running and the caller chose not to wait: the same command collects them."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, "batch")


class BatchListener(Protocol):
    def batches_update(self, jobs: list[tuple[JobRecord, JobStatus]], elapsed_s: float) -> None: ...


@dataclass
class BatchOutcome:
    """What the batch phase did in this run: the CLI's summary lines."""

    submitted: list[JobRecord] = field(default_factory=list)
    resumed: list[JobRecord] = field(default_factory=list)  # journalled jobs picked up
    collected: list[JobRecord] = field(default_factory=list)
    failed_requests: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # label → (example, why)
    notes: list[str] = field(default_factory=list)
    held: dict[str, str] = field(default_factory=dict)  # cache key → why no job may take it (never sent)

    @property
    def requests_submitted(self) -> int:
        return sum(job.requests for job in self.submitted)


# The first poll interval unless PROMPTGRADE_BATCH_POLL_S says (tests poll in fractions of a second).
FIRST_POLL_S = 10.0


def poll_intervals(first: float) -> tuple[float, float]:
    """The first poll interval and the cap the backoff grows to."""
    return first, max(first, min(300.0, first * 30))


class BatchExecutor:
    def __init__(
        self,
        plan: Plan,
        dataset: LoadedDataset,
        candidates: list[Candidate],
        clients: Mapping[tuple[str, str], BatchBackend],
        cache: AnswerCache,
        journal: BatchJournal,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        poll_s: float = FIRST_POLL_S,
        max_requests: int | None = None,
        budget: Budget | None = None,
    ) -> None:
        """``max_requests``: the lab's own cap on requests per job (``PROMPTGRADE_BATCH_MAX_REQUESTS``),
        below the provider's documented one. ``budget``: a budget shared with online calls (an
        optimisation's); without it, the experiment's ``max_calls`` / ``max_cost_usd`` bound the jobs."""
        self.plan, self.dataset, self.candidates = plan, dataset, candidates
        self.poll_s, self.max_requests = poll_s, max_requests
        self.clients, self.cache, self.journal = clients, cache, journal
        self.sleep, self.clock = sleep, clock
        self.budget = budget
        self.outcome = BatchOutcome()
        self._needed: set[str] | None = None
        self._job_keys: dict[str, set[str]] = {}

    def requests(self, candidate: Candidate) -> list[tuple[str, str, CompletionRequest]]:
        """(cache key, example id, request) for every example: exactly what an online call would send."""
        out = []
        for example in self.dataset.examples:
            request = build_request(candidate.rendered, self.plan.task, candidate.settings, example.image)
            endpoint = self.clients[(candidate.provider, candidate.model)].base_url
            for sample in range(candidate.samples):  # k samples: k requests, each under its own key
                key = cache_key(candidate.provider, candidate.model, request, sample, endpoint)
                out.append((key, example.id, request))
        return out

    # -- submitting ---------------------------------------------------------------------------
    def submit(self) -> None:
        """Adopt journalled jobs, then submit the requests neither cached nor in flight: one job per
        candidate, or several where the provider's limits say so."""
        self._settle_intents()
        self.outcome.resumed = self.open_jobs()
        in_flight = self.journal.in_flight()
        plans: list[tuple[Candidate, list[tuple[str, str, CompletionRequest]]]] = []
        for candidate in self.candidates:
            todo, seen = [], set()
            for key, example_id, request in self.requests(candidate):
                if key in in_flight or key in seen or self.cache.get(key) is not None:
                    continue
                seen.add(key)  # two examples with the same image are one request
                todo.append((key, example_id, request))
            plans.extend((candidate, chunk) for chunk in self._jobs_of(candidate, todo))
        self._check_budget(plans)
        for candidate, todo in plans:
            self.outcome.submitted.append(self._create(candidate, todo))

    def _jobs_of(
        self, candidate: Candidate, todo: list[tuple[str, str, CompletionRequest]]
    ) -> list[list[tuple[str, str, CompletionRequest]]]:
        """``todo`` cut to the provider's limits; what no job may hold is noted, and stays unanswered."""
        if not todo:
            return []
        client = self.clients[(candidate.provider, candidate.model)]
        cut = split(
            [request_bytes(request) for _, _, request in todo], client.limits.tightened(self.max_requests)
        )
        for index, reason in cut.held.items():
            self.outcome.held[todo[index][0]] = reason
        if cut.held:
            reasons = sorted(set(cut.held.values()))
            self.outcome.notes.append(
                f"{candidate.label}: {len(cut.held)} request(s) held back, not submitted ({'; '.join(reasons)}); "
                "a sweep without --batch answers them online, at the online price"
            )
        return [[todo[index] for index in job] for job in cut.jobs]

    def _check_budget(self, plans: list[tuple[Candidate, list[tuple[str, str, CompletionRequest]]]]) -> None:
        """A job is paid for as a whole: the budget is checked before any is submitted, at the batch
        price and the same worst case for output as an online call's reservation."""
        experiment, budget = self.plan.experiment, self.budget
        requests = sum(len(todo) for _, todo in plans)
        max_calls = experiment.max_calls if budget is None else budget.max_calls
        used = 0 if budget is None else budget.calls
        if max_calls is not None and used + requests > max_calls:
            raise SweepStopped(
                f"max_calls={max_calls}: the batch jobs would hold {requests} requests"
                + (f" after {used} calls" if used else "")
                + "; nothing was submitted",
                "budget",
            )
        max_cost = experiment.max_cost_usd if budget is None else budget.max_cost_usd
        if max_cost is None:
            return
        spent = 0.0 if budget is None else budget.spent_usd + budget.reserved_usd
        cost = sum(
            self._worst_cost(candidate, request) for candidate, todo in plans for _, _, request in todo
        )
        if spent + cost > max_cost:
            raise SweepStopped(
                f"max_cost_usd=${max_cost:g}: the batch jobs could cost ~${cost:.4f} at the batch price"
                + (f" after ${spent:.4f} spent" if spent else "")
                + "; nothing was submitted",
                "budget",
            )

    def _worst_cost(self, candidate: Candidate, request: CompletionRequest) -> float:
        price = price_for(candidate.model, self.plan.prices, batch=True)
        if price is None:
            return 0.0
        output = candidate.settings.max_output_tokens or EXPECTED_OUTPUT_TOKENS
        tokens = request_input_tokens(
            self.plan,
            candidate.model,
            request.prompt,
            size_of(request.image),
            request.settings.media_resolution,
            reference_sizes(candidate),
        )
        return price.cost(tokens, output)

    def _charge(self, model: str, completion: Completion) -> None:
        """An answered request counts on a shared budget as a call at the batch price, when collected
        (a job adopted from a killed run is charged by the run that collects it)."""
        if self.budget is None:
            return
        price = price_for(model, self.plan.prices, batch=True)
        self.budget.calls += 1
        if price is not None:
            self.budget.spent_usd += price.cost(completion.input_tokens, completion.output_tokens)

    def _ours(self, job: JobRecord) -> bool:
        return (job.provider, job.model) in self.clients

    def _create(self, candidate: Candidate, todo: list[tuple[str, str, CompletionRequest]]) -> JobRecord:
        local_id = uuid.uuid4().hex[:16]
        client = self.clients[(candidate.provider, candidate.model)]
        self.journal.intend(
            local_id,
            experiment=self.plan.experiment.name,
            provider=candidate.provider,
            model=candidate.model,
            candidate_key=candidate.key,
            candidate_label=candidate.label,
            requests=[(key, example_id) for key, example_id, _ in todo],
            base_url=client.base_url,
            fields=candidate.spec.batch_fields(),
        )
        record = self.journal.job(local_id)
        assert record is not None
        try:
            name, route = client.create([(key, request) for key, _, request in todo], record.display_name)
        except BatchAPIError as exc:
            if exc.info is not None and exc.info.status_code is not None and exc.info.status_code < 500:
                self.journal.forget(local_id)  # refused: no job exists, nothing was billed
            raise
        self.journal.submitted(local_id, name, route)
        job = self.journal.job(local_id)
        assert job is not None
        return job

    def _settle_intents(self) -> None:
        """Intents left by a run killed around ``create``: adopt the job if the API has it, else forget."""
        for job in self.journal.jobs(uncollected=True):
            if job.state != SUBMITTING or not self._ours(job):
                continue
            name = self.clients[(job.provider, job.model)].find(job.display_name)
            if name is None:
                self.journal.forget(job.local_id)
            else:
                self.journal.submitted(job.local_id, name, None)
                self.outcome.notes.append(
                    f"adopted {name}, created by a run that stopped before recording it"
                )

    # -- waiting ------------------------------------------------------------------------------
    def open_jobs(self) -> list[JobRecord]:
        """Uncollected jobs holding a request this sweep needs (another experiment's identical requests
        included: they are not submitted twice, so they are waited for); other jobs are left alone."""
        if self._needed is None:
            self._needed = {key for c in self.candidates for key, _, _ in self.requests(c)}
        out = []
        for job in self.journal.jobs(uncollected=True):
            if not job.name or not self._ours(job):
                continue
            if job.local_id not in self._job_keys:
                self._job_keys[job.local_id] = set(self.journal.requests(job.local_id))
            if self._job_keys[job.local_id] & self._needed:
                out.append(job)
        return out

    def wait(self, listener: BatchListener | None = None) -> None:
        """Poll every open job until it ends, collecting each as it does."""
        first, cap = poll_intervals(self.poll_s)
        interval, failures, started = first, 0, self.clock()
        while open_jobs := self.open_jobs():
            statuses: list[tuple[JobRecord, JobStatus]] = []
            delay = interval
            for job in open_jobs:
                assert job.name is not None
                try:
                    status = self.clients[(job.provider, job.model)].status(job.name)
                except BatchAPIError as exc:
                    info = exc.info
                    if info is None or not info.transient:
                        raise
                    failures += 1
                    if failures >= MAX_POLL_FAILURES:
                        raise SweepStopped(
                            f"{job.model}: polling {job.name} keeps failing ({exc.message}); the jobs are "
                            "journalled: run the same command again to go on waiting",
                            "failing",
                        ) from None
                    if info.retry_after_s is not None:  # a 429: never poll sooner than the server asks
                        delay = max(delay, info.retry_after_s)
                    continue
                failures = 0
                self.journal.update(job.local_id, status.state, status.stats, status.error)
                statuses.append((job, status))
                if status.done:
                    self._collect(job)
            if listener is not None:
                listener.batches_update(statuses, self.clock() - started)
            if self.open_jobs():
                self.sleep(delay)
                interval = min(cap, interval * 1.5)

    def _collect(self, job: JobRecord) -> None:
        """Read a finished job's results into the answer cache; whatever it did not answer, say why."""
        assert job.name is not None
        status, results = self.clients[(job.provider, job.model)].results(job.name)
        expected = self.journal.requests(job.local_id)
        answered: list[str] = []
        failed: dict[str, str] = {}
        unknown = duplicates = 0
        for result in results:
            if result.key not in expected:
                unknown += 1
                continue
            if result.key in failed or result.key in answered:
                duplicates += 1  # the first result stands: nothing is scored twice
                continue
            completion = result.completion
            if cacheable(completion):
                self.cache.put(result.key, job.provider, job.model, completion)
                answered.append(result.key)
                self._charge(job.model, completion)
            else:
                failed[result.key] = completion.error.message if completion.error else "no answer"
        ended = status.state.removeprefix("JOB_STATE_").lower()
        why = f" ({status.error})" if status.error else ""
        for key in expected.keys() - set(answered) - failed.keys():
            failed[key] = (
                f"the job ended {ended}{why} without this request's answer"
                if status.state != SUCCEEDED
                else "missing from the job's results"
            )
        notes = []
        if unknown:
            notes.append(f"{unknown} result(s) with keys this job never sent were ignored")
        if duplicates:
            notes.append(f"{duplicates} duplicate result(s) were ignored")
        note = "; ".join(notes) or None
        self.journal.collect(job.local_id, answered, failed, note)
        collected = self.journal.job(job.local_id)
        assert collected is not None
        self.outcome.collected.append(collected)
        if note:
            self.outcome.notes.append(f"{job.name}: {note}")
        if failed:
            rows = self.outcome.failed_requests.setdefault(job.candidate_label, [])
            rows.extend(
                (expected[key], reason)
                for key, reason in sorted(failed.items(), key=lambda kv: expected[kv[0]])
            )


class JournalAnswers:
    """The provider a batch candidate's runner sees: it never calls the model. A request the cache
    does not hold was not answered by its jobs; this says why, as a ``batch_failed`` answer."""

    answers_without_calling = True

    def __init__(
        self,
        name: str,
        model: str,
        journal: BatchJournal,
        base_url: str | None = None,
        held: Mapping[str, str] | None = None,
    ) -> None:
        """``held``: cache key → why no job may take that request (``BatchOutcome.held``)."""
        self.name, self.model, self.journal, self.base_url = name, model, journal, base_url
        self.held = held or {}

    async def complete(self, request: CompletionRequest) -> Completion:
        key = cache_key(self.name, self.model, request, endpoint=self.base_url)
        reason = self.journal.failure(key)
        if key in self.held:
            message = f"not sent as a batch job: {self.held[key]}; a sweep without --batch answers it online"
        elif reason:
            message = f"batch job {reason}; the next run resubmits it"
        else:
            message = "no batch job has answered this request yet; the next run submits it"
        return Completion(text=None, error=ErrorInfo(ErrorKind.BATCH_FAILED, message))

    async def aclose(self) -> None:
        """The journal's connection (shared by the sweep's batch models: closing it twice is harmless);
        nothing else — the answers were read from the cache, not a session."""
        self.journal.close()
