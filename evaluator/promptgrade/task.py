"""What is asked of the model and how its answer is scored.

The meal-tray task is the flagship, not an assumption baked into code: another business (fruit
quality, damage severity) is another task file with its own categories and grade scale.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from promptgrade.yamlfile import load_model


@functools.lru_cache(maxsize=4096)
def _fold(name: str) -> str:
    """Comparison key for category names: models vary case, spacing, hyphens and plurals.

    Cached: every parsed answer folds each name it gives, and models give the same few names over and
    over (two regular expressions per name were ~10 µs of every answer's scoring)."""
    key = re.sub(r"[^a-z0-9]+", " ", name.lower()).strip()
    return re.sub(r"(?<=[a-z])(es|s)\b", "", key)


@functools.lru_cache(maxsize=64)
def _folded(categories: tuple[str, ...]) -> dict[str, str]:
    """Folded name → category, built once per vocabulary: every parsed answer looks names up here."""
    return {_fold(category): category for category in categories}


class GradeScale(BaseModel):
    """A numeric grade (e.g. percentage of food left) and the tolerance within which it is correct."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("grade", pattern=r"^[a-z_][a-z0-9_]*$", description="JSON key of the grade.")
    description: str = "the grade"
    minimum: float = 0.0
    maximum: float = 100.0
    tolerance: float = Field(10.0, ge=0)
    unit: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> GradeScale:
        if self.maximum <= self.minimum:
            raise ValueError(f"grade maximum ({self.maximum}) must be above minimum ({self.minimum})")
        return self

    def contains(self, value: float) -> bool:
        return self.minimum <= value <= self.maximum


class Task(BaseModel):
    """Allowed categories, how many may be named, and the grade scale."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    categories: tuple[str, ...] = Field(min_length=2)
    max_categories: int = Field(2, ge=1)
    grade: GradeScale = GradeScale()

    @field_validator("categories")
    @classmethod
    def _distinct(cls, categories: tuple[str, ...]) -> tuple[str, ...]:
        seen: dict[str, str] = {}
        for category in categories:
            key = _fold(category)
            if not key:
                raise ValueError("a category name is empty")
            if key in seen:
                raise ValueError(f"categories {seen[key]!r} and {category!r} are the same after folding")
            seen[key] = category
        return categories

    def canonical_category(self, name: str) -> str | None:
        """The allowed category a model or a label file meant, or None if it is not allowed."""
        return _folded(self.categories).get(_fold(name))

    def response_schema(self) -> dict[str, Any]:
        """JSON schema for Gemini structured output (OpenAPI subset: no $ref, enum of strings)."""
        return {
            "type": "object",
            "properties": {
                "categories": {
                    "type": "array",
                    "items": {"type": "string", "enum": list(self.categories)},
                    "minItems": 1,
                    "maxItems": self.max_categories,
                },
                self.grade.name: {
                    "type": "number",
                    "minimum": self.grade.minimum,
                    "maximum": self.grade.maximum,
                },
            },
            "required": ["categories", self.grade.name],
            "propertyOrdering": ["categories", self.grade.name],
        }

    def template_variables(self) -> dict[str, Any]:
        """What a prompt template may use: the task's vocabulary and scale, nothing else."""
        return {
            "task": self,
            "categories": list(self.categories),
            "max_categories": self.max_categories,
            "grade": self.grade,
        }


def load_task(path: str | Path) -> Task:
    return load_model(Task, path, "task file")
