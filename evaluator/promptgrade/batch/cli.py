"""``promptgrade batches``: the jobs this store submitted (from the journal), and cancelling one;
plus what ``sweep --batch`` shows while it waits and after."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from promptgrade.errors import PromptgradeError

# Defined before the CLI's common module is imported: promptgrade.cli registers this app when imported.
batches_app = typer.Typer(help="Gemini batch jobs submitted by `sweep --batch`.", no_args_is_help=True)

from promptgrade.cli import common  # noqa: E402 - the shared consoles and one-line errors
from promptgrade.cli.common import esc as _esc  # noqa: E402
from promptgrade.cli.common import user_errors as _user_errors  # noqa: E402

CacheOpt = Annotated[
    Path | None, typer.Option("--cache", help="Answer cache file (its journal sits beside it).")
]


def _journal(cache_path: Path | None) -> Any:
    from promptgrade.batch.journal import BatchJournal, journal_path
    from promptgrade.cache import default_path

    return BatchJournal(journal_path(cache_path or default_path()))


def _age(created: float) -> str:
    seconds = max(0.0, time.time() - created)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _counts(stats: dict[str, int], requests: int) -> str:
    ok, failed = stats.get("successfulRequestCount", 0), stats.get("failedRequestCount", 0)
    return f"{ok}✓ {failed}✗ / {stats.get('requestCount', requests)}"


@batches_app.command("list")
@_user_errors
def batches_list(cache_path: CacheOpt = None) -> None:
    """Every job in this store's journal: name, experiment, candidate, state (as last seen), counts, age."""
    console = common.console  # made per invocation

    jobs = _journal(cache_path).jobs()
    if not jobs:
        console.print("no batch jobs in this store")
        return
    table = Table()
    for column in ("job", "experiment", "candidate", "state", "requests", "age", "collected"):
        table.add_column(column)
    for job in jobs:
        table.add_row(
            _esc(job.name or f"({job.display_name})"),
            _esc(job.experiment),
            _esc(job.candidate_label),
            _esc(job.state.removeprefix("JOB_STATE_")),
            _esc(_counts(job.stats, job.requests)),
            _age(job.created),
            "yes" if job.collected else "no",
        )
    console.print(table)


@batches_app.command("cancel")
@_user_errors
def batches_cancel(
    name: Annotated[str, typer.Argument(help="The job's name (batches/…), as `batches list` shows it.")],
    cache_path: CacheOpt = None,
) -> None:
    """Cancel a pending or running job; the next sweep keeps what it answered and resubmits the rest."""
    console = common.console  # made per invocation
    from promptgrade.providers.gemini_batch import GeminiBatches

    job = _journal(cache_path).job(name)
    if job is None or job.name is None:
        raise PromptgradeError(
            f"no batch job {name!r} in this store's journal (see `promptgrade batches list`)"
        )
    client = GeminiBatches(job.model, job.base_url)
    try:
        client.cancel(job.name)
    finally:
        client.close()
    console.print(
        _esc(f"cancelled {job.name} ({job.candidate_label}, {job.requests} requests)"), highlight=False
    )


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

    def batches_update(self, jobs: list[tuple[Any, Any]], elapsed_s: float) -> None:
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


def print_batch_outcome(console: Console, outcome: Any, limit: int = 10) -> None:
    """What the batch phase did, and every request it could not answer (the next run resubmits those)."""
    if outcome is None:
        return
    if outcome.submitted:
        console.print(
            _esc(f"batch: submitted {len(outcome.submitted)} job(s), {outcome.requests_submitted} requests"),
            highlight=False,
        )
    if outcome.resumed:
        console.print(_esc(f"batch: picked up {len(outcome.resumed)} journalled job(s)"), highlight=False)
    for note in outcome.notes:
        console.print(f"[yellow]batch:[/] {_esc(note)}", highlight=False)
    for job in outcome.collected:
        if job.state != "JOB_STATE_SUCCEEDED":
            console.print(
                f"[yellow]batch:[/] {_esc(job.name)} ended {_esc(job.state.removeprefix('JOB_STATE_').lower())}: "
                "its answers are kept; the next run resubmits the rest",
                highlight=False,
            )
    for label, rows in outcome.failed_requests.items():
        console.print(
            f"[yellow]batch: {len(rows)} request(s) of {_esc(label)} not answered[/] (the next run resubmits them):",
            highlight=False,
        )
        for example_id, reason in rows[:limit]:
            console.print(_esc(f"  {example_id}: {reason}"), highlight=False)
        if len(rows) > limit:
            console.print(f"  … and {len(rows) - limit} more (in the predictions table)")
