"""A sweep as the user runs it (the CLI, in process) and what the tests read back from MLflow."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from mlflow import MlflowClient
from mlflow.entities import Run
from typer.testing import CliRunner

from helpers.provider_servers import use_fake_gemini_key
from promptgrade.cli import app
from promptgrade.config import load_experiment
from promptgrade.data.examples import Example
from promptgrade.data.loaders import load_dataset_split
from promptgrade.task import load_task
from promptgrade.testing.gemini_server import FakeGemini

# The metrics that say what a candidate scored: equal when the same answers were scored, however
# they were fetched (cache, batch, a resumed sweep). Latency is not among them.
ACCURACY_METRICS = (
    "category_accuracy",
    "category_top1_accuracy",
    "grade_accuracy",
    "grade_mae",
    "parse_failure_rate",
    "error_rate",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "n_examples",
)


def sweep(path: Path, tracking: str, *args: str, columns: int = 200) -> Result:
    """``promptgrade sweep PATH --tracking-uri TRACKING ARGS…``; ``columns`` wide enough that tables and
    one-line messages are not wrapped."""
    runner = CliRunner(env={"COLUMNS": str(columns)})
    return runner.invoke(app, ["sweep", str(path), "--tracking-uri", tracking, *args])


def candidate_runs(tracking: str, experiment: str) -> list[Run]:
    """The experiment's candidate runs, oldest first (then by prompt): a later sweep's runs come last."""
    client = MlflowClient(tracking_uri=tracking)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r} in {tracking}"
    runs = client.search_runs([found.experiment_id], "tags.`promptgrade.kind` = 'candidate'")
    return sorted(runs, key=lambda run: (run.info.start_time, run.data.params.get("prompt_name", "")))


def examples_of(path: Path, split: str | None = None) -> list[Example]:
    """The trays an experiment file sweeps (its dataset's split, or ``split``), by id: loaded as the sweep
    loads them, so their ``image.sha256`` is what the local server sees."""
    experiment = load_experiment(path)
    task = load_task(experiment.resolve(experiment.task))
    dataset = load_dataset_split(experiment.dataset, task, experiment.base_dir, split=split)
    return sorted(dataset.examples, key=lambda e: e.id)


def run_connected(sweep: Any) -> list[Any]:
    """A connected ``Sweep``'s runnable candidates through ``run_sweep`` only — no MLflow — on a fresh
    event loop, releasing what its providers bound to it: for tests about the runner itself."""
    import asyncio

    from promptgrade.runner import run_sweep

    providers = sweep.providers or {}

    async def go() -> Any:
        try:
            return await run_sweep(sweep.plan, sweep.dataset, sweep.runnable, providers)
        finally:
            for provider in providers.values():
                await provider.aclose()

    return list(asyncio.run(go()))


@dataclass(frozen=True)
class ModuleLab:
    """A module fixture's own folder, MLflow store, local Gemini server and environment."""

    folder: Path
    tracking: str
    server: FakeGemini
    env: pytest.MonkeyPatch


@contextmanager
def module_lab(factory: pytest.TempPathFactory, migrated_db: Path, name: str) -> Iterator[ModuleLab]:
    """What the function fixtures give a test (its store copied from the migrated one, its own answer and
    dataset caches, a dummy key, traces off), for one sweep that a module's tests only read."""
    folder = factory.mktemp(name)
    shutil.copy(migrated_db, folder / "mlflow.db")
    with pytest.MonkeyPatch.context() as env, FakeGemini() as server:
        use_fake_gemini_key(env)
        env.setenv("PROMPTGRADE_CACHE", str(folder / "cache.sqlite"))
        env.setenv("PROMPTGRADE_CACHE_DIR", str(folder / "dataset-cache"))
        env.setenv("PROMPTGRADE_TRACE_EXAMPLES", "0")
        yield ModuleLab(folder, f"sqlite:///{folder / 'mlflow.db'}", server, env)
