"""``cache``, ``prompts`` and ``fake-gemini``: the small verbs around the loop."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from promptgrade.cli import common
from promptgrade.cli.common import app, esc, user_errors

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
    common.console.print(esc(f"{stats['path']}: {stats['answers']} answers, {stats['bytes'] / 1e6:.1f} MB"))
    for provider, model, count in stats["by_model"]:
        common.console.print(esc(f"  {provider}/{model}: {count}"))


@cache_app.command("clear")
@user_errors
def cache_clear(
    cache_path: CacheOpt = None,
    model: Annotated[str | None, typer.Option(help="Only this model's answers.")] = None,
) -> None:
    """Delete cached answers (all, or one model's): the next sweep pays for them again."""
    from promptgrade.cache import AnswerCache

    removed = AnswerCache(cache_path).clear(model)
    common.console.print(f"removed {removed} cached answers")


# --------------------------------------------------------------------------------------------------
# prompts
# --------------------------------------------------------------------------------------------------
prompts_app = typer.Typer(help="List, check and release versioned prompt templates.", no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")
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
    common.console.print(table)


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
    common.console.print(f"[green]{len(prompts)} prompt versions render and match the lock[/]")


@prompts_app.command("release")
@user_errors
def prompts_release(
    ref: Annotated[str, typer.Argument(help="name@version to freeze, e.g. meal_tray_json@2.")],
    directory: PromptsDir = Path("prompts"),
    experiment: Annotated[
        Path | None,
        typer.Option(
            "--experiment",
            help="For a version whose references come by a rule: the experiment whose dataset they are "
            "drawn from (never from its evaluated split).",
        ),
    ] = None,
    task: Annotated[Path, typer.Option(help="Task file its references' labels are checked against.")] = Path(
        "experiments/tasks/meal_tray.yaml"
    ),
) -> None:
    """Freeze a version: record its sha256 in prompts/released.lock (commit that file).

    A version that shows reference images has them copied beside it first (v<N>/refs/ and
    v<N>/references.json), and their hashes enter its sha256: they are frozen with its text.
    """
    from promptgrade.config import load_experiment
    from promptgrade.errors import PromptError
    from promptgrade.prompts import PromptLibrary
    from promptgrade.reference_sets import freeze_for_release
    from promptgrade.task import load_task

    name, _, version = ref.partition("@")
    version = version.removeprefix("v")
    if not version.isdigit():
        raise PromptError(f"{ref!r}: expected name@<version number>")
    library = PromptLibrary(directory)
    prompt = library.get(name, int(version))
    if prompt.reference_spec is not None and not prompt.references:
        loaded = load_experiment(experiment) if experiment is not None else None
        task_path = loaded.resolve(loaded.task) if loaded is not None else task
        prompt = freeze_for_release(prompt, library, load_task(task_path), loaded)
        common.console.print(
            esc(f"froze {len(prompt.references)} reference images beside {prompt.ref}: {prompt.source[:-6]}/")
        )
    if library.release(prompt):
        common.console.print(
            esc(f"released {prompt.ref} ({prompt.sha256[:12]}…) — commit {library.lock_path}")
        )
    else:
        common.console.print(esc(f"{prompt.ref} was already released"))


# --------------------------------------------------------------------------------------------------
# the local Gemini-REST server, for demos
# --------------------------------------------------------------------------------------------------
@app.command("fake-gemini")
@user_errors
def fake_gemini(
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8765,
    answers: Annotated[
        Path | None,
        typer.Option(
            help="JSON file: image sha256 → answer text, or per prompt as data/demo_answers.json does."
        ),
    ] = None,
    latency: Annotated[float, typer.Option(help="Seconds before each answer.")] = 0.0,
    default_answer: Annotated[
        str | None, typer.Option(help="Answer text for images not in --answers (default: an empty answer).")
    ] = None,
    keep_alive: Annotated[
        bool,
        typer.Option(
            "--keep-alive",
            help="Keep connections open between requests, as the real API does (default: one per request).",
        ),
    ] = False,
) -> None:
    """Serve a local stand-in for the Gemini REST API (scripted answers), for demos and offline runs."""
    from promptgrade.testing import gemini_server

    default = gemini_server.DEFAULT_ANSWER if default_answer is None else default_answer
    gemini_server.serve(port, answers, default_answer=default, latency=latency, keep_alive=keep_alive)
