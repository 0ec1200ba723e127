"""A real ``mlflow server`` process on a temp sqlite backend, as a team shares one: started by the
tests that need a tracking server (and only those), killed with SIGKILL by the one that loses it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.mlflow_server import MlflowServer


@pytest.fixture
def mlflow_server(
    tmp_path_factory: pytest.TempPathFactory, _migrated_mlflow_db: Path
) -> Iterator[MlflowServer]:
    """A server of the test's own: the test may kill it."""
    with MlflowServer(tmp_path_factory.mktemp("mlflow-server"), _migrated_mlflow_db) as server:
        yield server


@pytest.fixture(scope="session")
def shared_mlflow_server(
    tmp_path_factory: pytest.TempPathFactory, _migrated_mlflow_db: Path
) -> Iterator[MlflowServer]:
    """One server for every test that does not kill it (they keep apart by experiment name): a start
    costs seconds. They are one module, and `make test` hands a module to one worker (--dist loadfile)."""
    with MlflowServer(tmp_path_factory.mktemp("shared-mlflow-server"), _migrated_mlflow_db) as server:
        yield server
