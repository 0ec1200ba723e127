"""``ui``, ``compare`` and ``report``: reading finished sweeps back from MLflow."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any

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
    common.console.print(_candidates_table(name, primary, rows))


def _candidates_table(name: str, primary: str, rows: list[dict[str, Any]]) -> Table:
    """Every figure whole and every run id whole, in one line per candidate where the terminal is wide
    enough. Where it is not (a newcomer's 80 columns cut every cell to "me…"), prompt and model share a
    column, on two lines, headers take two lines, and three secondary metrics wait for a wider terminal,
    which the caption says."""
    names: list[tuple[str, str]] = []
    for row in rows:
        params = row["params"]
        prompt = f"{params['prompt_name']}@v{params['prompt_version']}" if "prompt_name" in params else "–"
        names.append((prompt, params.get("model", "–")))

    every = list(_COMPARE_METRICS)
    figures = [[metric_text(m, row["metrics"].get(m)) for m in every] for row in rows]
    columns = [["★"], ["run", *(r["run_id"][:8] for r in rows)], ["prompt", *(p for p, _ in names)]]
    columns += [["model", *(m for _, m in names)]]
    columns += [[_COMPARE_METRICS[m], *(cells[k] for cells in figures)] for k, m in enumerate(every)]
    narrow = not common.fits(columns)
    kept = [k for k, m in enumerate(every) if not (narrow and m in _WIDE_ONLY)]
    table = Table(title=esc(f"{name}: candidates by {primary}, best first"))
    if narrow:
        table.caption = esc(", ".join(_COMPARE_METRICS[m] for m in _WIDE_ONLY) + ": in a wider terminal")
    table.add_column("")
    table.add_column("run", no_wrap=True)  # `--runs` takes these ids: never cut
    if narrow:
        table.add_column("candidate", overflow="fold")
    else:
        table.add_column("prompt", no_wrap=True)
        table.add_column("model", no_wrap=True)
    for k in kept:
        header = _COMPARE_METRICS[every[k]]
        table.add_column(header.replace(" ", "\n") if narrow else header, justify="right", no_wrap=True)
    for index, ((prompt, model), cells) in enumerate(zip(names, figures, strict=True)):
        candidate = [esc(f"{prompt}\n{model}")] if narrow else [esc(prompt), esc(model)]
        table.add_row(
            "★" if index == 0 else "", rows[index]["run_id"][:8], *candidate, *(cells[k] for k in kept)
        )
    return table


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
    headers = ["example", "on", "truth", "A predicted", "B predicted", "right", "A's answer", "B's answer"]
    rows = [
        [
            *(flip.example_id, flips.name, flip.truth, flip.predicted_a, flip.predicted_b, side),
            *(_short(flip.answer_a), _short(flip.answer_b)),
        ]
        for flips in (result.category, result.grade)
        for side, examples in (("A", flips.a_only), ("B", flips.b_only))
        for flip in examples
    ]
    # the raw answers take most of the width: where the rest would be cut (80 columns), they are left
    # to a wider terminal, and the caption says so
    whole = common.fits([[header, *(row[k] for row in rows)] for k, header in enumerate(headers)])
    kept = len(headers) if whole else len(headers) - 2
    table = Table(title="examples where they disagree")
    if not whole:
        table.caption = "the raw answers: in a wider terminal"
    for header in headers[:kept]:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(esc(cell) for cell in row[:kept]))
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


_WIDE_ONLY = ("category_top1_accuracy", "error_rate", "latency_p50_ms")
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
