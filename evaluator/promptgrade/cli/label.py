"""``label export|import|suspects``: the labelling loop's verbs, thin over ``labels``."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from promptgrade.cli import common
from promptgrade.cli.common import TrackingOpt, app, esc, user_errors
from promptgrade.errors import ConfigError

label_app = typer.Typer(
    help="Grow the ground truth with Label Studio: export tasks, import labels, find suspect labels.",
    no_args_is_help=True,
)
app.add_typer(label_app, name="label")

ExperimentArg = Annotated[Path, typer.Argument(help="Experiment file (experiments/<name>.yaml).")]
RunOpt = Annotated[
    str | None,
    typer.Option(
        "--run",
        help="Candidate run (id or its first 6+ characters, or name@version or baseline:<kind> of the "
        "latest sweep); default: the best.",
    ),
]


@label_app.command("export")
@user_errors
def export(
    experiment: ExperimentArg,
    out: Annotated[Path, typer.Option("--out", help="Label Studio import file to write.")] = Path(
        "tasks.json"
    ),
    config: Annotated[Path, typer.Option("--config", help="Labelling config (XML) to write.")] = Path(
        "label_config.xml"
    ),
    run: RunOpt = None,
    latest: Annotated[
        bool, typer.Option("--latest", help="The best candidate of the latest sweep (the default).")
    ] = False,
    split: Annotated[str | None, typer.Option(help="Split to label (default: the experiment's).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the N most useful tasks.")] = None,
    embed: Annotated[bool, typer.Option("--embed", help="Images as data URLs inside the tasks.")] = False,
    document_root: Annotated[
        Path | None,
        typer.Option(help="LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (default: the dataset folder)."),
    ] = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Write Label Studio tasks, most useful first, pre-annotated with the chosen candidate's answers."""
    from promptgrade.labels.exporter import build_export

    if run is not None and latest:
        raise ConfigError("pass --run or --latest, not both")
    report = build_export(
        experiment,
        tracking_uri=tracking_uri,
        run=run,
        split=split,
        limit=limit,
        embed=embed,
        document_root=document_root,
    )
    report.write(out, config)
    pre = sum(1 for t in report.tasks if t.get("predictions"))
    tiers = ", ".join(f"{n} {tier}" for tier, n in report.tiers.items())
    common.console.print(
        esc(f"{len(report.tasks)} tasks of split {report.split!r} → {out} ({tiers})"), highlight=False
    )
    common.console.print(
        esc(
            f"pre-annotations: {pre} from {report.sweep.chosen.name} (run {report.sweep.chosen.run_id[:8]}, "
            f"sweep {report.sweep.sweep_run_id[:8]}); labelling config → {config}"
        ),
        highlight=False,
    )
    if report.labels_path is not None:
        common.console.print(esc(f"labels file: {report.labels_path} (its sha256 is in every task)"))
    for note in report.notes:
        common.console.print(f"[yellow]note:[/] {esc(note)}", highlight=False)
    for task in report.tasks[:5]:
        common.console.print(
            esc(f"  {task['data']['example_id']}: {task['data']['reason']}"), highlight=False
        )


class Prefer(StrEnum):
    none = "none"
    latest = "latest"


@label_app.command("import")
@user_errors
def import_(
    experiment: ExperimentArg,
    export_file: Annotated[Path, typer.Argument(help="Label Studio JSON export.")],
    labels: Annotated[
        Path | None, typer.Option("--labels", help="Labels CSV to merge into (default: the dataset's).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change; write nothing.")
    ] = False,
    prefer: Annotated[
        Prefer, typer.Option(help="When annotators disagree: refuse (none), or the latest annotation wins.")
    ] = Prefer.none,
) -> None:
    """Merge a Label Studio export into the labels: atomic, previous file kept, nothing lost."""
    from promptgrade.labels.importer import plan_experiment_import, refusal
    from promptgrade.labels.studio import format_labels

    plan = plan_experiment_import(
        experiment, export_file, labels=labels, prefer="latest" if prefer is Prefer.latest else "none"
    )
    target, task = plan.labels.path, plan.task
    for issue in plan.notes:
        common.console.print(f"[yellow]note:[/] {esc(issue)}", highlight=False)
    if len(plan.fatal) > 1:
        for issue in plan.fatal:
            common.err.print(f"[bold red]error:[/] {esc(issue)}", highlight=False, soft_wrap=True)
    table = Table(title=esc(f"{target}: {len(plan.changes)} change(s)"))
    for column in ("example", "", "old", "new", "by", "task"):
        table.add_column(column)
    for change in plan.changes:
        table.add_row(
            esc(change.example_id),
            change.kind,
            esc(format_labels(change.old_categories, change.old_grade, task)),
            esc(format_labels(change.new_categories, change.new_grade, task)),
            esc(change.annotator),
            esc(", ".join(str(t) for t in change.task_ids)),
        )
    if plan.changes:
        common.console.print(table)
    added = sum(c.kind == "added" for c in plan.changes)
    summary = f"{added} added, {len(plan.changes) - added} changed, {plan.unchanged} unchanged"
    if plan.fatal:
        raise refusal(plan.fatal)
    if dry_run:
        common.console.print(esc(f"dry run: {summary}; nothing written"), highlight=False)
        return
    backup = plan.write()
    if backup is None:
        common.console.print(esc(f"{summary}: nothing to write"), highlight=False)
        return
    common.console.print(
        esc(f"{summary} → {target} (previous file kept as {backup} and in {target.name}.history/)"),
        highlight=False,
    )


@label_app.command("suspects")
@user_errors
def suspects(
    experiment: ExperimentArg,
    run: RunOpt = None,
    min_accuracy: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="A candidate votes if its accuracy is at least this.")
    ] = 0.5,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the suspects to this JSON file.")
    ] = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Examples whose label the sweep's good candidates (and baseline) contradict: probably wrong."""
    from promptgrade.labels.suspects import find_suspects

    report = find_suspects(experiment, tracking_uri=tracking_uri, run=run, min_accuracy=min_accuracy)
    common.console.print(
        esc(
            f"{len(report.suspects)} suspect label(s) among {report.examples} examples; voting (accuracy ≥ "
            f"{min_accuracy:g}): {len(report.category_voters)} candidate(s) on categories, "
            f"{len(report.grade_voters)} on grades"
        ),
        highlight=False,
    )
    for name in dict.fromkeys([*report.category_voters, *report.grade_voters]):
        common.console.print(esc(f"  voter: {name}"), highlight=False)
    if report.suspects:
        table = Table()
        for column in ("example", "field", "label", "good candidates say", "quality", "flagged by"):
            table.add_column(column)
        for suspect in report.suspects:
            table.add_row(
                esc(suspect.example_id),
                esc(suspect.field),
                esc(suspect.label),
                esc(suspect.candidates_say),
                "–" if suspect.quality is None else f"{suspect.quality:.3f}",
                ", ".join(suspect.flagged_by),
            )
        common.console.print(table)
    if json_path is not None:
        report.write_json(json_path)
        common.console.print(esc(f"written to {json_path}"))
