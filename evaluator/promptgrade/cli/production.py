"""``backfill`` and ``monitor sample|score``: production at scale, thin over ``production``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from promptgrade.cli import common
from promptgrade.cli.common import app, esc, user_errors

BundleOpt = Annotated[
    Path,
    typer.Option("--bundle", help="The bundle the function runs (its results are looked up by its sha256)."),
]
RegionOpt = Annotated[str | None, typer.Option(help="AWS region (default: the AWS configuration's).")]
EndpointOpt = Annotated[str | None, typer.Option(help="AWS endpoint override (an emulator).")]


@app.command()
@user_errors
def backfill(
    source: Annotated[str, typer.Argument(help="The backlog: s3://bucket/prefix.")],
    queue: Annotated[str, typer.Option("--queue", help="URL of the queue the function reads.")],
    results: Annotated[
        str, typer.Option("--results", help="Where the function writes results: s3://bucket/prefix/.")
    ],
    bundle: BundleOpt = Path("lambda_handler/bundle"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count the ungraded images and estimate the cost; send nothing.")
    ] = False,
    marker: Annotated[
        Path | None, typer.Option(help="Resume file (default: .promptgrade/backfill-<hash>.json).")
    ] = None,
    region: RegionOpt = None,
    endpoint_url: EndpointOpt = None,
) -> None:
    """Send every image under an S3 prefix that the current bundle has not graded to the function's queue."""
    from rich.progress import BarColumn, Progress, TextColumn

    from promptgrade.production.backfill import backfill as run_backfill
    from promptgrade.production.s3 import clients

    s3, sqs = clients(region, endpoint_url, "s3", "sqs")
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[counts]}"))
    with Progress(*columns, console=common.err, transient=True) as bar:
        task = bar.add_task("listing", total=None, counts="")

        def on_page(progress: Any) -> None:
            counts = f"{progress.images} images, {progress.graded} graded, {progress.enqueued} sent"
            bar.update(task, completed=progress.listed, counts=counts)

        report = run_backfill(
            source,
            queue,
            results_uri=results,
            bundle_dir=bundle,
            s3=s3,
            sqs=sqs,
            marker=marker,
            dry_run=dry_run,
            on_page=on_page,
        )
    _print_backfill(report)


def _print_backfill(report: Any) -> None:
    progress = report.progress
    if report.resumed_from is not None:
        common.console.print(esc(f"resumed after {report.resumed_from}"), highlight=False)
    cost = report.estimated_cost_usd
    shown = "no cost figure in the bundle" if cost is None else f"≈ ${cost:,.2f}"
    if cost is not None:
        each = f"${report.cost_per_image_usd:.5f} per image as measured"
        shown += f" ({each}{f', {report.samples} calls each' if report.samples > 1 else ''})"
    verb = "would send" if report.dry_run else "sent"
    common.console.print(
        esc(
            f"{progress.images} images under {progress.source}: {progress.graded} already graded by bundle "
            f"{progress.bundle_sha256[:12]}, {report.to_grade} to grade; {verb} {report.to_grade if report.dry_run else progress.enqueued} "
            f"message(s) to {progress.queue}; {shown}"
        ),
        highlight=False,
        soft_wrap=True,
    )
