"""How a local server's batch job lives, in one vocabulary for every provider's stand-in.

A job's life is scripted in seconds (pending, then running, then its final state), so a test waits a
fraction of a second, not a day; each stand-in says the states in its own API's words. ``script`` on a
stand-in's batch half sets what the next created job does: expire, fail, or lose, invent and repeat
results (to test that results are matched to requests by key, and that nothing is scored twice).
"""

from __future__ import annotations

import dataclasses
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

FinalState = Literal["SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"]
Phase = Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"]


@dataclass
class JobScript:
    """How one job behaves: seconds in each state, its final state, and result tampering."""

    pending_s: float = 0.05
    running_s: float = 0.15
    final: FinalState = "SUCCEEDED"
    drop_results: int = 0  # results left out of the output (the last N)
    unknown_results: int = 0  # results with keys no request had
    duplicate_results: int = 0  # the first N results, written twice


def phase(created: float, script: JobScript, cancelled_at: float | None, now: float) -> Phase:
    """Where a job created at ``created`` (``time.monotonic()``) is at ``now``."""
    if cancelled_at is not None:
        return "CANCELLED"
    elapsed = now - created
    if elapsed < script.pending_s:
        return "PENDING"
    if elapsed < script.pending_s + script.running_s:
        return "RUNNING"
    return script.final


def finished(script: JobScript) -> JobScript:
    """The script of a job that ends now, as scripted (a test's "a day later")."""
    return dataclasses.replace(script, pending_s=0.0, running_s=0.0)


def tampered(results: list[dict[str, Any]], script: JobScript, key: str) -> list[dict[str, Any]]:
    """``results`` (one dict per request, its id under ``key``) as the script has the output file show
    them: the last ``drop_results`` lost, ``unknown_results`` with ids no request had, the first
    ``duplicate_results`` twice."""
    kept = results[: len(results) - script.drop_results]
    unknown = [
        {**(results[0] if results else {}), key: f"unknown{index}"} for index in range(script.unknown_results)
    ]
    return [*kept, *unknown, *results[: script.duplicate_results]]


class _Scripted(Protocol):
    script: JobScript


J = TypeVar("J", bound=_Scripted)


@dataclass(kw_only=True)
class ScriptedJobs(Generic[J]):
    """What every stand-in's batch half keeps: its jobs by name, the script the next ones follow, and
    how many were created (each a non-idempotent call, counted at the server)."""

    default_script: JobScript = field(default_factory=JobScript)
    jobs: dict[str, J] = field(default_factory=dict)
    created: int = 0
    _scripts: deque[JobScript] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, script: JobScript) -> None:
        """The next created job behaves like this (then the default applies again)."""
        with self._lock:
            self._scripts.append(script)

    def finish_all(self) -> None:
        """Every job still pending or running ends now, as scripted (a test's "a day later")."""
        with self._lock:
            for job in self.jobs.values():
                job.script = finished(job.script)

    def _register(self, name: str, build: Callable[[JobScript], J]) -> J:
        """A created job, under the next script, counted and kept by ``name``."""
        with self._lock:
            script = self._scripts.popleft() if self._scripts else self.default_script
            self.created += 1
            job = self.jobs[name] = build(script)
        return job
