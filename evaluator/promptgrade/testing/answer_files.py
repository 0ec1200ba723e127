"""Answers files for ``promptgrade fake-gemini``: what the local stand-in answers, per image and per prompt.

Two shapes are read. The plain one maps an image's sha256 (of the bytes the sweep sends) to one
answer text, the same for every prompt. A stand-in answering every prompt alike makes every prompt
tie, so an offline walk-through would show no winner and ``compare --runs`` no flip; the per-prompt
shape (``data/demo_answers.json``) tells prompts apart by a phrase of their text, since the request
carries nothing else that names the prompt::

    {"prompts": {"meal_tray_json": "Allowed dish categories", ...},      # name → a phrase of its text
     "answers": {"<image sha256>": {"meal_tray_json": "{...}", ...}}}    # or one text for every prompt

A request for an image or a prompt the file does not script gets the default answer. A file that is
missing or malformed is an ``AnswersFileError``: one line for the command, never a traceback.

Standard library only, so it runs anywhere the package does.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptgrade.errors import PromptgradeError
from promptgrade.testing.gemini_wire import RequestInfo


class AnswersFileError(PromptgradeError):
    """The answers file cannot be read or does not have one of the two shapes."""


@dataclass
class ScriptedAnswers:
    """The server's answer to each request, as an answers file scripts it (``default`` otherwise)."""

    answers: dict[str, str | dict[str, str]]
    prompts: dict[str, str] = field(default_factory=dict)  # prompt name → a phrase only its text has
    default: str = ""
    on_unscripted: Callable[[str], None] | None = None  # told once, of the first image not in the file
    _warned: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __len__(self) -> int:
        return len(self.answers)

    def prompt_of(self, text: str) -> str | None:
        """The scripted prompt whose phrase ``text`` contains (the first, in the file's order)."""
        return next((name for name, phrase in self.prompts.items() if phrase in text), None)

    def __call__(self, request: RequestInfo) -> str:
        scripted = self.answers.get(request.image_sha256 or "")
        if scripted is None:
            self._unscripted(request.image_sha256 or "(no image)")
            return self.default
        if isinstance(scripted, str):
            return scripted
        prompt = self.prompt_of(request.prompt)
        return scripted.get(prompt, self.default) if prompt is not None else self.default

    def _unscripted(self, sha256: str) -> None:
        with self._lock:
            if self._warned or self.on_unscripted is None:
                return
            self._warned = True
        self.on_unscripted(sha256)


def load_answers(path: Path, default: str) -> ScriptedAnswers:
    """The answers of ``path`` in either shape; an ``AnswersFileError`` names what is wrong with it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AnswersFileError(
            "answers file not found (the demo's is data/demo_answers.json; or pass --default-answer alone)",
            path=path,
        ) from None
    except OSError as exc:
        raise AnswersFileError(f"cannot read the answers file: {exc.strerror}", path=path) from None
    except UnicodeDecodeError:
        raise AnswersFileError("the answers file is not UTF-8 text", path=path) from None
    except json.JSONDecodeError as exc:
        raise AnswersFileError(
            f"not JSON: {exc.msg} (column {exc.colno})", path=path, line=exc.lineno
        ) from None
    if not isinstance(data, dict):
        raise AnswersFileError(_SHAPES, path=path)
    if "answers" not in data:  # the plain shape: sha256 → answer text
        plain: dict[str, str | dict[str, str]] = dict(_texts(data, path, "answer for image"))
        return ScriptedAnswers(plain, default=default)
    prompts, answers = data.get("prompts", {}), data["answers"]
    if not isinstance(answers, dict) or not isinstance(prompts, dict):
        raise AnswersFileError(_SHAPES, path=path)
    prompts = _texts(prompts, path, "phrase of prompt")
    per_image: dict[str, str | dict[str, str]] = {}
    for sha256, answer in answers.items():
        if isinstance(answer, dict):
            unknown = sorted(set(answer) - set(prompts))
            if unknown:
                raise AnswersFileError(
                    f'image {sha256[:12]}… answers prompt {unknown[0]!r}, which "prompts" does not name',
                    path=path,
                )
            per_image[sha256] = _texts(answer, path, f"answer for image {sha256[:12]}… and prompt")
        elif isinstance(answer, str):
            per_image[sha256] = answer
        else:
            raise AnswersFileError(f"image {sha256[:12]}…: {_SHAPES}", path=path)
    return ScriptedAnswers(per_image, prompts, default=default)


_SHAPES = (
    'expected {"<image sha256>": "<answer>", ...} or {"prompts": {...}, "answers": {...}} '
    "(see promptgrade.testing.answer_files)"
)


def _texts(mapping: dict[str, Any], path: Path, what: str) -> dict[str, str]:
    bad = next((key for key, value in mapping.items() if not isinstance(value, str)), None)
    if bad is not None:
        raise AnswersFileError(f"the {what} {bad[:40]!r} is not a string; {_SHAPES}", path=path)
    return dict(mapping)


__all__ = ["AnswersFileError", "ScriptedAnswers", "load_answers"]
