"""What every verb of the ``promptgrade`` command shares: the typer app, the consoles, escaping, errors.

Every PromptgradeError becomes one red line and a non-zero exit; a traceback means a bug in
promptgrade, never a mistake of the user's.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from promptgrade.errors import PromptgradeError

app = typer.Typer(
    help="Prompt-engineering experiments for multimodal LLMs that classify and grade images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

console = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def esc(value: object) -> str:
    """Text from outside (messages, names, paths, answers) shown through rich: brackets stay brackets.

    rich reads ``[cnn]`` as a markup tag and silently drops it; every interpolated value goes through
    here so that only our own styling is markup.
    """
    return escape(str(value))


def fits(columns: list[list[str]]) -> bool:
    """Whether a rich table of these columns (header first, then cells) fits the terminal with no cell
    cut or wrapped: the layouts that cannot keep every cell whole at 80 columns choose another."""
    lines = [max(len(line) for cell in column for line in cell.splitlines() or [""]) for column in columns]
    return sum(lines) + 3 * len(columns) + 1 <= console.width


@app.callback()
def _setup() -> None:
    # Consoles are made per invocation so they see the terminal (and COLUMNS) of this run; MLflow's
    # own INFO lines (database migrations) and artifact progress bars are noise to a user reading a
    # summary table. (Imported here, not at the top: `promptgrade --help` does not load pydantic.)
    from promptgrade.settings import set_library_default

    global console, err
    console, err = Console(), Console(stderr=True)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    set_library_default("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow's telemetry thread edits os.environ while other threads' requests read it (a KeyError
    # against a tracking server): off before any thread starts, unless the user set it themselves
    set_library_default("MLFLOW_DISABLE_TELEMETRY", "true")


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


def experiment_name(experiment: str) -> str:
    if experiment.endswith((".yaml", ".yml")):
        from promptgrade.config import load_experiment

        return load_experiment(experiment).name
    return experiment
