"""``optimize``: a reflection model rewrites a prompt from its failures; thin over ``optimize.search``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from promptgrade.cli import common
from promptgrade.cli.common import TrackingOpt, app, esc, user_errors

if TYPE_CHECKING:
    from promptgrade.optimize.search import Bound, Optimization, Report
    from promptgrade.runner import CacheMode


@app.command("optimize")
@user_errors
def optimize(
    experiment: Annotated[Path, typer.Argument(help="Experiment file (its task models, dataset, prices).")],
    prompt: Annotated[str, typer.Option("--prompt", help="Start from this version, e.g. meal_tray_json@1.")],
    reflection_model: Annotated[
        str | None,
        typer.Option(help="Model that proposes templates (default: the experiment's strongest Gemini)."),
    ] = None,
    max_calls: Annotated[
        int | None, typer.Option(min=1, help="Stop before more API calls than this (all models).")
    ] = None,
    max_cost_usd: Annotated[
        float | None, typer.Option(min=0.0, help="Stop before spending more than this (all models).")
    ] = None,
    candidates: Annotated[
        int, typer.Option(min=1, help="Proposals per round; the best this many are written.")
    ] = 3,
    max_rounds: Annotated[int, typer.Option(min=1, help="Rounds at most.")] = 5,
    minibatch: Annotated[int, typer.Option(min=1, help="Training trays shown per reflection.")] = 8,
    metric: Annotated[str | None, typer.Option(help="Optimise this metric (default: primary).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N examples of each split.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of parent choice, minibatches and reference draws.")] = 0,
    references: Annotated[
        int,
        typer.Option(
            "--references",
            min=0,
            help="Reference changes tried per round besides the rewrites: another choice of training "
            "trays shown as references (the start must place {{ ref.image }}).",
        ),
    ] = 0,
    batch: Annotated[
        bool,
        typer.Option(
            "--batch",
            help="Evaluate with the task models' batch jobs (half price; each evaluation waits for its "
            "jobs, up to 24 h). The reflection model is asked online.",
        ),
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the call and cost bound only.")] = False,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Neither read nor write the answer cache.")
    ] = False,
    cache_path: Annotated[Path | None, typer.Option("--cache", help="Answer cache file.")] = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Let a reflection model rewrite a prompt from its failures on the training split.

    The best proposals are written as new unreleased versions (prompts/<name>/v<N>.jinja) with their
    lineage; sweep them on the evaluation split and promote as usual. Nothing is released or promoted.
    """
    from promptgrade.cache import AnswerCache
    from promptgrade.optimize.search import Optimization, Options
    from promptgrade.runner import CacheMode

    options = Options(
        prompt=prompt,
        reflection_model=reflection_model,
        max_calls=max_calls,
        max_cost_usd=max_cost_usd,
        candidates=candidates,
        max_rounds=max_rounds,
        minibatch=minibatch,
        metric=metric,
        limit=limit,
        seed=seed,
        references=references,
        batch=batch,
    )
    search = Optimization(experiment, options)
    mode = CacheMode.off() if no_cache else CacheMode(AnswerCache(cache_path))
    _search(search, dry_run=dry_run, cache=mode, tracking_uri=tracking_uri)


def _search(search: Optimization, *, dry_run: bool, cache: CacheMode, tracking_uri: str | None) -> None:
    """The plan, then (unless a dry run) the search, its report and its exit code."""
    from promptgrade.optimize.search import OptimizationInterrupted

    bound = search.bound()
    _print_plan(search, bound)
    if dry_run:
        search.check_budget(bound)
        common.console.print("[green]dry run: nothing was called[/]")
        return
    try:
        report = search.run(tracking_uri=tracking_uri, cache=cache, on_event=_say)
    except OptimizationInterrupted as stopped:
        _print_report(stopped.report)
        common.err.print("[yellow]interrupted[/] — what was found is written and logged", highlight=False)
        raise typer.Exit(130) from None
    _print_report(report)
    if report.resumable:
        common.err.print("run the same command again later: answers already paid for come from the cache")
        raise typer.Exit(3)


def _print_plan(search: Optimization, bound: Bound) -> None:
    """What will be optimised on which split, and the most it can cost — before anything is called."""
    evaluated = search.evaluated_on
    shown = "" if search.validation is None else f", failures shown from {search.train.split!r}"
    cost = "unknown (a model has no price)" if bound.cost_usd is None else f"${bound.cost_usd:.4f}"
    models = ", ".join(sorted({s.model + (" (batch)" if s.batch else "") for s in search.task_specs}))
    _say(
        f"optimise {search.start.ref} for {search.metric} with {models}; reflection: {search.reflection.model}"
    )
    _say(
        f"optimisation split {evaluated.split!r} ({len(evaluated.examples)} examples{shown}; "
        f"{len(search.train.examples)} training examples); never the evaluation split "
        f"{search.plan.experiment.dataset.split!r}"
    )
    per_round = f"{bound.per_round} proposals × {bound.proposal_calls} calls"
    if bound.references_per_round:
        per_round = (
            f"({per_round} + {bound.references_per_round} reference changes × {bound.reference_calls} calls)"
        )
    _say(
        f"bound: at most {bound.calls} calls, {cost} — start prompt {bound.seed_calls} calls, then up to "
        f"{bound.rounds} rounds × {per_round}"
    )
    if search.start.references:
        shown = ", ".join(r.id for r in search.start.references)
        _say(f"{search.start.ref} shows {len(search.start.references)} references: {shown}")


def _say(text: str) -> None:
    common.console.print(esc(text), highlight=False)


def _print_report(report: Report) -> None:
    start = report.start
    _say(f"stopped: {report.stop_reason}; {report.calls} API calls, ${report.spent_usd:.4f}")
    for node in report.nodes:
        if node.status == "rejected":
            _say(f"  rejected {node.id}: {node.reason}")
    fresh = {node.id for node, _ in report.written}
    earlier = [n for n in report.nodes if n.written_as and n.id not in fresh]
    for node in earlier:
        _say(f"{node.id} is {node.written_as}, written by an earlier run of this search")
    if not start.scores:
        _say("the start prompt was not evaluated: nothing to compare")
    elif not report.written and not earlier:
        _say(f"no proposal beat {start.score:.1%}; nothing written")
    for node, path in report.written:
        frozen = f", {len(node.references)} references frozen beside it" if node.references else ""
        _say(
            f"wrote {node.written_as} ({path}): score {start.score:.1%} → {node.score:.1%} (unreleased{frozen})"
        )
    if report.written:
        _say("next: read the diff, sweep the new versions on the evaluation split, then promote as usual")
    _say(f"MLflow run {report.run_id} in {report.tracking_uri}")
