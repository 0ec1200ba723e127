"""The Lambda bundle: the promoted prompt's plain template text and a manifest saying what it is.

It holds text and JSON, not a framework object, so what ships is byte-for-byte what was measured:
loading verifies the template's sha256 against the manifest and refuses a bundle that drifted.
Part of the grading path (no mlflow here): the Lambda loads it at cold start.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from promptgrade.errors import ConfigError
from promptgrade.prompts import PromptVersion
from promptgrade.providers.base import GenerationSettings
from promptgrade.providers.records import DEFAULT_PROVIDER
from promptgrade.task import Task

MANIFEST = "manifest.json"
TEMPLATE = "prompt.jinja"
FORMAT_VERSION = 1


class PromptInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: int
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    file: str = TEMPLATE


class Provenance(BaseModel):
    """Where the promoted prompt was measured, so a production answer can be traced to its evidence."""

    model_config = ConfigDict(extra="allow", frozen=True)

    run_id: str | None = None
    experiment: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    promoted_at: str | None = None
    dataset: str | None = None
    dataset_sha256: str | None = None


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int = FORMAT_VERSION
    prompt: PromptInfo
    provider: str = DEFAULT_PROVIDER
    model: str
    # where the measured model was reached (provenance; the function's own settings may override, and
    # its provider's record says which of these production keeps: Bedrock's region, an OpenAI server;
    # a local URL of the lab is no use in production)
    region: str | None = None
    base_url: str | None = None
    settings: GenerationSettings = GenerationSettings()
    task: Task
    image_max_side: int = Field(
        1024, ge=64, le=8192, description="Images are prepared exactly as when measured."
    )
    provenance: Provenance = Provenance()


class Bundle(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    manifest: Manifest
    prompt: PromptVersion

    @property
    def task(self) -> Task:
        return self.manifest.task

    @property
    def settings(self) -> GenerationSettings:
        return self.manifest.settings

    def rendered_prompt(self) -> str:
        return self.prompt.render(self.task)


def write_bundle(directory: str | Path, prompt: PromptVersion, manifest: Manifest) -> Path:
    if manifest.prompt.sha256 != prompt.sha256:
        raise ConfigError(f"manifest sha256 does not match {prompt.ref}", path=directory)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / manifest.prompt.file).write_text(prompt.text, encoding="utf-8")
    (directory / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return directory


def load_bundle(directory: str | Path) -> Bundle:
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    try:
        raw: Any = json.loads(manifest_path.read_text(encoding="utf-8"))
        manifest = Manifest.model_validate(raw)
    except FileNotFoundError:
        raise ConfigError("no bundle here: run `promptgrade promote` first", path=manifest_path) from None
    except (json.JSONDecodeError, ValueError) as exc:
        raise ConfigError(f"invalid bundle manifest: {exc}", path=manifest_path) from None
    template_path = directory / manifest.prompt.file
    try:
        text = template_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("the bundle's template is missing", path=template_path) from None
    prompt = PromptVersion(manifest.prompt.name, manifest.prompt.version, text, source=str(template_path))
    if prompt.sha256 != manifest.prompt.sha256:
        raise ConfigError(
            f"template sha256 {prompt.sha256[:12]}… does not match the manifest's {manifest.prompt.sha256[:12]}…: "
            "the bundle was edited after promotion; promote again",
            path=template_path,
        )
    prompt.validate(manifest.task)
    return Bundle(manifest=manifest, prompt=prompt)
