"""Rewrite the docs' generated blocks from the code they describe, or check that they are current.

Each block sits between two marker comments (``<!-- generated:NAME:start -->`` …
``<!-- generated:NAME:end -->``) so the prose around it stays hand-written:

* ``settings`` — every environment variable, from ``promptgrade.settings.Settings``;
* ``metrics`` — every metric name and its meaning, from ``promptgrade.metric_names``;
* ``cli`` — every command's ``--help``, from the typer app itself.

A variable, a metric or an option added in code cannot be missing from the docs: ``tests/test_docs.py``
runs ``--check`` and fails, naming this command.

    .venv/bin/python scripts/gen_docs.py            # rewrite the blocks
    .venv/bin/python scripts/gen_docs.py --check    # exit 1 if any is stale
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "python scripts/gen_docs.py"
HELP_COLUMNS = "100"


def settings_table() -> str:
    from promptgrade.settings import reference_table

    return reference_table()


def metrics_table() -> str:
    from promptgrade.metric_names import markdown_table

    return markdown_table()


def cli_reference() -> str:
    """``promptgrade --help`` and every command's and group's, at a fixed width, as shown in a terminal."""
    os.environ["COLUMNS"] = HELP_COLUMNS
    os.environ["NO_COLOR"] = "1"
    os.environ.pop("FORCE_COLOR", None)
    import typer
    from typer.testing import CliRunner

    from promptgrade.cli import app

    runner = CliRunner(env={"COLUMNS": HELP_COLUMNS, "NO_COLOR": "1", "TERM": "dumb"})
    command = typer.main.get_command(app)
    sections = []

    def walk(path: list[str], node: object) -> None:
        result = runner.invoke(app, [*path, "--help"], prog_name="promptgrade")
        title = " ".join(["promptgrade", *path])
        shown = "\n".join(line.rstrip() for line in result.output.strip("\n").splitlines())
        sections.append(f"## `{title}`\n\n```text\n{shown}\n```\n")
        for name, child in sorted(getattr(node, "commands", {}).items()):
            if not getattr(child, "hidden", False):
                walk([*path, name], child)

    walk([], command)
    return "\n".join(sections)


BLOCKS: dict[str, tuple[Path, Callable[[], str]]] = {
    "settings": (ROOT / "docs" / "reference" / "settings.md", settings_table),
    "metrics": (ROOT / "docs" / "reference" / "metrics.md", metrics_table),
    "cli": (ROOT / "docs" / "reference" / "cli.md", cli_reference),
}


def splice(text: str, name: str, block: str, path: Path) -> str:
    start, end = f"<!-- generated:{name}:start -->", f"<!-- generated:{name}:end -->"
    head, found_start, rest = text.partition(start)
    _, found_end, tail = rest.partition(end)
    if not found_start or not found_end:
        raise SystemExit(f"{path}: no {start} … {end} block")
    return f"{head}{start}\n{block.rstrip()}\n{end}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether the docs are current")
    args = parser.parse_args(argv)
    stale = []
    for name, (path, generate) in BLOCKS.items():
        current = path.read_text(encoding="utf-8")
        wanted = splice(current, name, generate(), path)
        if wanted == current:
            continue
        if args.check:
            stale.append(f"{path.relative_to(ROOT)} ({name})")
        else:
            path.write_text(wanted, encoding="utf-8")
    if stale:
        print(f"stale generated docs: {', '.join(stale)}: run `{COMMAND}`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
