"""Experiment files: every mistake is reported with file and line before any paid call."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from promptgrade.config import load_experiment, plan_experiment, price_for
from promptgrade.errors import ConfigError, PromptError
from promptgrade.scoring import Price

ROOT = Path(__file__).resolve().parents[1]

BASE = """\
name: test-exp
task: tasks/meal_tray.yaml
prompts_dir: ../prompts
prices: prices.yaml
dataset:
  kind: folder
  path: ../data/sample
  split: test
prompts:
  - meal_tray_json@1
models:
  - model: gemini-2.5-flash
    settings: {temperature: 0.0}
"""


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A copy of the repository's prompts, task and prices, so a test can break them safely."""
    (tmp_path / "experiments").mkdir()
    shutil.copytree(ROOT / "prompts", tmp_path / "prompts")
    shutil.copytree(ROOT / "experiments/tasks", tmp_path / "experiments/tasks")
    shutil.copy(ROOT / "experiments/prices.yaml", tmp_path / "experiments/prices.yaml")
    return tmp_path


def experiment(workspace: Path, text: str) -> Path:
    path = workspace / "experiments" / "exp.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_experiment_plans_prompts_and_prices(workspace: Path) -> None:
    plan = plan_experiment(load_experiment(experiment(workspace, BASE)))
    assert [p.ref for p in plan.prompts] == ["meal_tray_json@v1"]
    assert plan.task.name == "meal_tray"
    assert price_for("gemini-2.5-flash-001", plan.prices) == plan.prices["gemini-2.5-flash"]


def test_unknown_field_is_reported_with_its_line(workspace: Path) -> None:
    path = experiment(
        workspace, BASE.replace("    settings: {temperature: 0.0}", "    setings: {temperature: 0.0}")
    )
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert str(info.value).startswith(f"{path}:13: models.0.setings: unknown field")


def test_bad_setting_value_is_reported_with_its_line(workspace: Path) -> None:
    path = experiment(workspace, BASE.replace("temperature: 0.0", "temperature: 9"))
    with pytest.raises(ConfigError, match=r":13: models\.0\.settings\.temperature"):
        load_experiment(path)


def test_missing_prompt_version_is_reported_at_the_prompt_line(workspace: Path) -> None:
    path = experiment(workspace, BASE.replace("meal_tray_json@1", "meal_tray_json@9"))
    with pytest.raises(
        ConfigError, match=r"exp\.yaml:10: prompts\[0\]: prompt 'meal_tray_json' has no version v9"
    ):
        plan_experiment(load_experiment(path))


def test_template_error_names_the_template(workspace: Path) -> None:
    template = workspace / "prompts/meal_tray_json/v2.jinja"
    template.write_text("Choose from {{ categorys }}", encoding="utf-8")
    path = experiment(workspace, BASE.replace("meal_tray_json@1", "meal_tray_json@2"))
    with pytest.raises(PromptError, match=r"v2\.jinja:1: undefined variable"):
        plan_experiment(load_experiment(path))


def test_yaml_syntax_error_has_a_line(workspace: Path) -> None:
    path = experiment(workspace, BASE + "models: [\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml:\d+: not valid YAML"):
        load_experiment(path)


def test_grid_expands_into_candidates(workspace: Path) -> None:
    from promptgrade.candidates import candidates_for

    text = BASE.replace(
        "prompts:\n  - meal_tray_json@1", "prompts:\n  - meal_tray_json@1\n  - meal_tray_freetext"
    )
    text += "    grid: {temperature: [0.0, 0.5], structured_output: [true, false]}\n"
    plan = plan_experiment(load_experiment(experiment(workspace, text)))
    candidates = candidates_for(plan)
    assert len(candidates) == 2 * 2 * 2
    assert len({c.key for c in candidates}) == 8
    assert {c.settings.temperature for c in candidates} == {0.0, 0.5}


def test_template_preference_for_json_applies_unless_set(workspace: Path) -> None:
    from promptgrade.candidates import candidates_for

    text = BASE.replace("meal_tray_json@1", "meal_tray_json@1\n  - meal_tray_freetext@1")
    plan = plan_experiment(load_experiment(experiment(workspace, text)))
    modes = {c.prompt.name: c.settings.structured_output for c in candidates_for(plan)}
    assert modes == {"meal_tray_json": True, "meal_tray_freetext": False}


def test_unknown_grid_key_is_an_error(workspace: Path) -> None:
    path = experiment(workspace, BASE + "    grid: {temprature: [0.1]}\n")
    with pytest.raises(ConfigError, match=r"grid key 'temprature' is not a generation setting"):
        load_experiment(path)


def test_price_lookup_prefers_the_longest_prefix() -> None:
    prices = {"gemini-2.5-flash": Price(input=1, output=1), "gemini-2.5-flash-lite": Price(input=2, output=2)}
    assert price_for("gemini-2.5-flash-lite-001", prices) == prices["gemini-2.5-flash-lite"]
    assert price_for("other-model", prices) is None


def test_without_prices_the_table_beside_the_experiment_is_used(workspace: Path) -> None:
    plan = plan_experiment(load_experiment(experiment(workspace, BASE.replace("prices: prices.yaml\n", ""))))
    assert plan.prices_path == workspace / "experiments/prices.yaml"
    assert "gemini-2.5-flash" in plan.prices


def test_without_prices_or_a_table_beside_it_the_shipped_table_is_used(workspace: Path) -> None:
    """The README promises a model without a price is swept: a missing default table must not stop it."""
    (workspace / "experiments/prices.yaml").unlink()
    plan = plan_experiment(load_experiment(experiment(workspace, BASE.replace("prices: prices.yaml\n", ""))))
    assert plan.prices_path == ROOT / "experiments/prices.yaml"  # this checkout's shipped table
    assert plan.prices["gemini-2.5-flash"].input > 0
    assert plan.image_rule("gemini-3-flash-preview") is not None


def test_a_named_price_table_that_is_missing_is_an_error_with_its_path(workspace: Path) -> None:
    path = experiment(workspace, BASE.replace("prices: prices.yaml", "prices: pricse.yaml"))
    with pytest.raises(ConfigError) as info:
        plan_experiment(load_experiment(path))
    assert "pricse.yaml" in str(info.value) and "not found" in str(info.value)


def test_a_price_table_without_image_rules_borrows_the_shipped_rules(workspace: Path) -> None:
    (workspace / "experiments/prices.yaml").write_text(
        "models:\n  gemini-2.5-flash: {input: 1.0, output: 2.0}\n", encoding="utf-8"
    )
    plan = plan_experiment(load_experiment(experiment(workspace, BASE)))
    assert plan.prices["gemini-2.5-flash"] == Price(input=1.0, output=2.0)
    rule = plan.image_rule("gemini-3-pro-preview")
    assert rule is not None and rule.unset == 1120


def test_a_bad_image_rule_is_reported_with_its_line(workspace: Path) -> None:
    with (workspace / "experiments/prices.yaml").open("a", encoding="utf-8") as table:
        table.write("  gemini-9: {low: 10, medium: 20, hihg: 30}\n")
    with pytest.raises(ConfigError) as info:
        plan_experiment(load_experiment(experiment(workspace, BASE)))
    lines = (workspace / "experiments/prices.yaml").read_text().splitlines()
    assert f"prices.yaml:{len(lines)}: image_tokens.gemini-9" in str(info.value)
