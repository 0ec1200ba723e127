"""``ui``, ``compare`` and ``report``: reading finished sweeps back from MLflow."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from promptgrade.cli import common
from promptgrade.cli.common import TrackingOpt, app, esc, experiment_name, user_errors
from promptgrade.errors import PromptgradeError
from promptgrade.figures import metric_text
from promptgrade.stats import BootstrapInterval


# --------------------------------------------------------------------------------------------------
# ui / compare
# --------------------------------------------------------------------------------------------------
@app.command()
@user_errors
def ui(
    port: Annotated[int, typer.Option(help="Port for the MLflow UI.")] = 5000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    tracking_uri: TrackingOpt = None,
) -> None:
    """Open the MLflow UI on the same store the sweeps log to."""
    from promptgrade.ports import check_free
    from promptgrade.settings import child_environment
    from promptgrade.tracking import tracking_uri as resolve

    uri = resolve(tracking_uri)
    if uri.startswith(("http://", "https://")):
        # a tracking server serves its own UI: starting another one on it is MLflow's traceback
        common.console.print(esc(f"the tracking server's UI is at {uri.rstrip('/')}/ — open it in a browser"))
        return
    check_free(host, port)  # once exec'd, a busy port would be MLflow's traceback under our URL
    mlflow_bin = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    command = [
        mlflow_bin,
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    common.console.print(esc(f"MLflow UI for {uri} at http://{host}:{port} (Ctrl-C to stop)"))
    # One user, one worker, and none of MLflow's background job runners; exec so that Ctrl-C (or a
    # kill) reaches the server itself and leaves no orphaned processes behind.
    env = child_environment({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    sys.stdout.flush()
    os.execve(mlflow_bin, command, env)


@app.command()
@user_errors
def compare(
    experiment: Annotated[str, typer.Argument(help="MLflow experiment name, or an experiment file.")],
    tracking_uri: TrackingOpt = None,
    all_sweeps: Annotated[
        bool, typer.Option("--all", help="Every sweep's candidates, not only the latest.")
    ] = False,
    runs: Annotated[
        tuple[str, str] | None,
        typer.Option(
            "--runs",
            help="Two runs (run ids or their first 6+ characters, or name@version or baseline:<kind> of the "
            "latest sweep): compare them example by example.",
        ),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="With --runs: write the comparison to this JSON file.")
    ] = None,
    unpaired: Annotated[
        bool, typer.Option("--unpaired", help="With --runs: allow runs scored on different data.")
    ] = False,
) -> None:
    """Show the candidates of the latest sweep as a table, best first, as MLflow recorded them.

    With --runs A B: the examples on which A and B disagree, for category and for grade, with the exact
    McNemar test and a paired bootstrap interval of the accuracy difference on each, and both answers
    side by side.
    """
    from promptgrade.tracking.read import candidate_rows

    name = experiment_name(experiment)
    if runs is not None:
        _compare_two(name, runs, tracking_uri, json_path, unpaired)
        return
    rows, primary = candidate_rows(name, tracking_uri, latest_only=not all_sweeps)
    table = Table(title=esc(f"{name}: candidates by {primary}, best first"))
    for column in ("", "run", "prompt", "model", *_COMPARE_METRICS.values()):
        table.add_column(
            column,
            justify="right" if column in _COMPARE_METRICS.values() else "left",
            no_wrap=column == "run",  # `--runs` takes these ids: never cut, even at 80 columns
            min_width=8 if column == "run" else None,
        )
    for index, row in enumerate(rows):
        params, metrics = row["params"], row["metrics"]
        prompt = f"{params['prompt_name']}@v{params['prompt_version']}" if "prompt_name" in params else "–"
        cells = ["★" if index == 0 else "", row["run_id"][:8], esc(prompt), esc(params.get("model", "–"))]
        cells += [metric_text(metric, metrics.get(metric)) for metric in _COMPARE_METRICS]
        table.add_row(*cells)
    common.console.print(table)


def _compare_two(
    name: str, runs: tuple[str, str], tracking_uri: str | None, json_path: Path | None, unpaired: bool
) -> None:
    import json

    from promptgrade.flips import compare_runs
    from promptgrade.tracking.read import RunStore

    result = compare_runs(RunStore(name, tracking_uri), *runs, unpaired=unpaired)
    a, b = result.a.name, result.b.name  # a candidate run is named by its label
    common.console.print(
        esc(
            f"A = {a} (run {result.a.run_id[:8]}), B = {b} (run {result.b.run_id[:8]}), {result.examples} examples"
        )
        + ("" if result.paired else " [yellow](unpaired: different data)[/]"),
        highlight=False,
    )
    for flips in (result.category, result.grade):
        common.console.print(
            esc(
                f"{flips.name}: A right, B wrong on {len(flips.a_only)}; B right, A wrong on {len(flips.b_only)}; "
                f"exact McNemar p={flips.p_value:.3g} (n={flips.n})"
            ),
            highlight=False,
        )
        common.console.print(esc(f"  {_difference_text(flips.accuracy_difference)}"), highlight=False)
    if result.grade_mae_difference is not None:
        common.console.print(
            esc(f"mean |grade error|, B − A: {result.grade_mae_difference:+.2f}"), highlight=False
        )
    for note in result.notes:
        common.console.print(f"[yellow]note:[/] {esc(note)}", highlight=False)
    table = Table(title="examples where they disagree")
    for column in (
        "example",
        "on",
        "truth",
        "A predicted",
        "B predicted",
        "right",
        "A's answer",
        "B's answer",
    ):
        table.add_column(column, overflow="fold")
    for flips in (result.category, result.grade):
        for side, examples in (("A", flips.a_only), ("B", flips.b_only)):
            for flip in examples:
                table.add_row(
                    esc(flip.example_id),
                    flips.name,
                    esc(flip.truth),
                    esc(flip.predicted_a),
                    esc(flip.predicted_b),
                    side,
                    esc(_short(flip.answer_a)),
                    esc(_short(flip.answer_b)),
                )
    if table.row_count:
        common.console.print(table)
    if json_path is not None:
        try:
            json_path.write_text(json.dumps(result.as_dict(), indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise PromptgradeError(f"cannot write the comparison: {exc.strerror}", path=json_path) from None
        common.console.print(esc(f"written to {json_path}"), highlight=False)


@app.command()
@user_errors
def report(
    experiment: Annotated[
        str, typer.Argument(help="Experiment file (adds image thumbnails) or MLflow experiment name.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("report.html"),
    sweep: Annotated[
        str | None,
        typer.Option("--sweep", help="A sweep's run id or its first 6+ characters (default: the latest)."),
    ] = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Write one self-contained HTML report of a sweep: candidates, plots, and every example's answers.

    It needs no network to open: plots and thumbnails are embedded. Filter the examples to the
    disagreements between candidates or to the failures.
    """
    from promptgrade.report import write_report
    from promptgrade.tracking.read import RunStore

    name = experiment_name(experiment)
    file = Path(experiment) if experiment.endswith((".yaml", ".yml")) else None
    try:
        written = write_report(RunStore(name, tracking_uri), out, sweep_run_id=sweep, experiment_file=file)
    except OSError as exc:
        raise PromptgradeError(f"cannot write the report: {exc.strerror}", path=out) from None
    size_kb = written.stat().st_size / 1024
    common.console.print(
        esc(f"report written to {written} ({size_kb:,.0f} KB); open it in a browser"), highlight=False
    )


def _difference_text(interval: BootstrapInterval) -> str:
    if interval.n == 0:
        return "accuracy B − A: no examples to compare"
    return (
        f"accuracy B − A: {100 * interval.difference:+.1f} points, {interval.confidence:.0%} paired "
        f"bootstrap interval [{100 * interval.ci_low:+.1f}, {100 * interval.ci_high:+.1f}] "
        f"({interval.resamples:,} resamples of the {interval.n} examples, seed {interval.seed})"
    )


def _short(answer: str | None, limit: int = 120) -> str:
    text = " ".join((answer or "–").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_COMPARE_METRICS = {
    "category_accuracy": "cat acc",
    "category_top1_accuracy": "top-1",
    "grade_accuracy": "grade acc",
    "grade_mae": "MAE",
    "parse_failure_rate": "parse fail",
    "error_rate": "errors",
    "latency_p50_ms": "p50 ms",
    "cost_usd": "$",
}
