"""``validate-data``: every problem in a dataset before a paid call."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from promptgrade.cli import common
from promptgrade.cli.common import app, esc, user_errors
from promptgrade.errors import PromptgradeError

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
            common.console.print(table)
        if len(report.findings) > len(shown):
            hint = "" if json_path else "; --json PATH writes them all"
            common.console.print(f"… {len(report.findings) - len(shown)} more finding(s) not shown{hint}")

    def counts(numbers: dict[str, int]) -> str:
        plural = {s: s if numbers[s] == 1 or s == "info" else s + "s" for s in numbers}
        return ", ".join(f"{numbers[s]} {plural[s]}" for s in ("error", "warning", "info"))

    for summary in report.splits:
        state = "" if summary.checked else " [yellow](not read)[/]"
        common.console.print(
            f"split [bold]{esc(summary.split)}[/]{state}: {summary.n_examples} examples, {summary.usable} usable — "
            f"{counts(report.counts_for(summary.split))}"
        )
    elsewhere = report.counts_for(None)
    if any(elsewhere.values()):
        common.console.print(f"rows of other splits: {counts(elsewhere)}")

    if json_path is not None:
        try:
            json_path.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", "utf-8")
        except OSError as exc:
            raise PromptgradeError(f"cannot write findings: {exc.strerror}", path=json_path) from None
        common.console.print(esc(f"all {len(report.findings)} finding(s) written to {json_path}"))

    if report.ok:
        common.console.print(f"[green]no errors[/]: {report.usable} usable example(s)")
        return
    common.console.print(f"[bold red]{report.counts['error']} error(s)[/]: fix them before a sweep")
    raise typer.Exit(1)
