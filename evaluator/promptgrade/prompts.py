"""Versioned prompt templates: the thing a sweep measures and the Lambda ships.

A prompt lives at ``prompts/<name>/v<N>.jinja``. The file opens with a Jinja comment holding YAML
front matter (a short description, and optionally ``structured_output``). Its sha256 is taken over the
whole file, so what was measured is byte-for-byte what ships. Once a version is *released* (recorded
in ``prompts/released.lock``) its text may not change: a result in MLflow would otherwise describe a
prompt that no longer exists. Edits go into a new version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import mimetypes
import re
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from promptgrade.errors import PromptChangedError, PromptError
from promptgrade.providers.base import ImageInput
from promptgrade.references import (
    TRAY,
    Reference,
    RenderedPrompt,
    TemplateReference,
    image_marker,
    references_sha256,
    split_rendered,
)
from promptgrade.task import Task

LOCK_FILE = "released.lock"
FROZEN_REFERENCES = "references.json"  # v<N>/references.json: a released version's reference images
_FILE_RE = re.compile(r"^v(?P<version>[1-9][0-9]*)\.jinja$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_FRONT_MATTER_RE = re.compile(r"\A\{#-?[ \t]*\n(?P<yaml>.*?)\n[ \t]*-?#\}[ \t]*\n?", re.DOTALL)

# One environment for every render: sandboxed (a template can't reach Python internals) and strict
# (an undefined variable is an error, not an empty string that silently changes the prompt).
_ENV = ImmutableSandboxedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False, trim_blocks=True
)


@dataclass(frozen=True)
class PromptVersion:
    """One immutable prompt version. Built from text so the Lambda can rebuild it from its bundle."""

    name: str
    version: int
    text: str = field(repr=False)
    source: str = ""  # where the text came from, for error messages
    # the reference images this version shows (resolved from its front matter by the lab, or carried
    # by a Lambda bundle); part of what the version *is*, so part of its sha256
    references: tuple[Reference, ...] = field(default=(), repr=False)

    @cached_property
    def sha256(self) -> str:
        """The text's sha256; a version that shows references hashes them with its text."""
        if self.references:
            return references_sha256(self.text, self.references)
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def text_sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def with_references(self, references: tuple[Reference, ...]) -> PromptVersion:
        return dataclasses.replace(self, references=references)

    @property
    def reference_spec(self) -> Any:
        """The front matter's ``references`` as written (a list of files, or a rule), or None."""
        return self._front_matter[0].get("references")

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (to the tracking writer's process) as its fields only: the compiled template is a
        cache of functions that cannot travel, and is rebuilt on first use."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @cached_property
    def _front_matter(self) -> tuple[dict[str, Any], str]:
        match = _FRONT_MATTER_RE.match(self.text)
        if not match:
            return {}, self.text
        try:
            meta = yaml.safe_load(match.group("yaml")) or {}
        except yaml.YAMLError as exc:
            raise PromptError(f"front matter is not valid YAML: {exc}", path=self.where) from None
        if not isinstance(meta, dict):
            raise PromptError("front matter must be a YAML mapping", path=self.where, line=1)
        return meta, self.text[match.end() :]

    @property
    def where(self) -> str:
        return self.source or f"{self.name}@v{self.version}"

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"

    @property
    def description(self) -> str:
        return str(self._front_matter[0].get("description", "")).strip()

    @property
    def structured_output(self) -> bool | None:
        """The template's own preference for JSON output; a candidate's settings may override it."""
        value = self._front_matter[0].get("structured_output")
        return None if value is None else bool(value)

    @property
    def optimized_on(self) -> tuple[str, ...]:
        """The splits ``promptgrade optimize`` fitted this version to (front matter ``optimized_on``):
        a version may not be promoted on a measurement of one of them."""
        value = self._front_matter[0].get("optimized_on")
        if value is None:
            return ()
        return tuple(str(v) for v in value) if isinstance(value, list) else (str(value),)

    @property
    def body(self) -> str:
        return self._front_matter[1]

    @property
    def _body_offset(self) -> int:
        """Lines of front matter above the body, so errors point at the line in the file."""
        return self.text[: len(self.text) - len(self.body)].count("\n")

    def _file_line(self, exc: Exception) -> int | None:
        line = _template_line(exc)
        return None if line is None else line + self._body_offset

    @cached_property
    def _template(self) -> jinja2.Template:
        try:
            return _ENV.from_string(self.body)
        except jinja2.TemplateSyntaxError as exc:
            line = None if exc.lineno is None else exc.lineno + self._body_offset
            raise PromptError(f"template syntax error: {exc.message}", path=self.where, line=line) from None

    def render(self, task: Task, **extra: Any) -> str:
        """The rendered text for ``task`` (a template that places images: its text parts, joined)."""
        return self.render_prompt(task, **extra).text

    def render_prompt(self, task: Task, **extra: Any) -> RenderedPrompt:
        """Render for ``task`` with this version's references: the text, and where each image goes.

        Undefined variables, sandbox violations and misplaced images are PromptErrors.
        """
        variables = {
            **task.template_variables(),
            "image": image_marker(TRAY),
            "references": [TemplateReference(i, r) for i, r in enumerate(self.references)],
            **extra,
        }
        try:
            rendered = self._template.render(**variables)
        except jinja2.UndefinedError as exc:
            if "'ref' is undefined" in str(exc.message):
                raise PromptError(
                    "{{ ref.image }} (or ref.…) outside a {% for ref in references %} loop",
                    path=self.where,
                    line=self._file_line(exc),
                ) from None
            raise PromptError(
                f"undefined variable in template: {exc.message} (available: {', '.join(sorted(variables))})",
                path=self.where,
                line=self._file_line(exc),
            ) from None
        except jinja2.TemplateError as exc:
            raise PromptError(
                f"cannot render template: {exc}", path=self.where, line=self._file_line(exc)
            ) from None
        try:
            return split_rendered(rendered, self.references)
        except ValueError as exc:
            raise PromptError(str(exc), path=self.where) from None

    def validate(self, task: Task) -> str:
        """Everything that can go wrong before a paid call: front matter, syntax, undefined names."""
        _ = self.description
        return self.render(task)


def _template_line(exc: Exception) -> int | None:
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


class PromptLibrary:
    """The ``prompts/`` folder: every version on disk, and the lock of released ones."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise PromptError("prompts folder not found", path=self.root)

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK_FILE

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME_RE.match(p.name))

    def versions(self, name: str) -> list[int]:
        folder = self.root / name
        if not folder.is_dir():
            known = ", ".join(self.names()) or "none"
            raise PromptError(f"no prompt named {name!r} (known: {known})", path=self.root)
        found = sorted(int(m["version"]) for p in folder.iterdir() if (m := _FILE_RE.match(p.name)))
        if not found:
            raise PromptError(f"prompt {name!r} has no v<N>.jinja files", path=folder)
        return found

    def get(self, name: str, version: int) -> PromptVersion:
        path = self.root / name / f"v{version}.jinja"
        if not path.is_file():
            available = ", ".join(f"v{v}" for v in self.versions(name))
            raise PromptError(
                f"prompt {name!r} has no version v{version} (available: {available})", path=path.parent
            )
        prompt = PromptVersion(name, version, path.read_text(encoding="utf-8"), source=str(path))
        prompt = self._with_frozen_references(prompt, path.with_suffix(""))
        self._check_released(prompt)
        return prompt

    def _with_frozen_references(self, prompt: PromptVersion, folder: Path) -> PromptVersion:
        """A released version's frozen references (``v<N>/references.json`` and its images), as the
        files stand: their hashes enter the version's sha256, so an edited image fails the lock check
        like an edited text. Images are attached as stored; a sweep prepares them as it does any."""
        record_path = folder / FROZEN_REFERENCES
        if not record_path.is_file():
            return prompt
        try:
            records = json.loads(record_path.read_text(encoding="utf-8"))["references"]
            references = []
            for record in records:
                image_path = folder / str(record["file"])
                data = image_path.read_bytes()
                if (found := hashlib.sha256(data).hexdigest()) != record["sha256"]:
                    raise PromptChangedError(
                        f"frozen reference {record['id']} of {prompt.ref} has changed (sha256 {found[:12]}…, "
                        f"frozen as {str(record['sha256'])[:12]}…); a released version's references are "
                        "immutable: restore the file and put the change in a new version",
                        path=image_path,
                    )
                mime = mimetypes.guess_type(image_path.name)[0] or "image/jpeg"
                references.append(
                    Reference(
                        id=str(record["id"]),
                        categories=tuple(str(c) for c in record["categories"]),
                        grade=None if record.get("grade") is None else float(record["grade"]),
                        image=ImageInput(data, mime),
                        source=str(image_path),
                        source_sha256=hashlib.sha256(data).hexdigest(),
                    )
                )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PromptError(f"unreadable frozen references: {exc}", path=record_path) from None
        return prompt.with_references(tuple(references))

    def all(self) -> list[PromptVersion]:
        return [self.get(name, v) for name in self.names() for v in self.versions(name)]

    def released(self) -> dict[str, dict[str, str]]:
        if not self.lock_path.exists():
            return {}
        try:
            data = json.loads(self.lock_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise PromptError(
                f"lock file is not valid JSON: {exc.msg}", path=self.lock_path, line=exc.lineno
            ) from None
        return {str(k): {str(v): str(h) for v, h in versions.items()} for k, versions in data.items()}

    def is_released(self, prompt: PromptVersion) -> bool:
        return str(prompt.version) in self.released().get(prompt.name, {})

    def _check_released(self, prompt: PromptVersion) -> None:
        expected = self.released().get(prompt.name, {}).get(str(prompt.version))
        if expected is not None and expected != prompt.sha256:
            nxt = max(self.versions(prompt.name)) + 1
            raise PromptChangedError(
                f"released prompt {prompt.ref} has changed (sha256 {prompt.sha256[:12]}…, released as "
                f"{expected[:12]}…); released versions are immutable: restore it and put your edit in "
                f"v{nxt}.jinja",
                path=prompt.source,
            )

    def release(self, prompt: PromptVersion) -> bool:
        """Record ``prompt`` as released; returns False if it already was."""
        lock = self.released()
        if str(prompt.version) in lock.get(prompt.name, {}):
            self._check_released(prompt)
            return False
        lock.setdefault(prompt.name, {})[str(prompt.version)] = prompt.sha256
        ordered = {n: dict(sorted(v.items(), key=lambda kv: int(kv[0]))) for n, v in sorted(lock.items())}
        self.lock_path.write_text(json.dumps(ordered, indent=2) + "\n", encoding="utf-8")
        return True
