"""Promotion against production with several challengers: each challenger's exact McNemar p-value
against the incumbent is Holm-adjusted over every eligible challenger of the sweep, the decision
uses the adjusted p, and ``promotion.json`` records both — all equal to values worked out by hand
from the planted discordant counts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner, Result

from helpers.scripted_sweeps import planted_by, write_experiment
from promptgrade.bundle import load_bundle
from promptgrade.cli import app
from promptgrade.data.examples import Example
from promptgrade.stats import holm, mcnemar
from promptgrade.testing.gemini_server import FakeGemini, RequestInfo

RUNNER = CliRunner(env={"COLUMNS": "200"})
N = 40
MODELS = "[{model: gemini-2.5-flash}, {model: gemini-2.5-pro}]"
PROMPTS = "meal_tray_json@1, meal_tray_freetext@1"
# candidates by (prompt is JSON, model); production is JSON on flash
PRODUCTION = (True, "gemini-2.5-flash")
TEXT_FLASH, JSON_PRO, TEXT_PRO = (
    (False, "gemini-2.5-flash"),
    (True, "gemini-2.5-pro"),
    (False, "gemini-2.5-pro"),
)
Plan = dict[tuple[bool, str], range]  # the trays (by rank of id) each candidate answers right


def test_holm_by_hand() -> None:
    # sorted: 0.01 × 4 = 0.04; 0.02 × 3 = 0.06; 0.03 × 2 = 0.06 (monotone); 0.5 × 1 = 0.5
    assert holm([0.03, 0.5, 0.01, 0.02]) == pytest.approx([0.06, 0.5, 0.04, 0.06])
    assert holm([0.4, 0.9]) == pytest.approx([0.8, 0.9])
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1
    assert holm([0.02]) == [0.02] and holm([]) == []


def test_exact_mcnemar_by_hand() -> None:
    # 6 discordant, all one way: 2 / 2^6; 4 one way and 3 the other: 2·(1 + 7 + 21 + 35) / 2^7 = 1
    assert mcnemar([False] * 6, [True] * 6).p_value == pytest.approx(2 / 64)
    assert mcnemar([False] * 4 + [True] * 3, [True] * 4 + [False] * 3).p_value == 1.0


@dataclass
class Lab:
    """One MLflow store and one scripted Gemini server: sweep with planted answers, promote, read back."""

    path: Path
    examples: list[Example]
    server: FakeGemini
    tracking: str

    def cli(self, *args: str) -> Result:
        return RUNNER.invoke(app, [*args, "--tracking-uri", self.tracking])

    def sweep(self, plan: Plan) -> None:
        """Each candidate answers the trays of its range right, the others wrong (the first 40 test
        trays of the sample set: none of them has the "snack" a wrong answer names)."""
        rank = {e.id: i for i, e in enumerate(self.examples)}

        def right(example: Example, request: RequestInfo) -> bool:
            return rank[example.id] in plan[(request.has_response_schema, request.model.rpartition("/")[2])]

        self.server.default_answer = planted_by(self.examples, right)
        swept = self.cli("sweep", str(self.path), "--no-cache")  # other answers each time: no replay
        assert swept.exit_code == 0, swept.output

    def promote(self, bundle: Path, *extra: str) -> Result:
        return self.cli("promote", "-e", "holm", "--bundle-dir", str(bundle), *extra)

    def record(self, bundle: Path) -> dict[str, Any]:
        """The promoted run's promotion.json."""
        client = MlflowClient(tracking_uri=self.tracking)
        run_id = load_bundle(bundle).manifest.provenance.run_id or ""
        return json.loads(Path(client.download_artifacts(run_id, "promotion.json")).read_text())

    def family(self, data: dict[str, Any]) -> dict[tuple[bool, str], tuple[float, float]]:
        """Challenger (JSON prompt?, model) → (raw p, Holm-adjusted p), as promotion.json has them."""
        holm_record = data["multiple_comparisons"]
        assert holm_record["method"] == "holm" and holm_record["metric"] == "category_accuracy"
        assert holm_record["family_size"] == len(holm_record["challengers"])
        client = MlflowClient(tracking_uri=self.tracking)
        found = {}
        for challenger in holm_record["challengers"]:
            params = client.get_run(challenger["run_id"]).data.params
            key = (params["prompt_name"] == "meal_tray_json", params["model"])
            found[key] = (challenger["p_value"], challenger["adjusted_p_value"])
        return found


