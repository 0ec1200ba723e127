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


# --------------------------------------------------------------------------------------------------
# monitor
# --------------------------------------------------------------------------------------------------
monitor_app = typer.Typer(
    help="Is production still as accurate as measured? Label a sample of its results, then score it.",
    no_args_is_help=True,
)
app.add_typer(monitor_app, name="monitor")
SampleOpt = Annotated[Path, typer.Option("--sample", help="The sample file `monitor sample` writes.")]


@monitor_app.command("sample")
@user_errors
def monitor_sample(
    results: Annotated[str, typer.Option("--results", help="The function's results: s3://bucket/prefix/.")],
    n: Annotated[int, typer.Option("--n", min=1, help="Trays to label.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the uniform draw.")] = 0,
    max_flagged: Annotated[
        int | None, typer.Option(min=0, help="At most this many flagged trays (default: half of --n).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Label Studio import file to write.")] = Path(
        "monitor_tasks.json"
    ),
    config: Annotated[Path, typer.Option("--config", help="Labelling config (XML) to write.")] = Path(
        "label_config.xml"
    ),
    sample_file: SampleOpt = Path("monitor_sample.json"),
    bundle: BundleOpt = Path("lambda_handler/bundle"),
    region: RegionOpt = None,
    endpoint_url: EndpointOpt = None,
) -> None:
    """Draw production results (flagged first, then uniform) as Label Studio tasks pre-annotated with production's answer."""
    from promptgrade.production.monitor import FLAGGED, sample
    from promptgrade.production.s3 import clients

    (s3,) = clients(region, endpoint_url, "s3")
    drawn = sample(results, bundle_dir=bundle, n=n, seed=seed, s3=s3, max_flagged=max_flagged)
    drawn.write(out, config, sample_file)
    flagged = sum(task["data"]["tier"] == FLAGGED for task in drawn.tasks)
    common.console.print(
        esc(
            f"{len(drawn.tasks)} of {drawn.results} results → {out} ({flagged} flagged of {drawn.flagged}, "
            f"{len(drawn.tasks) - flagged} uniform, seed {seed}); labelling config → {config}; sample → {sample_file}"
        ),
        highlight=False,
        soft_wrap=True,
    )


@monitor_app.command("score")
@user_errors
def monitor_score(
    labels: Annotated[
        Path, typer.Option("--labels", help="The Label Studio JSON export of the sample's tasks.")
    ],
    sample_file: SampleOpt = Path("monitor_sample.json"),
    bundle: BundleOpt = Path("lambda_handler/bundle"),
    alpha: Annotated[
        float, typer.Option(help="Significance level of the test against the measurement.")
    ] = 0.05,
    experiment: Annotated[
        str | None, typer.Option("--experiment", "-e", help="MLflow experiment (default: the bundle's).")
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option("--tracking-uri", help="MLflow store (default: the bundle's, else the usual)."),
    ] = None,
) -> None:
    """Production's accuracy on the labelled sample vs the promoted candidate's; exit 1 if significantly worse."""
    from promptgrade.production.monitor import log_score, score_labels

    report = score_labels(labels, sample_file, bundle_dir=bundle, alpha=alpha)
    run = log_score(
        report, bundle_dir=bundle, sample_path=sample_file, experiment=experiment, tracking_uri=tracking_uri
    )
    _print_score(report, run)
    if report.worse:
        raise typer.Exit(1)


def _print_score(report: Any, run: Any) -> None:
    from rich.table import Table

    from promptgrade.figures import metric_text

    table = Table(
        title=esc(f"production on {report.labelled} labelled trays ({report.unlabelled} unlabelled)")
    )
    for column in ("metric", "production (uniform)", "measured", "p (one-sided)", "Holm p", "flagged trays"):
        table.add_column(column)
    compared = {c.metric: c for c in report.comparisons}
    for metric, estimate in report.uniform.items():
        c = compared.get(metric)
        flagged = report.flagged[metric]
        table.add_row(
            metric.replace("_", " "),
            f"{metric_text(metric, estimate.value, estimate.ci_low, estimate.ci_high)} (n={estimate.n})",
            "–" if c is None else f"{c.measured:.3f} (n={c.measured_n})",
            "–" if c is None else f"{c.test.p_value:.3g}",
            "–" if c is None else f"{c.adjusted_p:.3g}",
            f"{metric_text(metric, flagged.value, flagged.ci_low, flagged.ci_high)} (n={flagged.n})",
        )
    common.console.print(table)
    for note in report.notes:
        common.console.print(f"[yellow]note:[/] {esc(note)}", highlight=False)
    linked = (
        f", linked to {run.prompt_uri}" if run.prompt_uri else " (prompt not in this registry: not linked)"
    )
    verdict = (
        "[bold red]significantly worse than measured[/]"
        if report.worse
        else "[green]not significantly worse[/]"
    )
    common.console.print(
        f"{verdict} (two-proportion z-test, one-sided, Holm over {len(report.comparisons)}, alpha {report.alpha}); "
        f"monitoring run {esc(run.run_id)} in {esc(run.experiment)}{esc(linked)}",
        highlight=False,
        soft_wrap=True,
    )
