"""``sweep``: progress while it runs, then the summary (a table, or blocks in a narrow terminal)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from promptgrade.cli import common
from promptgrade.cli.batch_phase import BatchProgress, print_batch_outcome
from promptgrade.cli.common import TrackingOpt, app, esc, user_errors
from promptgrade.figures import metric_text

if TYPE_CHECKING:  # the sweep's modules load mlflow & co.: imported when a verb runs, not for --help
    from promptgrade.runner import CacheMode, SweepStopped
    from promptgrade.sweep import Sweep, SweepReport


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


def _figure(metrics: dict[str, Any], name: str, *, ci: bool = False) -> str:
    """One metric of a result as ``figures`` writes it; ``ci`` adds an Estimate's interval."""
    value = metrics.get(name)
    if hasattr(value, "ci_low"):
        low, high = (value.ci_low, value.ci_high) if ci else (None, None)
        return metric_text(name, value.value, low, high)
    return metric_text(name, value)


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
                f"    category {_figure(m, 'category_accuracy', ci=True)} · top-1 "
                f"{_figure(m, 'category_top1_accuracy')} · grade {_figure(m, 'grade_accuracy', ci=True)}"
            )
        )
        lines.append(
            Text(
                f"    MAE {_figure(m, 'grade_mae')} · parse fail {_figure(m, 'parse_failure_rate')}"
                f" · errors {_figure(m, 'error_rate')} · p50 {_figure(m, 'latency_p50_ms')} ms"
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
            _figure(m, "category_accuracy", ci=True),
            _figure(m, "category_top1_accuracy"),
            _figure(m, "grade_accuracy", ci=True),
            _figure(m, "grade_mae"),
            _figure(m, "parse_failure_rate"),
            _figure(m, "error_rate"),
            _figure(m, "latency_p50_ms"),
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
        bool,
        typer.Option("--batch", help="Provider batch jobs instead of calls (half price, up to 24 h)."),
    ] = False,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="With --batch: submit, then exit 3; the same command collects.")
    ] = False,
) -> None:
    """Run every prompt × model × setting on the dataset split and log each candidate to MLflow.

    Interrupted (Ctrl-C, crash, quota, budget)? Run the same command again: it resumes.
    """
    from promptgrade.cache import AnswerCache
    from promptgrade.runner import CacheMode
    from promptgrade.sweep import Sweep

    if not dry_run:
        from promptgrade.tracking.writer import prestart

        prestart()  # MLflow's import, in the writer's process, overlaps with loading the dataset
    prepared = Sweep(experiment, limit=limit, batch=batch)
    if dry_run:
        _print_dry_run(prepared.estimate())
        return
    prepared.connect()
    mode = CacheMode.off() if no_cache else CacheMode(AnswerCache(cache_path), read=not refresh)
    report = _run_with_progress(prepared, experiment, mode, tracking_uri, batch_wait=not no_wait)
    _print_outcome(report)


def _run_with_progress(
    prepared: Sweep, experiment: Path, mode: CacheMode, tracking_uri: str | None, *, batch_wait: bool
) -> SweepReport:
    """The sweep with its bars (the batch jobs' first, if any); a stop or Ctrl-C is told as how to
    resume, then the exit code — never a traceback."""
    from promptgrade.runner import SweepStopped

    progress = Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=common.console,
    )
    listener = _ProgressListener(progress, prepared.total_calls)
    resume_hint = f"run `promptgrade sweep {experiment}` again to resume" + (
        "" if mode.cache else " (with --no-cache, answers already paid for will be paid again)"
    )
    waiting = BatchProgress(common.console)
    try:
        try:
            return prepared.run(
                tracking_uri=tracking_uri,
                cache=mode,
                batch_wait=batch_wait,
                batch_listener=waiting,
                listeners=[_StartingListener(progress), listener],
            )
        finally:
            waiting.stop()
            progress.stop()
            print_batch_outcome(common.console, prepared.batch_outcome)
    except SweepStopped as stop:
        _print_stop(stop, experiment, resume_hint)
        raise typer.Exit(stop.exit_code) from None
    except KeyboardInterrupt:
        saved = f"{mode.cache.count()} answers in the cache; " if mode.cache else ""
        common.err.print(f"[yellow]interrupted[/] — {saved}{esc(resume_hint)}", highlight=False)
        raise typer.Exit(130) from None


