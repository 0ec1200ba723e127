"""Given a sweep where two prompts tie on every metric and a third ties on the primary one only, when I
ask each command for the best candidate, then the sweep, ``compare``, ``report``, ``label export`` and
``promote`` all name the same one: the tied candidate listed first in the experiment file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.scripted_sweeps import write_experiment
from promptgrade.cli import app
from promptgrade.testing.answer_files import ScriptedAnswers
from promptgrade.testing.gemini_server import FakeGemini

RUNNER = CliRunner(env={"COLUMNS": "240"})
N = 12
PROMPTS = "meal_tray_freetext@1, meal_tray_json@1, meal_tray_anchors@1"
PHRASES = {  # a phrase only each prompt's text has: how the local server tells them apart
    "meal_tray_freetext": "Answer in exactly this format",
    "meal_tray_json": "Allowed dish categories",
    "meal_tray_anchors": "Judge the area of each dish",
}
EXPECTED = "meal_tray_freetext@v1"  # tied with anchors on everything, and listed before it


def _answer(categories: list[str], grade: float, *, text: bool) -> str:
    if text:
        return f"Category: {', '.join(categories)}\nFood %: {grade:g}%"
    return json.dumps({"categories": categories, "food_remaining_pct": grade})


@pytest.fixture
def tied(tmp_path: Path, tracking: str, gemini_server: FakeGemini, fake_api_key: str) -> Path:
    """Every prompt names the right dishes on the same 9 of 12 trays (a tie on category_accuracy);
    free text and anchors also grade the same 9 right, JSON only 6 (it loses the first tie-break)."""
    path = tmp_path / "tie.yaml"
    examples = write_experiment(path, name="tie", base_url=gemini_server.base_url, n=N, prompts=PROMPTS)
    answers: dict[str, str | dict[str, str]] = {}
    for index, example in enumerate(examples):
        truth, grade = list(example.labels.categories), example.labels.grade or 0.0
        right = index < 9
        categories = truth if right else ["snack"]
        off = 100.0 if grade < 50 else 0.0
        answers[example.image.sha256] = {
            "meal_tray_freetext": _answer(categories, grade if right else off, text=True),
            "meal_tray_json": _answer(categories, grade if index < 6 else off, text=False),
            "meal_tray_anchors": _answer(categories, grade if right else off, text=False),
        }
    gemini_server.default_answer = ScriptedAnswers(answers, PHRASES)
    swept = RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", tracking])
    assert swept.exit_code == 0, swept.output
    best = re.search(r"best by category_accuracy: (\S+)", swept.output)
    assert best is not None and best[1] == EXPECTED, swept.output
    return path


def named_by(args: list[str], pattern: str, tracking: str) -> str:
    """Run a command and return the candidate its output names where ``pattern``'s group stands."""
    result = RUNNER.invoke(app, [*args, "--tracking-uri", tracking])
    assert result.exit_code == 0, result.output
    found = re.search(pattern, result.output)
    assert found is not None, result.output
    return found[1]


def test_every_command_names_the_same_best_candidate(tied: Path, tracking: str, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    named = {
        "compare": named_by(["compare", str(tied)], r"★ │ [0-9a-f]{8} │ (\S+)", tracking),
        "label export": named_by(
            [
                "label",
                "export",
                str(tied),
                "--out",
                str(tmp_path / "t.json"),
                "--config",
                str(tmp_path / "c.xml"),
            ],
            r"pre-annotations: \d+ from (\S+)",
            tracking,
        ),
        "report": named_by(["report", str(tied), "--out", str(report)], r"report written to (\S+)", tracking),
        "promote": named_by(
            ["promote", "-e", str(tied), "--min-examples", "10", "--bundle-dir", str(tmp_path / "bundle")],
            r"promoted (\S+)",
            tracking,
        ),
    }
    first = re.search(r'<tr class="candidate best">\s*<td>★</td><td>([^<]+)</td>', report.read_text())
    assert first is not None
    named["report"] = first[1].split(" · ")[0]  # the report's starred row, its candidate's label
    assert named == dict.fromkeys(named, EXPECTED)
