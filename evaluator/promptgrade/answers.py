"""The model's answer as a typed result, or a precise reason it is not one.

Two answer shapes must parse: JSON (Gemini structured output, or JSON the model chose to write, with
or without code fences) and the original study's free text ("Category: soup, stew … food %: 40%").
Anything else is a ParseFailure that is recorded and counted — never a crash, never a made-up grade.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from promptgrade.task import Task

FailureReason = Literal[
    "empty", "invalid_json", "no_categories", "unknown_categories", "no_grade", "grade_out_of_range"
]

_GRADE_KEYS = (
    "grade",
    "food_remaining_pct",
    "food_remaining",
    "remaining_pct",
    "percent_remaining",
    "percentage",
)
_CATEGORY_KEYS = ("categories", "category", "dishes", "dish_categories")
_FENCE_RE = re.compile(r"```(?:json)?\s*(?P<body>.*?)```", re.DOTALL | re.IGNORECASE)
_NUMBER_RE = r"(?P<num>\d{1,3}(?:\.\d+)?)"
_CATEGORY_LINE_RE = re.compile(
    r"categor(?:y|ies)\s*(?:\([^)]*\))?\s*[:=\-–]\s*(?P<names>[^\n]+)", re.IGNORECASE
)
_GRADE_LINE_RES = (
    re.compile(r"food\s*%\s*[:=\-–]?\s*" + _NUMBER_RE, re.IGNORECASE),
    re.compile(r"(?:remaining|left|leftover|uneaten)[^0-9\n]{0,40}" + _NUMBER_RE + r"\s*%", re.IGNORECASE),
    re.compile(
        r"(?:remaining|left|leftover|uneaten|percentage)[^0-9\n]{0,40}[:=]\s*" + _NUMBER_RE, re.IGNORECASE
    ),
)
# The study's one-line answers run on ("soup, stew … food %: 40%"): the category list ends there.
_NAMES_END_RE = re.compile(r"…|\.\.\.|\bfood\s*%|\d+\s*%|\s-\s|\s–\s", re.IGNORECASE)
_SPLIT_RE = re.compile(r"\s*(?:,|;|/|\band\b|&|\|)\s*", re.IGNORECASE)


class Prediction(BaseModel):
    """A parsed answer: canonical category names (most confident first) and the grade."""

    model_config = ConfigDict(frozen=True)

    categories: tuple[str, ...]
    grade: float
    unknown_categories: tuple[str, ...] = ()  # named by the model but not allowed by the task
    answer_format: Literal["json", "text"]
    # Top-1 is the model's first choice, not the first name that survived filtering: an answer that
    # leads with a name outside the task has a wrong top-1 even if an allowed name follows it.
    first_named_allowed: bool = True

    @property
    def top1(self) -> str | None:
        """The model's first-named category, or None when that name is not one the task allows."""
        return self.categories[0] if self.first_named_allowed else None


class ParseFailure(BaseModel):
    model_config = ConfigDict(frozen=True)

    reason: FailureReason
    message: str


def parse_answer(text: str | None, task: Task) -> Prediction | ParseFailure:
    if text is None or not text.strip():
        return ParseFailure(reason="empty", message="the answer is empty")
    data = _json_object(text)
    if isinstance(data, ParseFailure):
        return data
    if data is not None:
        return _from_json(data, task)
    return _from_text(text, task)


def _json_object(text: str) -> dict[str, Any] | ParseFailure | None:
    """The answer's JSON object, None if the answer is not JSON at all, or why it is broken JSON."""
    fenced = _FENCE_RE.search(text)
    candidate = (fenced.group("body") if fenced else text).strip()
    if not candidate.startswith(("{", "[")):
        start = candidate.find("{")
        if start < 0 or (fenced is None and not _looks_like_json(candidate[start:])):
            return None
        candidate = candidate[start:]
    try:
        data, _ = json.JSONDecoder().raw_decode(candidate)
    except json.JSONDecodeError as exc:
        return ParseFailure(reason="invalid_json", message=f"answer looks like JSON but is not: {exc.msg}")
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict):
        return ParseFailure(
            reason="invalid_json", message=f"expected a JSON object, got {type(data).__name__}"
        )
    return data