def _print_stop(stop: SweepStopped, experiment: Path, resume_hint: str) -> None:
    if stop.kind == "batch":  # --no-wait: nothing is scored or logged until the jobs are collected
        common.err.print(
            f"[bold yellow]waiting is up to you:[/] {esc(stop.message)}", highlight=False, soft_wrap=True
        )
        common.err.print(esc(f"run `promptgrade sweep {experiment} --batch` again to collect and score them"))
        return
    common.err.print(f"[bold yellow]sweep stopped:[/] {esc(stop.message)}", highlight=False, soft_wrap=True)
    common.err.print(
        f"finished candidates and partial results are in MLflow; {esc(resume_hint)}", highlight=False
    )


def _print_outcome(report: SweepReport) -> None:
    """The summary, then what a reader must not miss: skips, token drift, unknown prices, the best."""
    common.console.print(_summary(report, common.console.width))
    reasons = {r.skipped_reason: r.candidate.model for r in report.results if r.skipped_reason}
    for reason, model in reasons.items():
        common.console.print(f"[yellow]skipped[/] {esc(model)}: {esc(reason)}", highlight=False)
    if report.dataset.skipped:
        common.console.print(
            f"[yellow]{len(report.dataset.skipped)} unusable example(s) skipped[/] "
            "(counted in n_skipped; reasons in the predictions table)"
        )
    _print_token_drift(report)
    if report.plan.prices_path is None:
        common.console.print(
            "[yellow]no price table found[/]: costs are unknown (set `prices:` in the experiment)"
        )
    resumed = "resumed sweep; " if report.resumed else ""
    common.console.print(f"{resumed}{report.calls} API calls, {report.cache_hits} answers from the cache")
    best = report.best()
    if best is not None:
        common.console.print(
            f"best by {report.primary_metric}: [bold]{esc(best.candidate.label)}[/] (run {best.run_id})",
            highlight=False,
        )
    common.console.print(
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
        # the candidate, then its figures indented beneath, as in the summary above: at 80 columns a
        # name and its figures on one line wrapped mid-phrase
        lines.append(f"  {_short_name(result.candidate, settings)}")
        lines.append(
            f"    estimated {float(estimated) / answered:,.0f}, actual {float(actual) / answered:,.0f} "
            f"({drift:+.0%})"
        )
    if lines:
        common.console.print("input tokens per call, estimated vs actual:", highlight=False)
        for line in lines:
            common.console.print(esc(line), highlight=False)


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
    common.console.print(table)
    calls = sum(e.calls for e in report.estimates)
    tokens = sum(e.input_tokens for e in report.estimates)
    note = " (some models have no price in the price table)" if unknown else ""
    if batch:
        online = sum(e.online_cost_usd or 0.0 for e in report.estimates)
        note += f" at the batch price (online: ~${online:.4f})"
    common.console.print(
        f"{len(report.estimates)} prompt candidates × {len(report.dataset.examples)} examples = [bold]{calls} calls[/], "
        f"~{tokens:,} input tokens, ~${total_cost:.4f}{note}"
    )
    plan = report.plan
    if plan.prices_path is None:
        common.console.print(
            "[yellow]no price table found[/]: costs are unknown (set `prices:` in the experiment)"
        )
    else:
        as_of = f" (as of {plan.prices_as_of})" if plan.prices_as_of else ""
        common.console.print(esc(f"prices and image-token rules: {plan.prices_path}{as_of}"), highlight=False)
    _print_dry_run_notes(report)
    common.console.print("[green]experiment, dataset and templates are valid[/]")


def _print_dry_run_notes(report: Any) -> None:
    """What a person should know before paying: estimates resting on a guess, samples likely to agree,
    unusable examples, unreleased prompt versions."""
    for model in sorted({e.candidate.model for e in report.estimates if not e.rule_known}):
        common.console.print(
            f"[yellow]note:[/] {esc(model)} has no image-token rule in the price table: its images are "
            "estimated with Gemini 2.x's 258-per-tile rule",
            highlight=False,
        )
    settings = _varying_settings(report.estimates)
    for est in report.estimates:
        candidate = est.candidate
        if candidate.samples > 1 and candidate.settings.temperature == 0:
            common.console.print(
                f"[yellow]note:[/] {esc(_short_name(candidate, settings))} asks for {candidate.samples} samples "
                "at temperature 0: they will likely agree (and cost k times one answer)",
                highlight=False,
            )
    if report.dataset.skipped:
        common.console.print(
            f"[yellow]{len(report.dataset.skipped)} unusable example(s) would be skipped:[/]"
        )
        for skip in report.dataset.skipped[:10]:
            common.console.print(f"  {esc(skip.id)}: {esc(skip.reason)}", highlight=False)
    drafts = [ref for ref, released in report.plan.released.items() if not released]
    if drafts:
        common.console.print(f"unreleased prompt versions (fine for experiments): {esc(', '.join(drafts))}")
