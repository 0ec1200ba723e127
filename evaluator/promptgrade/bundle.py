"""The Lambda bundle: the promoted prompt's plain template text, the reference images it shows, and a
manifest saying what it is.

It holds text, image files and JSON, not a framework object, so what ships is byte-for-byte what was
measured: loading verifies every reference image's sha256 and the prompt's (its text and references)
against the manifest, and refuses a bundle that drifted. Part of the grading path (no mlflow here):
the Lambda loads it at cold start.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from promptgrade.errors import ConfigError
from promptgrade.grading import MAX_SAMPLES
from promptgrade.prompts import PromptVersion
from promptgrade.providers.base import GenerationSettings
from promptgrade.providers.records import DEFAULT_PROVIDER
from promptgrade.references import REFERENCES_DIR, ReferenceRecord, RenderedPrompt, write_references
from promptgrade.task import Task

MANIFEST = "manifest.json"
TEMPLATE = "prompt.jinja"
# 2: the manifest may list reference images (``references``). 3: it may ask for k samples of each
# tray and an abstention threshold (``samples``, ``abstain_below``). Older bundles still load (no
# references, one sample); a bundle newer than this code is refused rather than half understood — an
# older handler would otherwise ask once where k votes were measured.
FORMAT_VERSION = 3


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
    # the prepared reference images the prompt shows, in its order; each file is in references/
    references: tuple[ReferenceRecord, ...] = ()
    # the vote production takes, as the candidate was measured: k samples of each tray reduced by
    # ``grading.vote``, and the agreement below which a tray is flagged for a person (None: never)
    samples: int = Field(1, ge=1, le=MAX_SAMPLES)
    abstain_below: float | None = Field(None, gt=0, le=1)
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

    def render(self) -> RenderedPrompt:
        """The prompt as requests carry it: its text and where the tray and each reference go."""
        return self.prompt.render_prompt(self.task)

    def reference_files(self) -> list[str]:
        """The reference images' paths relative to the bundle folder, in the prompt's order."""
        return [f"{REFERENCES_DIR}/{r.file}" for r in self.manifest.references]


def write_bundle(directory: str | Path, prompt: PromptVersion, manifest: Manifest) -> Path:
    """The template, the reference images (the prepared bytes the prompt sent) and the manifest.

    The manifest's ``references`` are the prompt's own, recorded here so the two cannot disagree; a
    previous bundle's reference images in the folder are removed.
    """
    if manifest.prompt.sha256 != prompt.sha256:
        raise ConfigError(f"manifest sha256 does not match {prompt.ref}", path=directory)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(directory / REFERENCES_DIR, ignore_errors=True)
    records = write_references(directory / REFERENCES_DIR, prompt.references) if prompt.references else ()
    if manifest.references and manifest.references != records:
        raise ConfigError(f"the manifest's references are not those of {prompt.ref}", path=directory)
    manifest = manifest.model_copy(update={"references": records})
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
    if manifest.format_version > FORMAT_VERSION:
        raise ConfigError(
            f"bundle format {manifest.format_version} is newer than this code reads ({FORMAT_VERSION}): "
            "package it with the promptgrade that promoted it",
            path=manifest_path,
        )
    template_path = directory / manifest.prompt.file
    try:
        text = template_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("the bundle's template is missing", path=template_path) from None
    try:
        references = tuple(r.load(directory / REFERENCES_DIR) for r in manifest.references)
    except ConfigError as exc:
        raise ConfigError(
            f"{exc.message}: the bundle was edited after promotion; promote again", path=exc.path
        ) from None
    prompt = PromptVersion(
        manifest.prompt.name, manifest.prompt.version, text, source=str(template_path), references=references
    )
    if prompt.sha256 != manifest.prompt.sha256:
        what = "prompt (template and references)" if references else "template"
        raise ConfigError(
            f"{what} sha256 {prompt.sha256[:12]}… does not match the manifest's {manifest.prompt.sha256[:12]}…: "
            "the bundle was edited after promotion; promote again",
            path=template_path,
        )
    prompt.validate(manifest.task)
    return Bundle(manifest=manifest, prompt=prompt)
