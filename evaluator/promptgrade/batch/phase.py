"""The batch phase of ``sweep --batch`` and ``optimize --batch``: one way to turn uncached requests into
jobs, wait for them and hand the runner providers that answer from the cache.

Both callers build the back-ends themselves (the sweep's model-to-client resolution lives with the
sweep) and close them; this owns the journal and the executor, so the two commands cannot drift apart
in what they submit, adopt after a kill, or tell the runner about requests no job answered.
"""

from __future__ import annotations

from collections.abc import Mapping

from promptgrade.batch.executor import (
    BatchesPending,
    BatchExecutor,
    BatchListener,
    BatchOutcome,
    JournalAnswers,
)
from promptgrade.batch.journal import BatchJournal, journal_path
from promptgrade.cache import AnswerCache
from promptgrade.candidates import Candidate
from promptgrade.config import Plan
from promptgrade.data.examples import LoadedDataset
from promptgrade.errors import ConfigError
from promptgrade.providers.batch_base import BatchBackend
from promptgrade.runner import Budget, CacheMode


def batch_cache(mode: CacheMode | None, command: str) -> AnswerCache:
    """Batch answers reach the runner only through the cache: a run that does not read it cannot batch."""
    if mode is None or mode.cache is None or not mode.read:
        raise ConfigError(
            f"{command} --batch fills the answer cache and scores from it: drop --no-cache / --refresh"
        )
    return mode.cache


class BatchPhase:
    """Submit what no job holds, wait (or stop, resumable), collect into the cache.

    ``outcome`` exists before ``run`` so a caller can report what was submitted even when ``run``
    stops with ``BatchesPending``.
    """

    def __init__(
        self,
        plan: Plan,
        dataset: LoadedDataset,
        candidates: list[Candidate],
        clients: Mapping[tuple[str, str], BatchBackend],
        cache: AnswerCache,
        *,
        poll_s: float,
        max_requests: int | None,
        budget: Budget | None = None,
    ) -> None:
        self.clients = clients
        self.journal = BatchJournal(journal_path(cache.path))
        self.executor = BatchExecutor(
            plan,
            dataset,
            candidates,
            clients,
            cache,
            self.journal,
            poll_s=poll_s,
            max_requests=max_requests,
            budget=budget,
        )
        self.outcome: BatchOutcome = self.executor.outcome

    def run(
        self, *, wait: bool = True, listener: BatchListener | None = None
    ) -> dict[tuple[str, str], JournalAnswers]:
        """The batch models' providers for the runner: each answers from the cache, never calling, and
        names why a request has no answer (``batch_failed``)."""
        executor = self.executor
        executor.submit()
        if open_jobs := executor.open_jobs():
            if not wait:
                requests = sum(job.requests for job in open_jobs)
                raise BatchesPending(
                    f"{len(open_jobs)} batch job(s) holding {requests} requests are pending or running "
                    f"({', '.join(job.name or '?' for job in open_jobs)})"
                )
            executor.wait(listener)
        held = executor.outcome.held
        return {
            (provider, model): JournalAnswers(provider, model, self.journal, client.base_url, held)
            for (provider, model), client in self.clients.items()
        }


__all__ = ["BatchPhase", "batch_cache"]
