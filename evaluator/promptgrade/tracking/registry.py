"""Prompt versions in the MLflow Prompt Registry, found by their sha256, and the ``production`` alias.

The registry numbers versions itself (1, 2, 3 … per name); ours are explicit in the file name. The
sha256 tag ties the two together, so the same text is registered once however many sweeps use it. A
version that shows reference images is registered by its sha256 over text *and* references, but the
registry holds only the text: the images live in the artifacts of the runs that sent them.
"""

from __future__ import annotations

import contextlib

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from promptgrade.errors import TrackingError
from promptgrade.prompts import PromptVersion
from promptgrade.references import Reference

SHA_TAG = "promptgrade.sha256"
VERSION_TAG = "promptgrade.version"
PRODUCTION_ALIAS = "production"


class PromptRegistry:
    def __init__(self, client: MlflowClient) -> None:
        self.client = client
        self._known: dict[str, str] = {}

    def register(self, prompt: PromptVersion) -> str:
        """The registry version holding ``prompt``'s exact text (registered once, found by sha256)."""
        if prompt.sha256 in self._known:
            return self._known[prompt.sha256]
        version = self.find(prompt.name, prompt.sha256)
        if version is None:
            registered = self.client.register_prompt(
                name=prompt.name,
                template=prompt.text,
                commit_message=prompt.description or prompt.ref,
                tags={SHA_TAG: prompt.sha256, VERSION_TAG: str(prompt.version)},
            )
            version = str(registered.version)
        self._known[prompt.sha256] = version
        return version

    def find(self, name: str, sha256: str) -> str | None:
        try:
            versions = self.client.search_prompt_versions(name)
        except MlflowException:
            return None
        for found in versions:
            if (found.tags or {}).get(SHA_TAG) == sha256:
                return str(found.version)
        return None

    def link(self, run_id: str, prompt: PromptVersion) -> str:
        """Register ``prompt`` and link it to the run that measured it; returns its ``prompts:/`` URI."""
        uri = f"prompts:/{prompt.name}/{self.register(prompt)}"
        self.client.link_prompt_version_to_run(run_id, uri)
        return uri

    def load(self, name: str, version: str, references: tuple[Reference, ...] = ()) -> PromptVersion:
        """A registered version as a PromptVersion, checked against its sha256 tag.

        ``references`` are the images the version showed (from the artifacts of a run that measured
        it, see ``RunStore.references``): its sha256 covers them, so they are attached before the check.
        """
        try:
            found = self.client.get_prompt_version(name, version)
        except MlflowException as exc:
            raise TrackingError(
                f"prompt {name} version {version} is not in the registry: {exc.message}"
            ) from None
        if found is None:
            raise TrackingError(f"prompt {name} version {version} is not in the registry")
        tags = found.tags or {}
        prompt = PromptVersion(
            name,
            int(tags.get(VERSION_TAG, 0)),
            found.template,
            source=f"prompts:/{name}/{version}",
            references=references,
        )
        if tags.get(SHA_TAG) and tags[SHA_TAG] != prompt.sha256:
            shown = f" with {len(references)} reference image(s)" if references else ""
            raise TrackingError(f"registry prompt {name} v{version}{shown} does not match its sha256 tag")
        return prompt

    def production(self, name: str) -> str | None:
        """The registry version the ``production`` alias points at, if any."""
        try:
            found = self.client.get_prompt_version_by_alias(name, PRODUCTION_ALIAS)
        except MlflowException:
            return None
        return None if found is None else str(found.version)

    def set_production(self, name: str, version: str) -> None:
        self.client.set_prompt_alias(name, PRODUCTION_ALIAS, int(version))

    def clear_production(self, name: str) -> None:
        """Production is one prompt: promoting another name takes the alias off this one."""
        with contextlib.suppress(MlflowException):
            self.client.delete_prompt_alias(name, PRODUCTION_ALIAS)
