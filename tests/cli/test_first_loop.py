"""Given a fresh copy of the repository's experiments, prompts and data, when I type the README's offline
first loop — the commands of its "A first loop, offline" block, in order, in an 80-column terminal —
then every step exits 0 without a traceback, the sweep names a winner, ``compare`` prints run ids that
``compare --runs`` takes and that show flips both ways, and ``promote`` writes the bundle.

The commands are read from the README itself, so the walk-through cannot drift from what runs. The
stand-in is started as the README starts it, on a free port instead of 8765 (other tests, and other
people, may hold that one): the exported base URL follows it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from helpers import ROOT
from helpers.net import free_port
from promptgrade.cli import app

RUNNER = CliRunner(env={"COLUMNS": "80"})  # a newcomer's terminal
SECTION = "## A first loop, offline"


def first_loop() -> list[list[str]]:
    """The README's first-loop commands, as a shell would split them (comments dropped)."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split(SECTION, 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def fresh_copy(tmp_path: Path) -> Path:
    """What a clone holds that the loop reads: experiments, prompts, the sample set, the demo answers."""
    copy = tmp_path / "clone"
    for folder in ("experiments", "prompts", "data/sample"):
        shutil.copytree(ROOT / folder, copy / folder)
    shutil.copy(ROOT / "data" / "demo_answers.json", copy / "data" / "demo_answers.json")
    return copy


def start(argv: list[str], cwd: Path, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "promptgrade.cli", *argv, "--port", str(port)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            assert time.monotonic() < deadline, "the stand-in did not start"
            time.sleep(0.2)


def stop(process: subprocess.Popen[bytes]) -> str:
    os.killpg(process.pid, signal.SIGTERM)
    output, _ = process.communicate(timeout=20)
    return output.decode()


def flat(result: Result) -> str:
    """The output as one line: an 80-column terminal wraps long lines anywhere between words."""
    return " ".join(result.output.split())


def test_the_readme_first_loop_runs_as_written_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_api_key: str
) -> None:
    clone, port = fresh_copy(tmp_path), free_port()
    monkeypatch.chdir(clone)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default store: ./mlflow.db of the clone
    commands = first_loop()
    assert [c[:2] for c in commands if c[0] == "promptgrade"] == [
        ["promptgrade", "fake-gemini"],
        ["promptgrade", "sweep"],
        ["promptgrade", "compare"],
        ["promptgrade", "compare"],
        ["promptgrade", "report"],
        ["promptgrade", "promote"],
    ]
    server: subprocess.Popen[bytes] | None = None
    placeholders: dict[str, str] = {}
    done: list[tuple[list[str], Result]] = []
    server_output = ""
    try:
        for argv in commands:
            if argv[0] == "source":
                continue  # this test already runs in the venv
            if argv[:2] == ["promptgrade", "fake-gemini"]:
                assert argv[-1] == "&"
                server = start(argv[1:-1], clone, port)
            elif argv[0] == "export":
                for assignment in argv[1:]:
                    name, _, value = assignment.partition("=")
                    monkeypatch.setenv(name, value.replace(":8765", f":{port}"))
            elif argv[0] == "kill":
                assert server is not None
                server_output = stop(server)
                server = None
            else:
                assert argv[0] == "promptgrade", argv
                args = [placeholders.get(arg, arg) for arg in argv[1:]]
                result = RUNNER.invoke(app, args)
                assert result.exit_code == 0 and "Traceback" not in result.output, (args, result.output)
                done.append((args, result))
                if args[0] == "compare" and "--runs" not in args:
                    ids = re.findall(r"│\s*★?\s*│ ([0-9a-f]{8}) │", result.output)
                    placeholders = {"RUN_A": ids[0], "RUN_B": ids[1]}  # the table's first two rows
    finally:
        if server is not None:
            stop(server)

    (_, sweep), (_, table), (_, flips), (_, report), (_, promote) = done
    assert "best by category_accuracy: meal_tray_anchors@v1" in flat(sweep)
    assert "192 API calls" in flat(sweep)
    # the stand-in bills images as the price table documents Gemini 3 (1,120 tokens each): the dry run's
    # estimate and the bill agree, as they should against the API
    billed = re.findall(r"estimated ([\d,]+), actual ([\d,]+) \(([+-]?\d+)%\)", flat(sweep))
    assert len(billed) == 3 and all(estimate == actual for estimate, actual, _ in billed), billed
    assert re.search(r"★ │ [0-9a-f]{8} │", table.output)
    # at 80 columns every name and figure is whole (they were all cut to "me…"), prompt over model
    assert "…" not in table.output and "top-1, errors, p50 ms: in a wider terminal" in flat(table)
    for prompt in ("meal_tray_anchors@v1", "meal_tray_json@v1", "meal_tray_freetext@v1"):
        assert re.search(rf"│ {prompt} +│.*\n.*│ gemini-3-flash-preview +│", table.output), table.output
    assert len(re.findall(r"│ 0\.\d{4} │", table.output)) == 3  # the cost of each, whole
    assert "category: A right, B wrong on 10; B right, A wrong on 5" in flat(flips)
    assert "A = meal_tray_anchors@v1" in flat(flips) and "B = meal_tray_json@v1" in flat(flips)
    # 80 columns: one line per flipped tray (ids whole), the raw answers left to a wider terminal
    assert len(re.findall(r"│ tray-\d{4} │ (?:category|grade) +│", flips.output)) == 10 + 5 + 8 + 3
    assert "the raw answers: in a wider terminal" in flat(flips)
    assert (
        "report written to report.html" in flat(report) and (clone / "report.html").stat().st_size > 100_000
    )
    assert "promoted meal_tray_anchors@v1" in flat(promote)
    # the promotion table at 80 columns: one column per candidate, every interval whole
    assert "…" not in promote.output and re.search(r"winner \([0-9a-f]{8}\)", promote.output)
    assert (
        len(re.findall(r"│ category accuracy +│ +\d+% \(\d+%–\d+%\) │ +\d+% \(\d+%–\d+%\) │", promote.output))
        == 1
    )
    assert (clone / "lambda_handler" / "bundle" / "manifest.json").is_file()
    assert "is not in" not in server_output  # every tray the sweep sent was scripted
