"""``promote``, ``package`` and ``deploy``: from the best candidate to the Lambda."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from promptgrade.cli import common
from promptgrade.cli.common import TrackingOpt, app, esc, experiment_name, user_errors
from promptgrade.figures import DASH, metric_text

# --------------------------------------------------------------------------------------------------
# promote
# --------------------------------------------------------------------------------------------------


@app.command()
@user_errors
def promote(
    experiment: Annotated[
        str, typer.Option("--experiment", "-e", help="MLflow experiment name or experiment file.")
    ],
    run: Annotated[
        str | None,
        typer.Option(
            "--run",
            help="Promote this run (id or its first 6+ characters, or name@version) instead of the best.",
        ),
    ] = None,
    metric: Annotated[
        str | None, typer.Option(help="Rank and test by this metric (default: the sweep's).")
    ] = None,
    alpha: Annotated[float, typer.Option(help="Significance level of the paired test.")] = 0.05,
    min_examples: Annotated[int, typer.Option(help="Fewer evaluated examples: not eligible.")] = 30,
    max_failure_rate: Annotated[
        float, typer.Option(help="More parse failures + errors: not eligible.")
    ] = 0.2,
    force: Annotated[bool, typer.Option("--force", help="Promote even if not measurably better.")] = False,
    bundle_dir: Annotated[Path, typer.Option(help="Where to write the Lambda bundle.")] = Path(
        "lambda_handler/bundle"
    ),
    tracking_uri: TrackingOpt = None,
) -> None:
    """Promote the best prompt: registry alias `production`, run tag, and the Lambda bundle."""
    from promptgrade.promotion import Policy, PromotionRefused, decide
    from promptgrade.promotion import promote as do_promote
    from promptgrade.tracking import refs
    from promptgrade.tracking.read import RunStore

    store = RunStore(experiment_name(experiment), tracking_uri)
    policy = Policy(
        metric=metric, alpha=alpha, min_examples=min_examples, max_failure_rate=max_failure_rate, force=force
    )
    run_id = refs.candidate(store, run).run_id if run is not None else None
    try:
        decision = decide(store, policy, run_id)
    except PromotionRefused as refused:
        _print_decision(refused.decision)
        raise
    _print_decision(decision)
    do_promote(store, decision, bundle_dir, policy)
    forced = " [yellow](forced)[/]" if decision.forced else ""
    common.console.print(
        f"[green]promoted[/]{forced} {esc(decision.winner.name)} → alias [bold]production[/] on "
        f"{esc(decision.registry_uri)}; bundle written to {esc(bundle_dir)} (next: `promptgrade package`)"
    )


def _print_decision(decision: Any) -> None:
    from promptgrade.promotion import SHOWN_METRICS

    shown = [
        (role, row)
        for role, row in (
            ("winner", decision.winner),
            ("production", decision.incumbent),
            ("runner-up", decision.runner_up),
        )
        if row is not None
    ]
    headers = [metric.replace("_", " ") for metric in SHOWN_METRICS] + ["$ / image"]
    figures = [
        [
            *(
                metric_text(metric, *(row.metric(metric + end) for end in ("", "_ci_low", "_ci_high")))
                for metric in SHOWN_METRICS
            ),
            _cost_cell(row),
        ]
        for _, row in shown
    ]
    columns = [["", *(r for r, _ in shown)], ["run", *(row.run_id[:8] for _, row in shown)]]
    columns += [["candidate", *(row.name for _, row in shown)]]
    columns += [[header, *(cells[k] for cells in figures)] for k, header in enumerate(headers)]
    title = f"promotion by {decision.metric}"
    if common.fits(columns):  # one line per candidate
        table = Table(title=title)
        table.add_column("")
        table.add_column("run")
        table.add_column("candidate")
        for header in headers:
            table.add_column(header, justify="right")
        for (role, row), cells in zip(shown, figures, strict=True):
            table.add_row(role, row.run_id[:8], esc(row.name), *cells)
    else:  # an 80-column terminal cut every cell of that to "meal_…": one column per candidate instead
        table = Table(title=title)
        table.add_column("")
        for role, row in shown:
            table.add_column(f"{role} ({row.run_id[:8]})", justify="right", overflow="fold")
        table.add_row("candidate", *(Text(row.name, justify="left") for _, row in shown))
        for k, header in enumerate(headers):
            table.add_row(header, *(cells[k] for cells in figures))
    common.console.print(table)
    against = "production" if decision.incumbent is not None else "runner-up"
    for test in decision.tests:
        common.console.print(
            esc(f"  vs {against}: {test.name}: p={test.p_value:.3g}, n={test.n}; {test.detail}")
        )
    if len(decision.challengers) > 1:
        common.console.print(
            esc(
                f"  Holm-adjusted over the sweep's {len(decision.challengers)} eligible challengers "
                f"(on {decision.metric}, vs production):"
            )
        )
        for challenger in decision.challengers:
            common.console.print(
                esc(
                    f"    {challenger.run.name} ({challenger.run.run_id[:8]}): p={challenger.test.p_value:.3g}"
                    f" → adjusted p={challenger.adjusted_p:.3g}"
                ),
                highlight=False,
            )
    if decision.incumbent is None and decision.runner_up is None:
        common.console.print("  no production prompt and no runner-up to test against")


def _cost_cell(row: Any) -> str:
    """A tray's cost; with k samples, written as k calls, since the Lambda makes all k for each tray."""
    from promptgrade.promotion import cost_per_image

    cost, samples = cost_per_image(row)
    shown = metric_text("cost_per_image_usd", cost)
    if samples > 1 and shown != DASH:
        shown += f" ({samples} × {metric_text('cost_per_image_usd', cost / samples)})"
    return shown


