"""``batches list|cancel``: the batch jobs (Gemini, Bedrock, OpenAI) this store submitted (from its journal)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from promptgrade.cli import common
from promptgrade.cli.common import app, esc, user_errors

batches_app = typer.Typer(
    help="Batch jobs (Gemini, Bedrock, OpenAI) submitted by `sweep --batch`.", no_args_is_help=True
)
app.add_typer(batches_app, name="batches")
CacheOpt = Annotated[
    Path | None, typer.Option("--cache", help="Answer cache file (its journal sits beside it).")
]


def _age(created: float) -> str:
    seconds = max(0.0, time.time() - created)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _shown_name(name: str) -> str:
    """A Bedrock job's ARN by its job id (what `batches cancel` takes too); other names as they are."""
    return name.rsplit("/", 1)[-1] if name.startswith("arn:") else name


def _counts(stats: dict[str, int], requests: int) -> str:
    ok, failed = stats.get("successfulRequestCount", 0), stats.get("failedRequestCount", 0)
    return f"{ok}✓ {failed}✗ / {stats.get('requestCount', requests)}"


@batches_app.command("list")
@user_errors
def batches_list(cache_path: CacheOpt = None) -> None:
    """Every job in this store's journal: name, experiment, candidate, state (as last seen), counts, age."""
    from promptgrade.batch.jobs import store_journal

    jobs = store_journal(cache_path).jobs()
    if not jobs:
        common.console.print("no batch jobs in this store")
        return
    table = Table()
    table.add_column("job", no_wrap=True)  # whole, so that it can be pasted into `batches cancel`
    for column in ("experiment", "candidate", "state", "requests", "age", "collected"):
        table.add_column(column)
    for job in jobs:
        table.add_row(
            esc(_shown_name(job.name) if job.name else f"({job.display_name})"),
            esc(job.experiment),
            esc(job.candidate_label),
            esc(job.state.removeprefix("JOB_STATE_")),
            esc(_counts(job.stats, job.requests)),
            _age(job.created),
            "yes" if job.collected else "no",
        )
    common.console.print(table)


@batches_app.command("cancel")
@user_errors
def batches_cancel(
    name: Annotated[str, typer.Argument(help="The job's name or id, as `batches list` shows it.")],
    cache_path: CacheOpt = None,
) -> None:
    """Cancel a pending or running job; the next sweep keeps what it answered and resubmits the rest."""
    from promptgrade.batch.jobs import cancel_job
    from promptgrade.settings import load_settings
    from promptgrade.sweep import batch_client

    settings = load_settings()
    job = cancel_job(name, lambda spec: batch_client(spec, None, settings), cache_path)
    common.console.print(
        esc(f"cancelled {job.name} ({job.candidate_label}, {job.requests} requests)"), highlight=False
    )
