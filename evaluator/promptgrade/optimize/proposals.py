"""A reflection model's answer → a template we are willing to pay to evaluate, or the reason it is not.

The answer contract is fixed and documented (README, "Optimising a prompt"): the proposed template is
the content of the first fenced code block in the answer (```` ```jinja … ``` ````, any or no language
tag), or the whole answer when it has none. Every check here is free — nothing is evaluated until the
proposal renders in the same sandbox with the same variables, still asks for the answer format the
parser reads, and does not smuggle in answers for the examples it was shown.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from promptgrade.errors import PromptError
from promptgrade.prompts import PromptVersion
from promptgrade.task import Task

_FENCE_RE = re.compile(r"```[ \t]*(?P<lang>[A-Za-z0-9_+-]*)[ \t]*\n(?P<body>.*?)\n?[ \t]*```", re.DOTALL)
_FRONT_MATTER_RE = re.compile(r"\A\s*\{#-?.*?-?#\}[ \t]*\n?", re.DOTALL)
_HEX_RE = re.compile(r"\b[0-9a-f]{16,64}\b")
# Parsing only (never rendering): the template's free variables, checked against the task's.
_PARSER = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
# What rendering adds to the task's variables: where the tray goes, and the references shown
IMAGE_VARIABLES = frozenset({"image", "references"})


@dataclass(frozen=True)
class Checked:
    """A proposal's template body, or why it was rejected (``body`` then holds what was extracted)."""

    body: str
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def extract_template(answer: str | None) -> str:
    """The first fenced code block's content, else the whole answer (stripped); a proposal's own front
    matter is dropped, because ours (description, parent, optimized_on, run id) replaces it."""
    text = (answer or "").strip()
    fenced = _FENCE_RE.search(text)
    if fenced is not None:
        text = fenced.group("body")
    return _FRONT_MATTER_RE.sub("", text, count=1).strip() + "\n"


def answer_format(rendered: str, task: Task) -> str | None:
    """Which answer shape a rendered prompt asks for, as the parser reads it: ``json`` (keys
    ``categories`` and the grade's name), ``text`` (the study's ``Category:`` / ``Food %:`` lines), or
    None when neither is asked for."""
    lowered = rendered.lower()
    if '"categories"' in lowered and task.grade.name.lower() in lowered:
        return "json"
    if re.search(r"categor(?:y|ies)\s*:", lowered) and re.search(
        r"food\s*%|remaining|left|" + re.escape(task.grade.name.lower()), lowered
    ):
        return "text"
    return None


def check_proposal(
    answer: str | None,
    parent: PromptVersion,
    task: Task,
    *,
    structured_output: bool,
    forbidden: Iterable[str],
    seen: dict[str, str],
    max_chars: int,
    max_rendered_chars: int | None = None,
) -> Checked:
    """Extract and validate a proposal against its parent.

    ``forbidden`` are strings a general prompt has no business containing (example ids, file names):
    a template naming them is memorising the examples it was shown. ``seen`` maps template bodies
    already tried to their proposal ids, so a repeat costs nothing.
    """
    body = extract_template(answer)
    if not body.strip():
        return Checked(body, "empty: the answer holds no template")
    if (size := len(body.strip())) > max_chars:
        return Checked(body, f"too long: {size:,} characters (at most {max_chars:,})")
    if body.strip() == parent.body.strip():
        return Checked(body, "unchanged: the proposal is the parent template")
    if body in seen:
        return Checked(body, f"duplicate of proposal {seen[body]}")
    try:
        names = meta.find_undeclared_variables(_PARSER.parse(body))
    except jinja2.TemplateSyntaxError as exc:
        return Checked(body, f"unrenderable: template syntax error on line {exc.lineno}: {exc.message}")
    variables = set(task.template_variables()) | IMAGE_VARIABLES
    unknown = sorted(names - variables)
    if unknown:
        allowed = ", ".join(sorted(variables))
        return Checked(body, f"unknown variables: {', '.join(unknown)} (available: {allowed})")
    # rendered with the parent's references, as it would be sent: a rewrite keeps what its parent shows
    candidate = PromptVersion(parent.name, 0, body, source="proposal").with_references(parent.references)
    try:
        rendered = candidate.render(task)
    except PromptError as exc:
        return Checked(body, f"unrenderable: {exc.message}")
    if max_rendered_chars is not None and len(rendered) > max_rendered_chars:
        return Checked(
            body, f"renders too long: {len(rendered):,} characters (at most {max_rendered_chars:,})"
        )
    wanted = answer_format(parent.render(task), task)
    got = answer_format(rendered, task)
    if not structured_output and wanted is not None and got != wanted:
        return Checked(body, f"answer format: the parent asks for a {wanted} answer, the proposal for {got}")
    if structured_output and got is None and wanted is not None:
        return Checked(body, "answer format: the proposal no longer asks for the JSON answer the task parses")
    lowered = rendered.lower()
    leaked = sorted({f for f in forbidden if f and f.lower() in lowered})
    if leaked:
        shown = ", ".join(leaked[:3])
        return Checked(body, f"hard-codes example-specific answers: names {shown}")
    if _HEX_RE.search(lowered):
        return Checked(body, "hard-codes example-specific answers: contains an image hash")
    return Checked(body)


__all__ = ["IMAGE_VARIABLES", "Checked", "answer_format", "check_proposal", "extract_template"]
