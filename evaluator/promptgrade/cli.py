"""The ``promptgrade`` command: thin verbs over the library, rendered with rich.

Every PromptgradeError becomes one red line and a non-zero exit; a traceback means a bug in
promptgrade, never a mistake of the user's.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from promptgrade.batch.cli import batches_app
from promptgrade.errors import PromptgradeError

app = typer.Typer(
    help="Prompt-engineering experiments for multimodal LLMs that classify and grade images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
prompts_app = typer.Typer(help="List, check and release versioned prompt templates.", no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")
app.add_typer(batches_app, name="batches")

console = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def esc(value: object) -> str:
    """Text from outside (messages, names, paths, answers) shown through rich: brackets stay brackets.

    rich reads ``[cnn]`` as a markup tag and silently drops it; every interpolated value goes through
    here so that only our own styling is markup.
    """
    return escape(str(value))


os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@app.callback()
def _setup() -> None:
    # Consoles are made per invocation so they see the terminal (and COLUMNS) of this run; MLflow's
    # own INFO lines (database migrations) are noise to a user reading a summary table.
    global console, err
    console, err = Console(), Console(stderr=True)
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def user_errors(fn: F) -> F:
    """Turn a PromptgradeError into one line on stderr and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PromptgradeError as exc:
            err.print(f"[bold red]error:[/] {esc(exc)}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


TrackingOpt = Annotated[
    str | None,
    typer.Option("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or ./mlflow.db)."),
]


# --------------------------------------------------------------------------------------------------
# sweep
# --------------------------------------------------------------------------------------------------
class _ProgressListener:
    """One bar per candidate plus an overall bar, with ETA."""

    def __init__(self, progress: Progress, total_calls: int) -> None:
        self.progress = progress
        self.overall = progress.add_task("all candidates", total=total_calls)
        self.tasks: dict[str, Any] = {}

    def candidate_started(self, candidate: Any, total: int) -> None:
        self.tasks[candidate.key] = self.progress.add_task(candidate.label, total=total)

    def example_done(self, candidate: Any, outcome: Any) -> None:
        self.progress.advance(self.tasks[candidate.key])
        self.progress.advance(self.overall)

    def candidate_done(self, result: Any) -> None:
        task = self.tasks[result.candidate.key]
        self.progress.update(
            task, completed=self.progress.tasks[task].total, description=result.candidate.label
        )

    def training(self, candidate: Any, stage: str, fraction: float) -> None:
        self.progress.update(
            self.tasks[candidate.key], description=f"{candidate.label}: {stage} {fraction:.0%}"
        )


class _StartingListener:
    """Shows the candidates' bars once answers are ready (after any batch jobs' own bars)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def candidate_started(self, candidate: Any, total: int) -> None:
        if not self.progress.live.is_started:
            for task in self.progress.tasks:  # the overall bar's clock starts now, not before the jobs
                self.progress.reset(task.id)
            self.progress.start()

    def example_done(self, candidate: Any, outcome: Any) -> None:
        pass

    def candidate_done(self, result: Any) -> None:
        pass

    def training(self, candidate: Any, stage: str, fraction: float) -> None:
        self.candidate_started(candidate, 0)


def _fmt(value: Any, *, pct: bool = True, ci: bool = False) -> str:
    if value is None:
        return "–"
    number = getattr(value, "value", value)
    if isinstance(number, float) and math.isnan(number):
        return "–"
    if not pct:
        return f"{number:,.1f}"
    if ci and hasattr(value, "ci_low"):
        return f"{number:.0%} ({value.ci_low:.0%}–{value.ci_high:.0%})"
    return f"{number:.0%}"


def _varying_settings(results: list[Any]) -> dict[str, str]:
    """Only the settings that differ between prompt candidates: the rest is noise in a comparison table."""
    params = {
        r.candidate.key: r.candidate.settings.as_params() for r in results if r.candidate.prompt is not None
    }
    keys = sorted({k for p in params.values() for k in p})
    varying = [k for k in keys if len({str(p.get(k)) for p in params.values()}) > 1]
    return {
        r.candidate.key: " ".join(
            f"{k}={params[r.candidate.key][k]}" for k in varying if k in params.get(r.candidate.key, {})
        )
        for r in results
    }


WIDE_SUMMARY = 130  # columns the summary table needs before its cells are cut


def _summary(report: Any, width: int) -> Any:
    """The table where it fits; in a narrower terminal (80 columns) one short block per candidate."""
    return _summary_table(report) if width >= WIDE_SUMMARY else _summary_blocks(report)


def _short_name(candidate: Any, settings: dict[str, str]) -> str:
    """prompt@version · model, plus only the settings that differ between candidates (the label has all)."""
    name = candidate.prompt.ref if candidate.prompt is not None else candidate.provider
    mode = " · batch" if getattr(candidate, "batch", False) else ""
    varying = settings.get(candidate.key)
    return f"{name} · {candidate.model}{mode}" + (f" · {varying}" if varying else "")


def _summary_blocks(report: Any) -> Any:
    from rich.console import Group
    from rich.text import Text

    best = report.best()
    settings = _varying_settings(report.results)
    lines: list[Any] = [
        Text(
            f"{report.plan.experiment.name} — {report.dataset.name} [{report.dataset.split}]", style="italic"
        )
    ]
    for result in report.results:
        m, candidate = result.metrics, result.candidate
        lines.append(
            Text(("★ " if result is best else "  ") + _short_name(candidate, settings), style="bold")
        )
        if result.skipped_reason:
            lines.append(Text("    skipped (the reason follows)", style="yellow"))
            continue
        cost = m.get("cost_usd")
        lines.append(
            Text(
                f"    category {_fmt(m.get('category_accuracy'), ci=True)} · top-1 "
                f"{_fmt(m.get('category_top1_accuracy'))} · grade {_fmt(m.get('grade_accuracy'), ci=True)}"
            )
        )
        lines.append(
            Text(
                f"    MAE {_fmt(m.get('grade_mae'), pct=False)} · parse fail {_fmt(m.get('parse_failure_rate'))}"
                f" · errors {_fmt(m.get('error_rate'))} · p50 {_fmt(m.get('latency_p50_ms'), pct=False)} ms"
                f" · {'$?' if cost is None else f'${cost:.4f}'}"
            )
        )
    return Group(*lines)


def _summary_table(report: Any) -> Table:
    best = report.best()
    settings = _varying_settings(report.results)
    table = Table(
        title=esc(f"{report.plan.experiment.name} — {report.dataset.name} [{report.dataset.split}]")
    )
    table.add_column("", width=1)
    table.add_column("prompt")
    table.add_column("model")
    if any(settings.values()):
        table.add_column("settings")
    for column in (
        "category acc (95% CI)",
        "top-1",
        "grade acc (95% CI)",
        "MAE",
        "parse fail",
        "errors",
        "p50 ms",
        "$",
    ):
        table.add_column(column, justify="right")
    for result in report.results:
        m, candidate = result.metrics, result.candidate
        prompt = (
            esc(candidate.prompt.ref)
            if candidate.prompt is not None
            else f"[dim]{esc(candidate.provider)}[/]"
        )
        model = f"{candidate.model} (batch)" if getattr(candidate, "batch", False) else candidate.model
        head = ["★" if result is best else "", prompt, esc(model)]
        if any(settings.values()):
            head.append(esc(settings[candidate.key]))
        if result.skipped_reason:
            table.add_row(*head, "[yellow]skipped[/]", *[""] * 7)
            continue
        cost = m.get("cost_usd")
        table.add_row(
            *head,
            _fmt(m.get("category_accuracy"), ci=True),
            _fmt(m.get("category_top1_accuracy")),
            _fmt(m.get("grade_accuracy"), ci=True),
            _fmt(m.get("grade_mae"), pct=False),
            _fmt(m.get("parse_failure_rate")),
            _fmt(m.get("error_rate")),
            _fmt(m.get("latency_p50_ms"), pct=False),
            "?" if cost is None else f"{cost:.4f}",
        )
    return table


@app.command()
@user_errors
def sweep(
    experiment: Annotated[Path, typer.Argument(help="Experiment file (experiments/<name>.yaml).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and estimate; call no model.")] = False,
    limit: Annotated[int | None, typer.Option(help="Only the first N examples of the split.")] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Neither read nor write the answer cache.")
    ] = False,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Call again even if cached; store the new answers.")
    ] = False,
    cache_path: Annotated[Path | None, typer.Option("--cache", help="Answer cache file.")] = None,
    tracking_uri: TrackingOpt = None,
    batch: Annotated[
        bool, typer.Option("--batch", help="Gemini Batch API jobs instead of calls (half price, up to 24 h).")
    ] = False,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="With --batch: submit, then exit 3; the same command collects.")
    ] = False,
) -> None:
    """Run every prompt × model × setting on the dataset split and log each candidate to MLflow.

    Interrupted (Ctrl-C, crash, quota, budget)? Run the same command again: it resumes.
    """
    from promptgrade.batch.cli import BatchProgress, print_batch_outcome
    from promptgrade.cache import AnswerCache
    from promptgrade.runner import CacheMode, SweepStopped
    from promptgrade.sweep import Sweep

    prepared = Sweep(experiment, limit=limit, batch=batch)
    if dry_run:
        _print_dry_run(prepared.estimate())
        return
    prepared.connect()
    mode = CacheMode.off() if no_cache else CacheMode(AnswerCache(cache_path), read=not refresh)
    progress = Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    listener = _ProgressListener(progress, prepared.total_calls)
    resume_hint = f"run `promptgrade sweep {experiment}` again to resume" + (
        "" if mode.cache else " (with --no-cache, answers already paid for will be paid again)"
    )
    waiting = BatchProgress(console)
    try:
        try:
            report = prepared.run(
                tracking_uri=tracking_uri,
                cache=mode,
                batch_wait=not no_wait,
                batch_listener=waiting,
                listeners=[_StartingListener(progress), listener],
            )
        finally:
            waiting.stop()
            progress.stop()
            print_batch_outcome(console, prepared.batch_outcome)
    except SweepStopped as stop:
        if stop.kind == "batch":  # --no-wait: nothing is scored or logged until the jobs are collected
            err.print(
                f"[bold yellow]waiting is up to you:[/] {esc(stop.message)}", highlight=False, soft_wrap=True
            )
            err.print(esc(f"run `promptgrade sweep {experiment} --batch` again to collect and score them"))
            raise typer.Exit(stop.exit_code) from None
        err.print(f"[bold yellow]sweep stopped:[/] {esc(stop.message)}", highlight=False, soft_wrap=True)
        err.print(
            f"finished candidates and partial results are in MLflow; {esc(resume_hint)}", highlight=False
        )
        raise typer.Exit(stop.exit_code) from None
    except KeyboardInterrupt:
        saved = f"{mode.cache.count()} answers in the cache; " if mode.cache else ""
        err.print(f"[yellow]interrupted[/] — {saved}{esc(resume_hint)}", highlight=False)
        raise typer.Exit(130) from None
    console.print(_summary(report, console.width))
    reasons = {r.skipped_reason: r.candidate.model for r in report.results if r.skipped_reason}
    for reason, model in reasons.items():
        console.print(f"[yellow]skipped[/] {esc(model)}: {esc(reason)}", highlight=False)
    if report.dataset.skipped:
        console.print(
            f"[yellow]{len(report.dataset.skipped)} unusable example(s) skipped[/] "
            "(counted in n_skipped; reasons in the predictions table)"
        )
    _print_token_drift(report)
    if report.plan.prices_path is None:
        console.print("[yellow]no price table found[/]: costs are unknown (set `prices:` in the experiment)")
    resumed = "resumed sweep; " if report.resumed else ""
    console.print(f"{resumed}{report.calls} API calls, {report.cache_hits} answers from the cache")
    best = report.best()
    if best is not None:
        console.print(
            f"best by {report.primary_metric}: [bold]{esc(best.candidate.label)}[/] (run {best.run_id})",
            highlight=False,
        )
    console.print(
        f"MLflow: experiment [bold]{esc(report.plan.experiment.name)}[/] in {esc(report.tracking_uri)} — "
        "`promptgrade ui` to compare"
    )


def _print_token_drift(report: Any) -> None:
    """Estimated beside actual input tokens per answered call: a stale image-token rule shows here
    (and in MLflow as ``estimated_input_tokens`` beside ``input_tokens``) before it misleads a budget."""
    lines = []
    settings = _varying_settings(report.results)
    for result in report.results:
        estimated, actual = result.metrics.get("estimated_input_tokens"), result.metrics.get("input_tokens")
        answered = sum(1 for o in result.outcomes if o.input_tokens and o.estimated_input_tokens)
        if not estimated or not actual or not answered:
            continue
        drift = (float(actual) - float(estimated)) / float(estimated)
        lines.append(
            f"  {_short_name(result.candidate, settings)}: estimated {float(estimated) / answered:,.0f}, "
            f"actual {float(actual) / answered:,.0f} ({drift:+.0%})"
        )
    if lines:
        console.print("input tokens per call, estimated vs actual:", highlight=False)
        for line in lines:
            console.print(esc(line), highlight=False)


def _print_dry_run(report: Any) -> None:
    table = Table(
        title=esc(
            f"dry run — {report.plan.experiment.name}: {len(report.dataset.examples)} examples, estimates"
        )
    )
    batch = any(est.candidate.batch for est in report.estimates)
    # every figure is an estimate (the title says so): short headers leave the width to the names
    columns = ["candidate", "calls", "input tokens", "output tokens", "$"]
    for column in columns + (["online $"] if batch else []):
        table.add_column(column, justify="left" if column == "candidate" else "right")
    total_cost, unknown = 0.0, False
    settings = _varying_settings(report.estimates)  # the full labels are in MLflow; here, what differs
    for est in report.estimates:
        unknown |= est.cost_usd is None
        total_cost += est.cost_usd or 0.0
        cost = "no price" if est.cost_usd is None else f"{est.cost_usd:.4f}"
        online = (
            ["no price" if est.online_cost_usd is None else f"{est.online_cost_usd:.4f}"] if batch else []
        )
        table.add_row(
            esc(_short_name(est.candidate, settings)),
            str(est.calls),
            f"{est.input_tokens:,}",
            f"{est.output_tokens:,}",
            cost,
            *online,
        )
    for candidate in report.candidates:
        if candidate.prompt is None:
            table.add_row(
                esc(_short_name(candidate, settings)),
                "0",
                "–",
                "–",
                "0 (local)",
                *(["–"] if batch else []),
            )
    console.print(table)
    calls = sum(e.calls for e in report.estimates)
    tokens = sum(e.input_tokens for e in report.estimates)
    note = " (some models have no price in the price table)" if unknown else ""
    if batch:
        online = sum(e.online_cost_usd or 0.0 for e in report.estimates)
        note += f" at the batch price (online: ~${online:.4f})"
    console.print(
        f"{len(report.estimates)} prompt candidates × {len(report.dataset.examples)} examples = [bold]{calls} calls[/], "
        f"~{tokens:,} input tokens, ~${total_cost:.4f}{note}"
    )
    plan = report.plan
    if plan.prices_path is None:
        console.print("[yellow]no price table found[/]: costs are unknown (set `prices:` in the experiment)")
    else:
        as_of = f" (as of {plan.prices_as_of})" if plan.prices_as_of else ""
        console.print(esc(f"prices and image-token rules: {plan.prices_path}{as_of}"), highlight=False)
    for model in sorted({e.candidate.model for e in report.estimates if not e.rule_known}):
        console.print(
            f"[yellow]note:[/] {esc(model)} has no image-token rule in the price table: its images are "
            "estimated with Gemini 2.x's 258-per-tile rule",
            highlight=False,
        )
    if report.dataset.skipped:
        console.print(f"[yellow]{len(report.dataset.skipped)} unusable example(s) would be skipped:[/]")
        for skip in report.dataset.skipped[:10]:
            console.print(f"  {esc(skip.id)}: {esc(skip.reason)}", highlight=False)
    drafts = [ref for ref, released in report.plan.released.items() if not released]
    if drafts:
        console.print(f"unreleased prompt versions (fine for experiments): {esc(', '.join(drafts))}")
    console.print("[green]experiment, dataset and templates are valid[/]")


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
    from promptgrade.tracking import tracking_uri as resolve

    uri = resolve(tracking_uri)
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
    console.print(esc(f"MLflow UI for {uri} at http://{host}:{port} (Ctrl-C to stop)"))
    # One user, one worker, and none of MLflow's background job runners; exec so that Ctrl-C (or a
    # kill) reaches the server itself and leaves no orphaned processes behind.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
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
            help="Two runs (run ids, or name@version of the latest sweep): compare them example by example.",
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
    McNemar test on each and both answers side by side.
    """
    from promptgrade.tracking.read import candidate_rows

    name = _experiment_name(experiment)
    if runs is not None:
        _compare_two(name, runs, tracking_uri, json_path, unpaired)
        return
    rows, primary = candidate_rows(name, tracking_uri, latest_only=not all_sweeps)
    table = Table(title=esc(f"{name}: candidates by {primary}, best first"))
    for column in ("", "run", "prompt", "model", *_COMPARE_METRICS.values()):
        table.add_column(column, justify="right" if column in _COMPARE_METRICS.values() else "left")
    for index, row in enumerate(rows):
        params, metrics = row["params"], row["metrics"]
        prompt = f"{params['prompt_name']}@v{params['prompt_version']}" if "prompt_name" in params else "–"
        cells = ["★" if index == 0 else "", row["run_id"][:8], esc(prompt), esc(params.get("model", "–"))]
        for metric in _COMPARE_METRICS:
            value = metrics.get(metric)
            if value is None:
                cells.append("–")
            elif metric.endswith(("accuracy", "_rate")):
                cells.append(f"{value:.0%}")
            else:
                cells.append(f"{value:,.4f}" if metric == "cost_usd" else f"{value:,.1f}")
        table.add_row(*cells)
    console.print(table)


def _compare_two(
    name: str, runs: tuple[str, str], tracking_uri: str | None, json_path: Path | None, unpaired: bool
) -> None:
    import json

    from promptgrade.errors import PromptgradeError
    from promptgrade.flips import compare_runs
    from promptgrade.tracking.read import RunStore

    result = compare_runs(RunStore(name, tracking_uri), *runs, unpaired=unpaired)
    a, b = result.a.name, result.b.name  # a candidate run is named by its label
    console.print(
        esc(
            f"A = {a} (run {result.a.run_id[:8]}), B = {b} (run {result.b.run_id[:8]}), {result.examples} examples"
        )
        + ("" if result.paired else " [yellow](unpaired: different data)[/]"),
        highlight=False,
    )
    for flips in (result.category, result.grade):
        console.print(
            esc(
                f"{flips.name}: A right, B wrong on {len(flips.a_only)}; B right, A wrong on {len(flips.b_only)}; "
                f"exact McNemar p={flips.p_value:.3g} (n={flips.n})"
            ),
            highlight=False,
        )
    if result.grade_mae_difference is not None:
        console.print(esc(f"mean |grade error|, B − A: {result.grade_mae_difference:+.2f}"), highlight=False)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {esc(note)}", highlight=False)
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
        console.print(table)
    if json_path is not None:
        try:
            json_path.write_text(json.dumps(result.as_dict(), indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise PromptgradeError(f"cannot write the comparison: {exc.strerror}", path=json_path) from None
        console.print(esc(f"written to {json_path}"), highlight=False)


@app.command()
@user_errors
def report(
    experiment: Annotated[
        str, typer.Argument(help="Experiment file (adds image thumbnails) or MLflow experiment name.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("report.html"),
    sweep: Annotated[
        str | None, typer.Option("--sweep", help="A sweep's run id (default: the latest sweep).")
    ] = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Write one self-contained HTML report of a sweep: candidates, plots, and every example's answers.

    It needs no network to open: plots and thumbnails are embedded. Filter the examples to the
    disagreements between candidates or to the failures.
    """
    from promptgrade.errors import PromptgradeError
    from promptgrade.report import write_report
    from promptgrade.tracking.read import RunStore

    name = _experiment_name(experiment)
    file = Path(experiment) if experiment.endswith((".yaml", ".yml")) else None
    try:
        written = write_report(RunStore(name, tracking_uri), out, sweep_run_id=sweep, experiment_file=file)
    except OSError as exc:
        raise PromptgradeError(f"cannot write the report: {exc.strerror}", path=out) from None
    size_kb = written.stat().st_size / 1024
    console.print(
        esc(f"report written to {written} ({size_kb:,.0f} KB); open it in a browser"), highlight=False
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


# --------------------------------------------------------------------------------------------------
# promote
# --------------------------------------------------------------------------------------------------
def _experiment_name(experiment: str) -> str:
    if experiment.endswith((".yaml", ".yml")):
        from promptgrade.config import load_experiment

        return load_experiment(experiment).name
    return experiment


@app.command()
@user_errors
def promote(
    experiment: Annotated[
        str, typer.Option("--experiment", "-e", help="MLflow experiment name or experiment file.")
    ],
    run: Annotated[str | None, typer.Option("--run", help="Promote this run instead of the best.")] = None,
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
    from promptgrade.tracking.read import RunStore

    store = RunStore(_experiment_name(experiment), tracking_uri)
    policy = Policy(
        metric=metric, alpha=alpha, min_examples=min_examples, max_failure_rate=max_failure_rate, force=force
    )
    try:
        decision = decide(store, policy, run)
    except PromotionRefused as refused:
        _print_decision(refused.decision)
        raise
    _print_decision(decision)
    do_promote(store, decision, bundle_dir, policy)
    forced = " [yellow](forced)[/]" if decision.forced else ""
    console.print(
        f"[green]promoted[/]{forced} {esc(decision.winner.name)} → alias [bold]production[/] on "
        f"{esc(decision.registry_uri)}; bundle written to {esc(bundle_dir)} (next: `promptgrade package`)"
    )


def _print_decision(decision: Any) -> None:
    from promptgrade.promotion import SHOWN_METRICS

    table = Table(title=f"promotion by {decision.metric}")
    table.add_column("")
    table.add_column("run")
    table.add_column("candidate")
    for metric in SHOWN_METRICS:
        table.add_column(metric.replace("_", " "), justify="right")
    for role, row in (
        ("winner", decision.winner),
        ("production", decision.incumbent),
        ("runner-up", decision.runner_up),
    ):
        if row is None:
            continue
        cells = [role, row.run_id[:8], esc(row.name)]
        for metric in SHOWN_METRICS:
            value, low, high = (row.metric(metric + suffix) for suffix in ("", "_ci_low", "_ci_high"))
            if math.isnan(value):
                cells.append("–")
            elif metric == "grade_mae":
                cells.append(f"{value:.1f}" + ("" if math.isnan(low) else f" ({low:.1f}–{high:.1f})"))
            else:
                cells.append(f"{value:.0%}" + ("" if math.isnan(low) else f" ({low:.0%}–{high:.0%})"))
        table.add_row(*cells)
    console.print(table)
    against = "production" if decision.incumbent is not None else "runner-up"
    for test in decision.tests:
        console.print(esc(f"  vs {against}: {test.name}: p={test.p_value:.3g}, n={test.n}; {test.detail}"))
    if decision.incumbent is None and decision.runner_up is None:
        console.print("  no production prompt and no runner-up to test against")


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
    pip_cache: Annotated[Path | None, typer.Option(help="pip cache folder for the wheels.")] = None,
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
        cache_dir=pip_cache,
        bytecode_python=bytecode_python,
        quiet=True,
    )
    console.print(esc(report.summary()))
    for note in report.notes():
        console.print(f"  [yellow]note:[/] {esc(note)}")


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
) -> None:
    """Create or update the function, publish a version and move the alias (optionally as a canary)."""
    from promptgrade.errors import ConfigError
    from promptgrade.shipping.deploy import deploy as do_deploy

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
    )
    console.print(f"[green]{esc(report.summary())}[/]")


# --------------------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------------------
cache_app = typer.Typer(help="Inspect or clear the answer cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")
CacheOpt = Annotated[Path | None, typer.Option("--cache", help="Answer cache file.")]


@cache_app.command("info")
@user_errors
def cache_info(cache_path: CacheOpt = None) -> None:
    """How many answers are cached, for which models, and the file's size."""
    from promptgrade.cache import AnswerCache

    stats = AnswerCache(cache_path).stats()
    console.print(esc(f"{stats['path']}: {stats['answers']} answers, {stats['bytes'] / 1e6:.1f} MB"))
    for provider, model, count in stats["by_model"]:
        console.print(esc(f"  {provider}/{model}: {count}"))


@cache_app.command("clear")
@user_errors
def cache_clear(
    cache_path: CacheOpt = None,
    model: Annotated[str | None, typer.Option(help="Only this model's answers.")] = None,
) -> None:
    """Delete cached answers (all, or one model's): the next sweep pays for them again."""
    from promptgrade.cache import AnswerCache

    removed = AnswerCache(cache_path).clear(model)
    console.print(f"removed {removed} cached answers")


# --------------------------------------------------------------------------------------------------
# prompts
# --------------------------------------------------------------------------------------------------
PromptsDir = Annotated[Path, typer.Option("--dir", help="The prompts folder.")]


@prompts_app.command("list")
@user_errors
def prompts_list(directory: PromptsDir = Path("prompts")) -> None:
    """Every prompt version, its sha256 and whether it is released."""
    from promptgrade.prompts import PromptLibrary

    library = PromptLibrary(directory)
    table = Table()
    for column in ("prompt", "sha256", "released", "description"):
        table.add_column(column)
    for prompt in library.all():
        table.add_row(
            esc(prompt.ref),
            prompt.sha256[:12],
            "yes" if library.is_released(prompt) else "draft",
            esc(prompt.description),
        )
    console.print(table)


@prompts_app.command("check")
@user_errors
def prompts_check(
    directory: PromptsDir = Path("prompts"),
    task: Annotated[Path, typer.Option(help="Task file to render against.")] = Path(
        "experiments/tasks/meal_tray.yaml"
    ),
) -> None:
    """Render every version against the task and verify released versions are unchanged."""
    from promptgrade.prompts import PromptLibrary
    from promptgrade.task import load_task

    loaded = load_task(task)
    prompts = PromptLibrary(directory).all()
    for prompt in prompts:
        prompt.validate(loaded)
    console.print(f"[green]{len(prompts)} prompt versions render and match the lock[/]")


@prompts_app.command("release")
@user_errors
def prompts_release(
    ref: Annotated[str, typer.Argument(help="name@version to freeze, e.g. meal_tray_json@2.")],
    directory: PromptsDir = Path("prompts"),
) -> None:
    """Freeze a version: record its sha256 in prompts/released.lock (commit that file)."""
    from promptgrade.errors import PromptError
    from promptgrade.prompts import PromptLibrary

    name, _, version = ref.partition("@")
    version = version.removeprefix("v")
    if not version.isdigit():
        raise PromptError(f"{ref!r}: expected name@<version number>")
    library = PromptLibrary(directory)
    prompt = library.get(name, int(version))
    if library.release(prompt):
        console.print(esc(f"released {prompt.ref} ({prompt.sha256[:12]}…) — commit {library.lock_path}"))
    else:
        console.print(esc(f"{prompt.ref} was already released"))


# --------------------------------------------------------------------------------------------------
# the local Gemini-REST server, for demos
# --------------------------------------------------------------------------------------------------
@app.command("fake-gemini")
@user_errors
def fake_gemini(
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8765,
    answers: Annotated[Path | None, typer.Option(help="JSON file: image sha256 → answer text.")] = None,
    latency: Annotated[float, typer.Option(help="Seconds before each answer.")] = 0.0,
    default_answer: Annotated[
        str | None, typer.Option(help="Answer text for images not in --answers (default: an empty answer).")
    ] = None,
) -> None:
    """Serve a local stand-in for the Gemini REST API (scripted answers), for demos and offline runs."""
    from promptgrade.testing import gemini_server

    argv = ["--port", str(port), "--latency", str(latency)]
    if answers is not None:
        argv += ["--answers", str(answers)]
    if default_answer is not None:
        argv += ["--default-answer", default_answer]
    raise typer.Exit(gemini_server.main(argv))


# --------------------------------------------------------------------------------------------------
# validate-data
# --------------------------------------------------------------------------------------------------
_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def _short_where(where: str) -> str:
    """Paths under the working directory, relative: the table is read by someone in the repo."""
    cwd = str(Path.cwd()) + os.sep
    return where[len(cwd) :] if where.startswith(cwd) else where


@app.command("validate-data")
@user_errors
def validate_data(
    experiment: Annotated[Path, typer.Argument(help="Experiment file whose dataset to check.")],
    split: Annotated[
        list[str] | None,
        typer.Option(
            "--split", help="Split to check (repeatable; default: the evaluation and train splits)."
        ),
    ] = None,
    max_findings: Annotated[int, typer.Option(min=0, help="Show at most this many findings.")] = 50,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write every finding to this JSON file.")
    ] = None,
) -> None:
    """Check a dataset before spending anything: images, labels, ids. Exit 1 if there are errors.

    Calls no model. Errors make an example (or the dataset) unusable; warnings may mislead a score;
    info says what normalisation will change.
    """
    import json

    from promptgrade.config import load_experiment
    from promptgrade.data.validate import validate_dataset
    from promptgrade.errors import PromptgradeError
    from promptgrade.task import load_task

    loaded = load_experiment(experiment)
    task = load_task(loaded.resolve(loaded.task))
    report = validate_dataset(loaded.dataset, task, loaded.base_dir, split or None)

    if report.findings:
        shown = report.findings[:max_findings]
        table = Table(title=esc(f"{report.dataset}: {len(report.findings)} finding(s)"))
        for column in ("severity", "example", "where", "problem", "what to do"):
            table.add_column(column, overflow="fold")
        for finding in shown:
            style = _SEVERITY_STYLE[finding.severity]
            table.add_row(
                f"[{style}]{finding.severity}[/]",
                esc(finding.example_id or "–"),
                esc(_short_where(finding.where)),
                f"[bold]{esc(finding.code)}[/]: {esc(finding.message)}",
                esc(finding.fix),
            )
        if shown:
            console.print(table)
        if len(report.findings) > len(shown):
            hint = "" if json_path else "; --json PATH writes them all"
            console.print(f"… {len(report.findings) - len(shown)} more finding(s) not shown{hint}")

    def counts(numbers: dict[str, int]) -> str:
        plural = {s: s if numbers[s] == 1 or s == "info" else s + "s" for s in numbers}
        return ", ".join(f"{numbers[s]} {plural[s]}" for s in ("error", "warning", "info"))

    for summary in report.splits:
        state = "" if summary.checked else " [yellow](not read)[/]"
        console.print(
            f"split [bold]{esc(summary.split)}[/]{state}: {summary.n_examples} examples, {summary.usable} usable — "
            f"{counts(report.counts_for(summary.split))}"
        )
    elsewhere = report.counts_for(None)
    if any(elsewhere.values()):
        console.print(f"rows of other splits: {counts(elsewhere)}")

    if json_path is not None:
        try:
            json_path.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", "utf-8")
        except OSError as exc:
            raise PromptgradeError(f"cannot write findings: {exc.strerror}", path=json_path) from None
        console.print(esc(f"all {len(report.findings)} finding(s) written to {json_path}"))

    if report.ok:
        console.print(f"[green]no errors[/]: {report.usable} usable example(s)")
        return
    console.print(f"[bold red]{report.counts['error']} error(s)[/]: fix them before a sweep")
    raise typer.Exit(1)


# --------------------------------------------------------------------------------------------------
# optimize (the verb lives in its own package)
# --------------------------------------------------------------------------------------------------
from promptgrade.optimize.command import optimize as _optimize  # noqa: E402

app.command("optimize")(user_errors(_optimize))

from promptgrade.labels.cli import label_app  # noqa: E402 - it uses this module's helpers

app.add_typer(label_app, name="label")


def main() -> None:  # pragma: no cover - the console script calls app()
    app()


if __name__ == "__main__":
    main()
