"""`promptgrade ui` serves the MLflow UI on the same store the sweeps write to."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from mlflow import MlflowClient

from helpers.net import free_port


def test_ui_serves_the_sweeps_store(tracking: str, tmp_path: Path) -> None:
    MlflowClient(tracking_uri=tracking).create_experiment("seen-in-the-ui")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "promptgrade.cli", "ui", "--port", str(port), "--tracking-uri", tracking],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=10"
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    names = {e["name"] for e in json.load(response)["experiments"]}
                break
            except OSError:
                assert time.monotonic() < deadline, "the MLflow UI did not start"
                time.sleep(0.5)
        assert "seen-in-the-ui" in names
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            assert response.status == 200
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server and any worker it started
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def test_ui_against_a_tracking_server_points_at_its_own_ui(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "promptgrade.cli", "ui", "--tracking-uri", "http://127.0.0.1:5999"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.strip() == "the tracking server's UI is at http://127.0.0.1:5999/ — open it in a browser"
    )
    assert "Traceback" not in done.stderr
