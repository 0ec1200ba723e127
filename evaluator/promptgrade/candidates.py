"""A candidate is one prompt version × one model × one point of the settings grid.

Its ``key`` is a hash of exactly what determines its answers (prompt text, provider, model,
settings), so the same candidate in a later sweep is recognisably the same thing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from promptgrade.config import BaselineSpec, ModelSpec, Plan
from promptgrade.grading import effective_settings
from promptgrade.prompts import PromptVersion
from promptgrade.providers.base import GenerationSettings
from promptgrade.references import Reference, RenderedPrompt


@dataclass(frozen=True)
class Candidate:
    prompt: PromptVersion
    spec: ModelSpec
    settings: GenerationSettings
    rendered: RenderedPrompt | str  # text, and where the tray and any reference images go
    samples: int = 1  # answers per example, reduced by a vote (``grading.vote``)

    @property
    def abstain_below(self) -> float | None:
        return self.spec.abstain_below

    @property
    def rendered_prompt(self) -> str:
        """The prompt's words (a prompt with reference images: its text parts, joined)."""
        return self.rendered if isinstance(self.rendered, str) else self.rendered.text

    @property
    def rendered_display(self) -> str:
        """The prompt as MLflow shows it: its text, each image named where it goes."""
        return self.rendered if isinstance(self.rendered, str) else self.rendered.display

    @property
    def references(self) -> tuple[Reference, ...]:
        return self.prompt.references

    @property
    def provider(self) -> str:
        return self.spec.provider

    @property
    def model(self) -> str:
        return self.spec.model

    @property
    def batch(self) -> bool:
        """Answered by its provider's batch jobs: the same requests and cache keys, its own price and run."""
        return self.spec.batch

    @cached_property
    def key(self) -> str:
        payload: dict[str, Any] = {
            "prompt": self.prompt.sha256,
            "provider": self.provider,
            "model": self.model,
        }
        payload["settings"] = self.settings.as_params()
        if self.samples > 1:  # k = 1 keys as candidates always have
            payload["samples"] = self.samples
        if self.abstain_below is not None:
            payload["abstain_below"] = self.abstain_below
        if self.batch:  # its own MLflow run (its cost is the batch price); online keys are unchanged
            payload["mode"] = "batch"
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        varied = [f"{k}={v}" for k, v in self.settings.as_params().items() if k != "structured_output"]
        mode = "json" if self.settings.structured_output else "text"
        sampled = [f"samples={self.samples}"] if self.samples > 1 else []
        return " · ".join(
            [self.prompt.ref, self.model, mode, *varied, *sampled, *(["batch"] if self.batch else [])]
        )

    def params(self) -> dict[str, Any]:
        """What MLflow records about the candidate (names are part of the user-facing contract)."""
        return {
            "prompt_name": self.prompt.name,
            "prompt_version": self.prompt.version,
            "prompt_sha256": self.prompt.sha256,
            "provider": self.provider,
            "model": self.model,
            "mode": "batch" if self.batch else "online",
            **self.settings.as_params(),
            **({"optimized_on": ",".join(self.prompt.optimized_on)} if self.prompt.optimized_on else {}),
            **({"n_references": len(self.references)} if self.references else {}),
            **({"samples": self.samples} if self.samples > 1 else {}),
            **({"abstain_below": self.abstain_below} if self.abstain_below is not None else {}),
        }


@dataclass(frozen=True)
class BaselineCandidate:
    """A trained baseline in the same comparison: same metrics, same table, same MLflow experiment."""

    spec: BaselineSpec
    prompt: None = None
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    provider: str = "baseline"

    @property
    def model(self) -> str:
        return self.spec.kind

    @cached_property
    def key(self) -> str:
        payload = {"baseline": self.spec.kind, "seed": self.spec.seed, "options": self.spec.options}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        return f"baseline · {self.spec.kind}"

    def params(self) -> dict[str, Any]:
        return {"provider": self.provider, "model": self.model, "seed": self.spec.seed, **self.spec.options}


AnyCandidate = Candidate | BaselineCandidate


def candidates_for(plan: Plan) -> list[Candidate]:
    out: list[Candidate] = []
    for spec in plan.experiment.models:
        for settings, explicit, samples in spec.variants():
            for prompt in plan.prompts:
                final = effective_settings(prompt, settings, explicit=explicit)
                out.append(Candidate(prompt, spec, final, prompt.render_prompt(plan.task), samples))
    return out