@pytest.fixture
def lab(tmp_path: Path, gemini_server: FakeGemini, tracking: str, fake_api_key: str) -> Lab:
    """JSON on flash, right on the first 20 trays, is promoted to production first (with no
    production before it, nothing is Holm-adjusted: the tests against the runner-up gate nothing)."""
    path = tmp_path / "exp.yaml"
    examples = write_experiment(
        path, name="holm", base_url=gemini_server.base_url, n=N, prompts=PROMPTS, models=MODELS
    )
    lab = Lab(path, examples, gemini_server, tracking)
    lab.sweep({PRODUCTION: range(20), TEXT_FLASH: range(5), JSON_PRO: range(5), TEXT_PRO: range(5)})
    first = lab.promote(tmp_path / "first")
    assert first.exit_code == 0, first.output
    assert lab.record(tmp_path / "first")["multiple_comparisons"] is None
    return lab


def test_a_win_that_holm_does_not_support_is_refused_then_forced_with_the_family_recorded(
    lab: Lab, tmp_path: Path
) -> None:
    # against production (right on 0–19), each challenger's discordant trays:
    #   text·flash 0–25:  6 only it right, 0 the reverse → p = 2 / 2^6 = 0.03125 (< 0.05 alone)
    #   json·pro   0–24:  5 and 0                       → p = 2 / 2^5 = 0.0625
    #   text·pro   3–23:  4 (20–23) and 3 (0–2)          → p = 2·(1 + 7 + 21 + 35) / 2^7 = 1
    # Holm over 3: 0.03125 × 3 = 0.09375; 0.0625 × 2 = 0.125; 1 × 1 = 1
    # production's re-run (JSON·flash again) is the incumbent, not a challenger
    lab.sweep({PRODUCTION: range(20), TEXT_FLASH: range(26), JSON_PRO: range(25), TEXT_PRO: range(3, 24)})
    refused = lab.promote(tmp_path / "refused")
    assert refused.exit_code == 2, refused.output
    text = " ".join(refused.output.split())
    assert "not measurably better than production" in text
    assert "p=0.0312, Holm-adjusted over 3 challengers p=0.0938 (needs < 0.05)" in text
    assert "→ adjusted p=0.125" in text and "→ adjusted p=1" in text  # the family, printed
    assert not (tmp_path / "refused").exists()

    forced = lab.promote(tmp_path / "forced", "--force")
    assert forced.exit_code == 0, forced.output
    data = lab.record(tmp_path / "forced")
    assert data["forced"] is True
    assert lab.family(data) == {
        TEXT_FLASH: pytest.approx((2 / 64, 0.09375)),
        JSON_PRO: pytest.approx((2 / 32, 0.125)),
        TEXT_PRO: pytest.approx((1.0, 1.0)),
    }


def test_a_win_that_survives_holm_is_promoted(lab: Lab, tmp_path: Path) -> None:
    # text·flash 0–27:  8 and 0                      → p = 2 / 2^8 = 0.0078125
    # json·pro   3–25:  6 (20–25) and 3 (0–2)         → p = 2·(1 + 9 + 36 + 84) / 2^9 = 0.5078125
    # text·pro   0–24:  5 and 0                      → p = 2 / 2^5 = 0.0625
    # Holm over 3: 0.0078125 × 3 = 0.0234375; 0.0625 × 2 = 0.125; max(0.125, 0.5078125) = 0.5078125
    lab.sweep({PRODUCTION: range(20), TEXT_FLASH: range(28), JSON_PRO: range(3, 26), TEXT_PRO: range(25)})
    bundle = tmp_path / "second"
    result = lab.promote(bundle)
    assert result.exit_code == 0, result.output
    manifest = load_bundle(bundle).manifest
    assert (manifest.prompt.name, manifest.model) == ("meal_tray_freetext", "gemini-2.5-flash")
    data = lab.record(bundle)
    assert data["forced"] is False and data["multiple_comparisons"]["family_size"] == 3
    winner = data["multiple_comparisons"]["challengers"][0]  # the winner comes first
    assert winner["run_id"] == manifest.provenance.run_id
    assert (winner["p_value"], winner["adjusted_p_value"]) == pytest.approx((2 / 256, 3 * 2 / 256))
    assert lab.family(data) == {
        TEXT_FLASH: pytest.approx((2 / 256, 0.0234375)),
        JSON_PRO: pytest.approx((0.5078125, 0.5078125)),
        TEXT_PRO: pytest.approx((2 / 32, 0.125)),
    }
