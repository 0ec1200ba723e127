"""Given answers cached from one server, when the same model name is swept behind another endpoint, then
nothing is reused: a self-hosted server's model names are its own, so the endpoint is in the key."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from helpers.scripted_sweeps import write_experiment
from promptgrade.cli import app
from promptgrade.testing.gemini_server import FakeGemini

RUNNER = CliRunner(env={"COLUMNS": "240"})
N = 4
ANSWER = '{"categories": ["soup"], "food_remaining_pct": 40}'


def test_another_endpoint_is_another_model(tmp_path: Path, fake_api_key: str, tracking: str) -> None:
    with FakeGemini(default_answer=ANSWER) as first, FakeGemini(default_answer=ANSWER) as second:
        path = tmp_path / "exp.yaml"
        write_experiment(path, name="endpoint", base_url=first.base_url, n=N, prompts="meal_tray_json@1")
        assert RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", tracking]).exit_code == 0
        again = RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", tracking])
        assert again.exit_code == 0 and first.calls == N  # the same endpoint: all from the cache

        path.write_text(path.read_text().replace(first.base_url, second.base_url), encoding="utf-8")
        moved = RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", tracking])

        assert moved.exit_code == 0, moved.output
        assert second.calls == N  # the same model name elsewhere: bought again, not reused