def _looks_like_json(text: str) -> bool:
    return bool(re.match(r'\{\s*"', text))


def _from_json(data: dict[str, Any], task: Task) -> Prediction | ParseFailure:
    lowered = {str(k).lower(): v for k, v in data.items()}
    raw_categories = next((lowered[k] for k in _CATEGORY_KEYS if k in lowered), None)
    if raw_categories is None:
        return ParseFailure(reason="no_categories", message="JSON answer has no 'categories'")
    if isinstance(raw_categories, str):
        raw_categories = _SPLIT_RE.split(raw_categories)
    if not isinstance(raw_categories, list):
        return ParseFailure(reason="no_categories", message="'categories' is neither a list nor a string")
    grade_keys = (task.grade.name.lower(), *_GRADE_KEYS)
    raw_grade = next((lowered[k] for k in grade_keys if k in lowered), None)
    return _build([str(c) for c in raw_categories], raw_grade, task, "json")


def _from_text(text: str, task: Task) -> Prediction | ParseFailure:
    match = _CATEGORY_LINE_RE.search(text)
    names_text = _NAMES_END_RE.split(match.group("names"), maxsplit=1)[0] if match else ""
    names = _SPLIT_RE.split(names_text.strip().rstrip(".")) if names_text.strip() else []
    grade: str | None = None
    for pattern in _GRADE_LINE_RES:
        if found := pattern.search(text):
            grade = found.group("num")
            break
    if grade is None:
        percentages = re.findall(_NUMBER_RE + r"\s*%", text)
        if len(set(percentages)) == 1:
            grade = percentages[0]
    if not names:
        # No "Category:" line: accept allowed names mentioned anywhere, in order of appearance.
        names = _mentioned_categories(text, task)
    return _build(names, grade, task, "text")


def _mentioned_categories(text: str, task: Task) -> list[str]:
    positions = []
    for category in task.categories:
        pattern = r"\b" + r"\s+".join(map(re.escape, category.split())) + r"(?:e?s)?\b"
        if found := re.search(pattern, text, re.IGNORECASE):
            positions.append((found.start(), category))
    return [c for _, c in sorted(positions)]


def _build(
    names: list[str], raw_grade: Any, task: Task, answer_format: Literal["json", "text"]
) -> Prediction | ParseFailure:
    names = [n.strip().strip("\"'*.`") for n in names if n and n.strip().strip("\"'*.`")]
    if not names:
        return ParseFailure(reason="no_categories", message="the answer names no category")
    categories: list[str] = []
    unknown: list[str] = []
    first_named_allowed = task.canonical_category(names[0]) is not None
    for name in names:
        canonical = task.canonical_category(name)
        if canonical is None:
            unknown.append(name)
        elif canonical not in categories:
            categories.append(canonical)
    if not categories:
        shown = ", ".join(repr(n) for n in unknown[:3])
        return ParseFailure(reason="unknown_categories", message=f"no allowed category named (got {shown})")
    grade = _number(raw_grade)
    if grade is None:
        return ParseFailure(reason="no_grade", message=f"the answer gives no {task.grade.name}")
    if not task.grade.contains(grade):
        return ParseFailure(
            reason="grade_out_of_range",
            message=f"{task.grade.name}={grade:g} is outside {task.grade.minimum:g}–{task.grade.maximum:g}",
        )
    return Prediction(
        categories=tuple(categories[: task.max_categories]),
        grade=grade,
        unknown_categories=tuple(unknown),
        answer_format=answer_format,
        first_named_allowed=first_named_allowed,
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and (found := re.search(r"-?\d+(?:\.\d+)?", value)):
        return float(found.group(0))
    return None
