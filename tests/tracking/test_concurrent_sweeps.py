"""Given two people sweeping one experiment file a second apart, when the second sweep finds the first
one's sweep run RUNNING, then it does not attach to it: it refuses with one line naming who holds it
(exit 3), the first finishes alone with one row and one trace per example, and once the first has
finished the same command runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from mlflow import MlflowClient

from helpers.scripted_sweeps import planted_answers, write_experiment
from promptgrade.testing.gemini_server import FakeGemini

N = 8


def spawn(path: Path, tracking: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "promptgrade.cli", "sweep", str(path), "--tracking-uri", tracking],
        env={**os.environ, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def sweep_to_the_end(path: Path, tracking: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "promptgrade.cli", "sweep", str(path), "--tracking-uri", tracking],
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_second_sweep_never_joins_a_running_one(
    tmp_path: Path, gemini_server: FakeGemini, fake_api_key: str, tracking: str
) -> None:
    path = tmp_path / "exp.yaml"
    examples = write_experiment(path, name="shared", base_url=gemini_server.base_url, n=N)
    gemini_server.default_answer = planted_answers(examples, {e.id for e in examples}, set())
    # the first sweep's answers wait until the second sweep has ended: it is still running however slowly
    # the second one starts (a fixed latency lost that race on a slow machine)
    second_done = threading.Event()

    def after_the_second(info: object) -> float:
        second_done.wait(60)
        return 0.0

    gemini_server.latency_s = after_the_second
    first = spawn(path, tracking)
    deadline = time.monotonic() + 120
    while gemini_server.calls < 2:
        assert first.poll() is None, first.communicate()[0]
        assert time.monotonic() < deadline
        time.sleep(0.05)

    try:
        second = sweep_to_the_end(path, tracking)
    finally:
        second_done.set()
    output = first.communicate(timeout=300)[0]

    assert first.returncode == 0, output
    assert second.returncode == 3, second.stdout + second.stderr
    said = " ".join(second.stderr.split())
    assert "is being run by process" in said and "Traceback" not in said
    client = MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name("shared")
    sweeps = client.search_runs([experiment.experiment_id], "tags.`promptgrade.kind` = 'sweep'")
    assert [s.info.status for s in sweeps] == ["FINISHED"]
    for run in client.search_runs([experiment.experiment_id], "tags.`promptgrade.kind` = 'candidate'"):
        table = json.loads(Path(client.download_artifacts(run.info.run_id, "predictions.json")).read_text())
        assert len(table["data"]) == N  # one row per example: nobody else wrote into this run

    gemini_server.latency_s = 0.0
    after = sweep_to_the_end(path, tracking)
    assert after.returncode == 0, after.stdout + after.stderr  # the first has finished: free to sweep
