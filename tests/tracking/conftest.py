"""A real ``mlflow server`` process on a temp sqlite backend, as a team shares one: started by the
tests that need a tracking server (and only those), killed with SIGKILL by the one that loses it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers.mlflow_server import MlflowServer


@pytest.fixture
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
