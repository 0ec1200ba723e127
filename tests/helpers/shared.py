"""Session fixtures built once per test run, not once per xdist worker.

A session fixture is per process: under ``pytest -n N`` each worker that needs the Lambda zip or the
migrated MLflow store would build its own (about 25 s and 3 s of CPU on a 2-core CI machine). The first
worker to ask builds it in a folder every worker of the run shares (the parent of the workers' base
temp folders, which is new for each run); the others wait on a file lock and read the same result.
"""

from __future__ import annotations

import fcntl
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")


def once_per_run(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], T]) -> T:
    """``build(folder)`` once for the whole run; its result must pickle (paths, reports) and anything
    it writes belongs in ``folder``, which lives until the run ends."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:  # one process: pytest's own caching is enough
        return build(factory.mktemp(name))
    shared = factory.getbasetemp().parent / f"shared-{name}"
    shared.mkdir(exist_ok=True)
    result = shared / "result.pickle"
    with (shared / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if build raises
        if result.exists():
            loaded: T = pickle.loads(result.read_bytes())
            return loaded
        built = build(shared / "built")
        result.write_bytes(pickle.dumps(built))
        return built
