"""A real ``mlflow server`` process on a temp sqlite backend, as a team shares one: started by the
tests that need a tracking server (and only those), killed with SIGKILL by the one that loses it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers.mlflow_server import MlflowServer


@pytest.fixture
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A server of the test's own: the test may kill it."""
    with MlflowServer(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


@pytest.fixture(scope="module")
def shared_mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One server for a module's tests, which keep apart by experiment name (a start costs seconds)."""
    with MlflowServer(tmp_path_factory.mktemp("shared-mlflow-server")) as server:
        yield server