# --------------------------------------------------------------------------------------------------
# package / deploy
# --------------------------------------------------------------------------------------------------
@app.command()
@user_errors
def package(
    bundle: Annotated[Path, typer.Option(help="The promoted bundle.")] = Path("lambda_handler/bundle"),
    out: Annotated[Path, typer.Option(help="Where to write the zip.")] = Path(
        "lambda_handler/build/promptgrade-lambda.zip"
    ),
    runtime: Annotated[str, typer.Option(help="python3.11, python3.12 or python3.13.")] = "python3.12",
    architecture: Annotated[str, typer.Option(help="x86_64 or arm64.")] = "x86_64",
    project_root: Annotated[Path, typer.Option(help="The promptgrade checkout.")] = Path("."),
    wheel_cache: Annotated[
        Path | None,
        typer.Option("--wheel-cache", "--pip-cache", help="Cache folder for the wheels (uv's cache)."),
    ] = None,
    bytecode_python: Annotated[
        Path | None,
        typer.Option(help="A Python of the runtime's version to compile the bytecode (default: found)."),
    ] = None,
) -> None:
    """Build the Lambda zip: handler, bundle, grading path with its bytecode, and manylinux wheels (no mlflow, pandas, datasets)."""
    from promptgrade.shipping.package import build_package

    report = build_package(
        bundle,
        out,
        runtime=runtime,
        architecture=architecture,  # type: ignore[arg-type]
        project_root=project_root,
        cache_dir=wheel_cache,
        bytecode_python=bytecode_python,
        quiet=True,
    )
    common.console.print(esc(report.summary()))
    for note in report.notes():
        common.console.print(f"  [yellow]note:[/] {esc(note)}")


@app.command()
@user_errors
def deploy(
    function_name: Annotated[str, typer.Option(help="Lambda function to create or update.")],
    role_arn: Annotated[str, typer.Option(help="Execution role for a new function.")],
    region: Annotated[str, typer.Option(help="AWS region.")],
    zip_path: Annotated[Path, typer.Option("--zip", help="The zip from `promptgrade package`.")] = Path(
        "lambda_handler/build/promptgrade-lambda.zip"
    ),
    secret_id: Annotated[str | None, typer.Option(help="Secrets Manager secret holding the API key.")] = None,
    parameter: Annotated[str | None, typer.Option(help="SSM SecureString holding the API key.")] = None,
    runtime: Annotated[str, typer.Option(help="Must match the zip.")] = "python3.12",
    architecture: Annotated[str, typer.Option(help="Must match the zip.")] = "x86_64",
    alias: Annotated[str, typer.Option(help="Alias to move to the new version.")] = "live",
    canary: Annotated[
        float | None, typer.Option(help="Send only this share of traffic to the new version.")
    ] = None,
    memory: Annotated[int, typer.Option(help="MB.")] = 512,
    timeout: Annotated[int, typer.Option(help="Seconds.")] = 30,
    env: Annotated[list[str] | None, typer.Option(help="NAME=VALUE for the function (never a key).")] = None,
    s3_bucket: Annotated[
        str | None, typer.Option(help="Upload the zip here first (needed above 50 MB).")
    ] = None,
    endpoint_url: Annotated[str | None, typer.Option(help="AWS endpoint override (an emulator).")] = None,
    queue_arn: Annotated[
        str | None, typer.Option(help="An existing SQS queue to feed the alias (event source mapping).")
    ] = None,
    queue_batch_size: Annotated[int, typer.Option(help="Messages per invocation from the queue.")] = 10,
    queue_max_concurrency: Annotated[
        int, typer.Option(help="Most instances the queue may run at once (the provider's rate limit).")
    ] = 5,
) -> None:
    """Create or update the function, publish a version and move the alias (optionally as a canary)."""
    from promptgrade.errors import ConfigError
    from promptgrade.shipping.deploy import deploy as do_deploy
    from promptgrade.shipping.queue import QueueSettings

    environment: dict[str, str] = {}
    for item in env or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--env wants NAME=VALUE, got {item!r}")
        environment[name] = value
    report = do_deploy(
        zip_path,
        function_name=function_name,
        role_arn=role_arn,
        runtime=runtime,
        architecture=architecture,  # type: ignore[arg-type]
        alias=alias,
        canary_weight=canary,
        memory_mb=memory,
        timeout_s=timeout,
        environment=environment,
        api_key_secret_id=secret_id,
        api_key_parameter=parameter,
        region=region,
        endpoint_url=endpoint_url,
        s3_bucket=s3_bucket,
        queue=QueueSettings(queue_arn, queue_batch_size, queue_max_concurrency) if queue_arn else None,
    )
    common.console.print(f"[green]{esc(report.summary())}[/]")
