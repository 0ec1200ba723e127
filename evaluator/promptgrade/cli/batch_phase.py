"""What ``sweep --batch`` shows: a bar per job while it waits, then what the batch phase did."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from promptgrade.cli.common import esc

if TYPE_CHECKING:  # a sweep without --batch never loads the batch executor
    from promptgrade.batch.executor import BatchOutcome
    from promptgrade.batch.journal import JobRecord
    from promptgrade.providers.batch_base import JobStatus


class BatchProgress:
    """One bar per job while ``sweep --batch`` waits: state, answered of requested, elapsed time."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self.tasks: dict[str, Any] = {}

    def batches_update(self, jobs: list[tuple[JobRecord, JobStatus]], elapsed_s: float) -> None:
        if not self.progress.live.is_started:
            self.progress.start()
        for job, status in jobs:
            done = status.stats.get("successfulRequestCount", 0) + status.stats.get("failedRequestCount", 0)
            state = status.state.removeprefix("JOB_STATE_").lower()
            description = f"{job.name} · {job.candidate_label} · {state}"
            if job.local_id not in self.tasks:
                self.tasks[job.local_id] = self.progress.add_task(description, total=job.requests)
            self.progress.update(self.tasks[job.local_id], description=description, completed=done)

    def stop(self) -> None:
        self.progress.stop()


def print_batch_outcome(console: Console, outcome: BatchOutcome | None, limit: int = 10) -> None:
    """What the batch phase did, and every request it could not answer (the next run resubmits those)."""
    if outcome is None:
        return
    if outcome.submitted:
        console.print(
            esc(f"batch: submitted {len(outcome.submitted)} job(s), {outcome.requests_submitted} requests"),
            highlight=False,
        )
    if outcome.resumed:
        console.print(esc(f"batch: picked up {len(outcome.resumed)} journalled job(s)"), highlight=False)
    for note in outcome.notes:
        console.print(f"[yellow]batch:[/] {esc(note)}", highlight=False)
    for job in outcome.collected:
        if job.state != "JOB_STATE_SUCCEEDED":
            why = f" ({esc(job.error)})" if job.error else ""
            console.print(
                f"[yellow]batch:[/] {esc(job.name)} ended {esc(job.state.removeprefix('JOB_STATE_').lower())}"
                f"{why}: its answers are kept; the next run resubmits the rest",
                highlight=False,
            )
    for label, rows in outcome.failed_requests.items():
        console.print(
            f"[yellow]batch: {len(rows)} request(s) of {esc(label)} not answered[/] (the next run resubmits them):",
            highlight=False,
        )
        for example_id, reason in rows[:limit]:
            console.print(esc(f"  {example_id}: {reason}"), highlight=False)
        if len(rows) > limit:
            console.print(f"  … and {len(rows) - limit} more (in the predictions table)")
