"""The dry run's and the budget's token estimate follow the price table's per-family image rules."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from promptgrade.candidates import candidates_for
from promptgrade.config import load_experiment, plan_experiment
from promptgrade.estimate import estimate
from promptgrade.grading import build_request
from promptgrade.providers.base import ImageInput
from promptgrade.runner import Budget, CacheMode, Caller
from promptgrade.tokens import ImageTokenRule, image_tokens, text_tokens

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = f"""\
name: tokens
task: {ROOT}/experiments/tasks/meal_tray.yaml
prompts_dir: {ROOT}/prompts
dataset: {{kind: folder, path: {ROOT}/data/sample, split: test}}
prompts: [meal_tray_json@1]
models:
  - model: gemini-3-flash-preview
    grid: {{media_resolution: [low, medium, high]}}
  - model: gemini-3-flash-preview
  - model: gemini-2.5-flash
  - model: gemini-2.5-flash
    settings: {{media_resolution: low}}
  - model: some-other-vision-model
"""


@pytest.fixture
def plan(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "exp.yaml"
    path.write_text(EXPERIMENT, encoding="utf-8")
    return plan_experiment(load_experiment(path))


def test_each_family_bills_a_256px_image_by_its_own_rule(plan) -> None:  # type: ignore[no-untyped-def]
    candidates = candidates_for(plan)
    estimates = estimate(plan, candidates, [(256, 256)])
    prompt = text_tokens(candidates[0].rendered_prompt)
    images = {
        (e.candidate.model, e.candidate.settings.media_resolution): e.input_tokens - prompt for e in estimates
    }
    assert images == {
        ("gemini-3-flash-preview", "low"): 280,
        ("gemini-3-flash-preview", "medium"): 560,
        ("gemini-3-flash-preview", "high"): 1120,
        ("gemini-3-flash-preview", None): 1120,  # Gemini 3 without media_resolution: high
        ("gemini-2.5-flash", None): 258,  # Gemini 2.5 without it: the tile rule
        ("gemini-2.5-flash", "low"): 64,
        ("some-other-vision-model", None): 258,
    }
    assert [e.rule_known for e in estimates if e.candidate.model == "some-other-vision-model"] == [False]


def test_the_tile_rule_counts_768px_tiles_and_a_fixed_rule_does_not() -> None:
    gemini_25 = ImageTokenRule(low=64, medium=256, high=256, unset="tiles")
    gemini_3 = ImageTokenRule(low=280, medium=560, high=1120, unset=1120)
    assert image_tokens(4000, 3000, None, gemini_25) == 258 * 6 * 4
    assert image_tokens(768, 576, None, gemini_25) == 258
    assert image_tokens(4000, 3000, None, gemini_3) == image_tokens(768, 576, None, gemini_3) == 1120


def test_the_budget_reserves_what_the_dry_run_estimates(plan) -> None:  # type: ignore[no-untyped-def]
    """The budget's stop point and the dry run must agree, or a budget set from the dry run overspends."""
    data = io.BytesIO()
    Image.new("RGB", (256, 256), "white").save(data, format="JPEG")
    image = ImageInput(data.getvalue(), "image/jpeg")  # no size known: read from the header
    caller = Caller(plan, CacheMode.off(), Budget(None, None))
    for candidate in candidates_for(plan):
        request = build_request(candidate.rendered_prompt, plan.task, candidate.settings, image)
        [expected] = estimate(plan, [candidate], [(256, 256)])
        assert caller.input_tokens(candidate, request) == expected.input_tokens


def test_an_area_rule_bills_pixels_up_to_its_cap_and_ignores_resolutions_it_lacks() -> None:
    claude = ImageTokenRule(unset="area", pixels_per_token=750, max_pixels=1_200_000)
    assert image_tokens(768, 576, None, claude) == 590  # ceil(442,368 / 750)
    assert image_tokens(4000, 3000, None, claude) == 1600  # scaled down to the cap first
    assert image_tokens(768, 576, "low", claude) == 590  # Bedrock has no media_resolution


def test_the_shipped_table_estimates_claude_on_bedrock_by_area(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(
        EXPERIMENT.replace("  - model: some-other-vision-model\n", "")
        + "  - provider: bedrock\n    model: us.anthropic.claude-sonnet-4-20250514-v1:0\n",
        encoding="utf-8",
    )
    plan = plan_experiment(load_experiment(path))
    [claude] = [c for c in candidates_for(plan) if c.provider == "bedrock"]
    [estimated] = estimate(plan, [claude], [(256, 256)])
    assert estimated.rule_known
    assert estimated.input_tokens - text_tokens(claude.rendered_prompt) == 88  # ceil(65,536 / 750)
