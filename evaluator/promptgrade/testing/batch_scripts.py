"""How a local server's batch job lives, in one vocabulary for every provider's stand-in.

A job's life is scripted in seconds (pending, then running, then its final state), so a test waits a
fraction of a second, not a day; each stand-in says the states in its own API's words. ``script`` on a
stand-in's batch half sets what the next created job does: expire, fail, or lose, invent and repeat
results (to test that results are matched to requests by key, and that nothing is scored twice).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

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
