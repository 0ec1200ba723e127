"""What the CLI prints is what the library said: brackets in a message are text, never rich markup.

rich reads ``[cnn]`` as a style tag and drops it, so "pip install 'promptgrade[cnn]'" printed raw
became "pip install 'promptgrade'" — an instruction that installs the wrong thing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from promptgrade.cli import app
from promptgrade.testing.gemini_server import FakeGemini

ROOT = Path(__file__).resolve().parents[2]
RUNNER = CliRunner(env={"COLUMNS": "200"})


WITHOUT_TORCH = """\
import importlib.abc, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoTorch())
from promptgrade.cli import app
from promptgrade.testing.gemini_server import FakeGemini
app(sys.argv[1:], prog_name="promptgrade")
"""


def test_the_cnn_skip_line_keeps_its_brackets_end_to_end(tmp_path: Path, tracking: str) -> None:
    """In a process where PyTorch cannot be imported and without credentials, the quickstart names the
    extra to install exactly as the library wrote it."""
    script = tmp_path / "promptgrade_without_torch.py"
    script.write_text(WITHOUT_TORCH, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "GOOGLE_"))}
    env.update(COLUMNS="200", NO_COLOR="1")
    command = [sys.executable, str(script), "sweep", str(ROOT / "experiments/quickstart.yaml")]
    result = subprocess.run(
        [*command, "--limit", "8", "--tracking-uri", tracking],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert "skipped cnn: install the cnn extra: pip install 'promptgrade[cnn]'" in lines, result.stdout
    # The summary table's title shows the split in brackets too.
    assert any("meal-tray-quickstart" in line and "[test]" in line for line in lines), result.stdout


def test_an_error_message_with_brackets_is_printed_whole(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(
        "name: x\ntask: tasks/[draft]/t.yaml\ndataset: {kind: folder, path: .}\nprompts: [p]\n",
        encoding="utf-8",
    )
    result = RUNNER.invoke(app, ["sweep", str(path), "--dry-run"])
    assert result.exit_code == 2
    assert " ".join(result.output.split()) == f"error: {tmp_path}/tasks/[draft]/t.yaml: task file not found"


SUMMARY_EXPERIMENT = """\
name: narrow
task: {root}/experiments/tasks/meal_tray.yaml
prompts_dir: {root}/prompts
prices: {root}/experiments/prices.yaml
base_url: {base_url}
dataset: {{kind: folder, path: {root}/data/sample, split: test, limit: 6, image_max_side: 128}}
prompts: [meal_tray_freetext@1, meal_tray_json@1]
models: [{{model: gemini-2.5-flash}}]
"""


def test_the_sweep_summary_is_readable_in_an_80_column_terminal(
    tmp_path: Path, tracking: str, gemini_server: FakeGemini, fake_api_key: str
) -> None:
    """At 80 columns each candidate is a block with its whole name and every figure; wide, a table."""
    gemini_server.default_answer = '{"categories": ["soup"], "food_remaining_pct": 40}'
    path = tmp_path / "exp.yaml"
    path.write_text(SUMMARY_EXPERIMENT.format(root=ROOT, base_url=gemini_server.base_url), encoding="utf-8")
    narrow = CliRunner(env={"COLUMNS": "80", "NO_COLOR": "1"}).invoke(
        app, ["sweep", str(path), "--tracking-uri", tracking]
    )
    assert narrow.exit_code == 0, narrow.output
    summary = narrow.output[narrow.output.index("narrow — sample [test]") :].splitlines()
    assert max(len(line) for line in summary) <= 80, summary
    text = "\n".join(summary)
    for label in ("meal_tray_json@v1 · gemini-2.5-flash", "meal_tray_freetext@v1 · gemini-2.5-flash"):
        assert label in text
    assert text.count("category ") == 2 and text.count(" · top-1 ") == 2 and text.count("parse fail") == 2
    assert "…" not in text  # nothing cut
    dry = CliRunner(env={"COLUMNS": "80", "NO_COLOR": "1"}).invoke(app, ["sweep", str(path), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert max(len(line) for line in dry.output.splitlines()) <= 80
    assert "meal_tray_json@v1 ·" in dry.output and "meal_tray_freetext@v1 ·" in dry.output
    assert "…" not in dry.output  # names wrap in their cell instead of being cut
    wide = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"}).invoke(
        app, ["sweep", str(path), "--tracking-uri", tracking]
    )
    assert wide.exit_code == 0, wide.output
    assert "category acc (95% CI)" in wide.output
