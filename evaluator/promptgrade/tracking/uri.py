"""Where a command's MLflow store is, decided without importing mlflow.

A sweep's process never imports mlflow (its writer process does, in parallel with loading the
dataset), so the store's address and the tracing default are resolved here, in a module that costs
nothing to import.
"""

from __future__ import annotations

import re
from pathlib import Path

from promptgrade.settings import load_settings

DEFAULT_DB = "mlflow.db"


def tracking_uri(explicit: str | None = None) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else a sqlite file in the working directory."""
    return explicit or load_settings().mlflow_tracking_uri or f"sqlite:///{Path(DEFAULT_DB).resolve()}"


def default_trace_examples() -> bool:
    """``trace_examples`` when the experiment file does not say: on, unless PROMPTGRADE_TRACE_EXAMPLES=0.

    The variable lets a whole CI (or this project's own test suite) turn the per-example traces off
    without editing every experiment; an explicit setting in the file always wins.
    """
    return load_settings().trace_examples


def artifact_location(uri: str, experiment_name: str) -> str | None:
    """Artifacts beside a local sqlite store (not in whatever directory the command ran from)."""
    if not uri.startswith("sqlite:///"):
        return None  # a tracking server decides where its artifacts live
    folder = Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts"
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", experiment_name).strip("-") or "experiment"
    return (folder / safe).resolve().as_uri()
