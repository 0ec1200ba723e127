"""Given a port some process already listens on, when I start ``fake-gemini`` or ``ui`` on it, then I
get one line naming the port (and, where the system tells, the process holding it) with a free port to
pass instead, and a non-zero exit — not a traceback, and not a URL nothing serves."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from promptgrade.cli import app
from promptgrade.ports import PortInUseError, check_free, free_port

RUNNER = CliRunner(env={"COLUMNS": "400"})


@pytest.fixture
def held() -> Iterator[int]:
    """A port this test process listens on."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield int(server.getsockname()[1])


def one_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


def test_fake_gemini_on_a_busy_port_is_one_line(held: int) -> None:
    result = RUNNER.invoke(app, ["fake-gemini", "--port", str(held)])
    assert result.exit_code == 2
    line = one_line(result.output)
    assert f"error: port {held} on 127.0.0.1 is already in use" in line
    suggested = int(line.rsplit("--port ", 1)[1].split()[0])
    check_free("127.0.0.1", suggested)  # the port it suggests is free
    if Path("/proc/net/tcp").exists():
        assert f"by process {os.getpid()} (" in line  # this test holds it, and the line says so


def test_ui_on_a_busy_port_says_so_before_starting_mlflow(held: int, tracking: str, tmp_path: Path) -> None:
    """As a process: ``ui`` replaces itself with MLflow's server once the port is found free."""
    result = subprocess.run(
        [sys.executable, "-m", "promptgrade.cli", "ui", "--port", str(held), "--tracking-uri", tracking],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "MLflow UI" not in result.stdout  # no URL it would not serve
    line = one_line(result.stderr)
    assert f"port {held} on 127.0.0.1 is already in use" in line and "--port" in line


def test_a_free_port_passes_and_the_suggestion_is_near_the_asked_one(held: int) -> None:
    with pytest.raises(PortInUseError, match=f"port {held}"):
        check_free("127.0.0.1", held)
    check_free("127.0.0.1", 0)  # any free port: nothing to check
    assert held < free_port("127.0.0.1", held) <= 65535
