"""Fixtures shared across the suite: a local Gemini endpoint, each provider's local server in turn
(``served``), and a hermetic, fake API key."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.provider_servers import ServedProvider, serve, use_fake_gemini_key
from helpers.shared import once_per_run
from promptgrade.providers.records import NAMES
from promptgrade.testing.gemini_server import FakeGemini

NEEDS_INDEX = "needs_index"


def pytest_configure(config: pytest.Config) -> None:
    # Plots off for every sweep the suite runs — module fixtures' and subprocesses' too — unless a test is
    # marked ``plots`` or a fixture turns them back on (see ``plots_only_where_asked``).
    os.environ["PROMPTGRADE_PLOTS"] = "0"
    config.addinivalue_line(
        "markers", "traces: sweeps with per-example MLflow traces on, the default users get"
    )
    config.addinivalue_line("markers", "plots: sweeps that draw and log their plots, the default users get")
    config.addinivalue_line(
        "markers",
        f"{NEEDS_INDEX}: downloads wheels from the package index (PyPI) with uv in a subprocess, outside "
        "the loopback guard; offline, deselect with -m 'not needs_index'",
    )


# The files that keep a worker longest (seconds of a 4-worker run on 2 cores, per-test wall summed per file),
# handed out first: with `--dist loadfile --no-loadscope-reorder` (make test) xdist gives files out in
# collection order, so a long file starts while the short ones fill the other workers, instead of starting
# last and being waited for alone (xdist's own order, by number of tests, put the one-test server files
# last). A file not listed keeps its place after these; the order changes nothing else.
LONGEST_FIRST = (
    "tests/batch/test_batch_providers.py",  # 172 s
    "tests/runner/test_reliability.py",  # 165 s
    "tests/tracking/test_shared_server.py",  # 103 s
    "tests/tracking/test_tracking_server.py",  # 50 s
    "tests/shipping/test_package.py",  # 37 s
    "tests/test_promotion.py",  # 35 s
    "tests/baseline/test_baseline_sweep.py",  # 34 s
    "tests/cli/test_cli_output.py",  # 30 s
    "tests/labels/test_label_loop.py",  # 29 s
    "tests/shipping/test_package_providers.py",  # 28 s
    "tests/batch/test_batch_bedrock.py",  # 28 s
    "tests/optimize/test_optimize.py",  # 27 s
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    root = Path(str(config.rootpath))
    items.sort(key=lambda item: rank.get(item.path.relative_to(root).as_posix(), len(rank)))  # stable


@pytest.fixture(autouse=True)
def no_internet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach the internet: only loopback (the local Gemini server, moto) and unix sockets."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost") and "/" not in host:
            raise OSError(f"test tried to reach the network: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def no_package_index(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pip or uv subprocess is beyond the socket guard: unless a test is marked needs_index, pip gets
    no index and uv no network (it may still read its cache).

    So the marker is not a promise but a fact — a test that downloads without it fails.
    """
    if request.node.get_closest_marker(NEEDS_INDEX) is None:
        monkeypatch.setenv("PIP_NO_INDEX", "1")
        monkeypatch.setenv("UV_OFFLINE", "1")


@pytest.fixture(autouse=True)
def traces_only_where_asked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-example MLflow traces (on by default for users) cost about 1 s per candidate run.

    Only tests marked ``traces`` (tests/tracking/test_traces.py) run with the users' default; the others sweep
    with PROMPTGRADE_TRACE_EXAMPLES=0, which only changes the default, so a file's setting still wins.
    """
    if request.node.get_closest_marker("traces") is None:
        monkeypatch.setenv("PROMPTGRADE_TRACE_EXAMPLES", "0")
    else:
        monkeypatch.delenv("PROMPTGRADE_TRACE_EXAMPLES", raising=False)


@pytest.fixture(autouse=True)
def plots_only_where_asked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plots cost the writer about 0.2 s of CPU each, five per candidate: only tests marked ``plots``
    (the plots themselves) sweep with the users' default; a module fixture that needs them (the report's)
    sets PROMPTGRADE_PLOTS=1 itself."""
    if request.node.get_closest_marker("plots") is not None:
        monkeypatch.delenv("PROMPTGRADE_PLOTS", raising=False)


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own answer cache and dataset cache, never the developer's (or another test's)."""
    monkeypatch.setenv("PROMPTGRADE_CACHE", str(tmp_path / "answer-cache.sqlite"))
    monkeypatch.setenv("PROMPTGRADE_CACHE_DIR", str(tmp_path / "dataset-cache"))


@pytest.fixture(autouse=True)
def _mlflow_globals(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the MLflow store an earlier test pointed this process at: ``mlflow.set_*_uri``
    (which the lab's readers call) sets a global and exports ``MLFLOW_TRACKING_URI`` /
    ``MLFLOW_REGISTRY_URI``; both are put back after each test."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])  # registers the value to restore
        else:
            monkeypatch.delenv(name, raising=False)
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


@pytest.fixture(autouse=True, scope="module")
def _mlflow_globals_per_module() -> Iterator[None]:
    """The same for a module-scoped fixture (one search or sweep a module's tests read back): it runs
    before any test's ``_mlflow_globals``, which would then keep what it set; put back when the module
    ends, so a later module's client does not read another store's registry."""
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved = {name: os.environ.get(name) for name in names}
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A real HTTP moto endpoint (S3, Secrets Manager, Lambda…), as boto3 in another process (the
    unzipped Lambda, a sweep killed with -9) or a local server (Bedrock's batch jobs) can reach it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def gemini_server() -> Iterator[FakeGemini]:
    """A started fake Gemini API on 127.0.0.1, fresh per test so scripts and logs never leak."""
    with FakeGemini() as server:
        yield server


@pytest.fixture
def fake_api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """A dummy GEMINI_API_KEY for this test (see ``use_fake_gemini_key``)."""
    return use_fake_gemini_key(monkeypatch)


@pytest.fixture(scope="session")
def _migrated_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow sqlite store, migrated once per run: creating one costs seconds, copying it nothing."""

    def migrate(folder: Path) -> Path:
        from mlflow import MlflowClient

        folder.mkdir(exist_ok=True)
        path = folder / "mlflow.db"
        MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
        return path

    return once_per_run(tmp_path_factory, "mlflow-template", migrate)


@pytest.fixture
def tracking(tmp_path: Path, _migrated_mlflow_db: Path) -> str:
    """A real, empty, local MLflow store for this test (tracking and registry), as a tracking URI."""
    path = tmp_path / "mlflow.db"
    shutil.copy(_migrated_mlflow_db, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=NAMES)
def served(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServedProvider]:
    """Each provider in turn (one per record): its local server started, the environment its real
    client needs set, and a model spec that reaches it (see tests/helpers/provider_servers.py)."""
    with serve(request.param, monkeypatch=monkeypatch) as (provider,):
        yield provider
