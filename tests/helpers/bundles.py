"""Bundles as ``promptgrade promote`` writes them, for the Lambda's tests: a released prompt, the real
meal-tray task and the test model, with whatever else a test's bundle was promoted with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers import ROOT
from helpers.lambda_events import MODEL
from promptgrade.bundle import Manifest, PromptInfo, write_bundle
from promptgrade.prompts import PromptLibrary, PromptVersion
from promptgrade.task import load_task


def released_prompt(name: str = "meal_tray_json", version: int = 1) -> PromptVersion:
    return PromptLibrary(ROOT / "prompts").get(name, version)


def promoted_bundle(directory: Path, prompt: PromptVersion, **fields: Any) -> Path:
    """``directory`` holding ``prompt`` and a manifest of the meal-tray task and ``MODEL``; ``fields``
    are the manifest's other fields (settings, samples, abstain_below, image_max_side…)."""
    manifest = Manifest(
        prompt=PromptInfo(name=prompt.name, version=prompt.version, sha256=prompt.sha256),
        model=MODEL,
        task=load_task(ROOT / "experiments" / "tasks" / "meal_tray.yaml"),
        **fields,
    )
    return write_bundle(directory, prompt, manifest)
