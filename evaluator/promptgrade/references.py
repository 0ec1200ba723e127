"""Reference images: labelled trays a prompt shows the model before (or around) the tray it grades.

For grading ("how much food is left"), showing graded examples — visual anchors — is the strongest
lever a prompt has. A template places them with ``{{ ref.image }}`` in a loop over ``references``
and the tray with ``{{ image }}``; rendering yields an ordered sequence of text and image slots
(``RenderedPrompt``), and every provider sends that sequence as it is. This module is part of the
grading path (the Lambda renders the same way with the references its bundle carries), so it holds
only the values, the rendering and the stored form (``ReferenceRecord``: a candidate run's artifacts
and a Lambda bundle keep each reference as its labels, hashes and the image file sent); choosing
references from a dataset is the lab's (``reference_sets``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from promptgrade.errors import ConfigError
from promptgrade.providers.base import ImageInput, Part, TextPart

TRAY = -1  # the image slot of the tray being graded; a reference's slot is its index
# Markers Jinja writes where an image goes: private-use characters no template text contains.
_OPEN, _CLOSE = "\ue000", "\ue001"
_MARKER = re.compile(f"{_OPEN}(-?[0-9]+){_CLOSE}")
# The folder holding the reference images beside their records: in a candidate run's artifacts and in
# a Lambda bundle alike, so promotion copies one into the other file for file.
REFERENCES_DIR = "references"


@dataclass(frozen=True, slots=True)
class Reference:
    """One reference tray: its labels and its prepared image (what is sent, byte for byte)."""

    id: str
    categories: tuple[str, ...]
    grade: float | None
    image: ImageInput = field(repr=False)
    source: str = ""  # where it came from: a file beside the template, or a dataset example
    # the original file's sha256 where there is a file (what a released version freezes); else the
    # prepared image's
    source_sha256: str = ""

    @property
    def identity(self) -> dict[str, Any]:
        """What makes this reference this reference, for the prompt version's sha256."""
        return {
            "id": self.id,
            "categories": list(self.categories),
            "grade": self.grade,
            "sha256": self.source_sha256 or self.image.sha256,
        }


class ReferenceRecord(BaseModel):
    """A reference as stored beside its image file: what a run logged and a bundle ships.

    The image is the prepared one, byte for byte what the model was sent; ``sha256`` is its hash, so a
    file that changed after it was recorded is refused rather than sent as if it had been measured.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    file: str = Field(description="The image's file name in the references folder.")
    categories: tuple[str, ...]
    grade: float | None = None
    mime_type: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    source: str = ""  # where the lab took it from (a file beside the template, or split:example id)
    # the original file's sha256 where there was a file: the version's sha256 covers that, not the
    # prepared image, so it travels with the reference for the version's hash to be checked anywhere
    source_sha256: str = ""

    @classmethod
    def of(cls, reference: Reference) -> ReferenceRecord:
        # the id, made safe for a path, and the image's type
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", reference.id).strip("-") or "reference"
        return cls(
            id=reference.id,
            file=f"{safe}.{reference.image.mime_type.rpartition('/')[2]}",
            categories=reference.categories,
            grade=reference.grade,
            mime_type=reference.image.mime_type,
            sha256=reference.image.sha256,
            source=reference.source,
            source_sha256=reference.source_sha256,
        )

    def load(self, folder: Path) -> Reference:
        """The reference with its image read from ``folder``; a missing or changed file is a
        ConfigError naming it."""
        path = folder / self.file
        if PurePosixPath(self.file).name != self.file or self.file in ("", ".", ".."):
            raise ConfigError(
                f"reference {self.id}: file {self.file!r} must be a plain file name", path=folder
            )
        try:
            data = path.read_bytes()
        except OSError:
            raise ConfigError(f"reference image of {self.id} is missing", path=path) from None
        found = hashlib.sha256(data).hexdigest()
        if found != self.sha256:
            raise ConfigError(
                f"reference image of {self.id} changed after it was recorded (sha256 {found[:12]}…, "
                f"recorded {self.sha256[:12]}…)",
                path=path,
            )
        return Reference(
            id=self.id,
            categories=self.categories,
            grade=self.grade,
            image=ImageInput(data, self.mime_type, found),
            source=self.source,
            source_sha256=self.source_sha256,
        )


def write_references(folder: Path, references: tuple[Reference, ...]) -> tuple[ReferenceRecord, ...]:
    """Each reference's image into ``folder`` under its record's file name; returns the records."""
    records = tuple(ReferenceRecord.of(r) for r in references)
    files = [r.file for r in records]
    if clash := sorted({f for f in files if files.count(f) > 1}):
        raise ConfigError(f"two references would share the file name {clash[0]}: give them distinct ids")
    folder.mkdir(parents=True, exist_ok=True)
    for record, reference in zip(records, references, strict=True):
        (folder / record.file).write_bytes(reference.image.data)
    return records


def references_sha256(text: str, references: tuple[Reference, ...]) -> str:
    """A version's sha256 when it shows references: its text and every reference, in order."""
    payload = {"text": text, "references": [r.identity for r in references]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class TemplateReference:
    """A reference as a template sees it: ``ref.id``, ``ref.categories``, ``ref.grade``, ``ref.image``."""

    def __init__(self, index: int, reference: Reference) -> None:
        self.id = reference.id
        self.categories = list(reference.categories)
        self.grade = reference.grade
        self.image = image_marker(index)

    def __str__(self) -> str:
        return self.id


def image_marker(slot: int) -> str:
    return f"{_OPEN}{slot}{_CLOSE}"


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    """A rendered template: text, and where each image goes.

    ``parts`` is empty for a template that never places an image (every template before references):
    the tray then goes first and the text after it, exactly as requests have always been built.
    """

    text: str  # the text parts joined: the prompt's words
    parts: tuple[str | int, ...] = ()  # text, or an image slot (TRAY or a reference's index)
    references: tuple[Reference, ...] = ()

    @property
    def n_images(self) -> int:
        return 1 + len(self.references)

    @property
    def display(self) -> str:
        """The prompt as a person reads it in MLflow: the text with each image named where it goes."""
        if not self.parts:
            return self.text
        shown = []
        for part in self.parts:
            if isinstance(part, str):
                shown.append(part)
            elif part == TRAY:
                shown.append("[image: the tray to grade]\n")
            else:
                shown.append(f"[image: reference {self.references[part].id}]\n")
        return "".join(shown)

    def request_parts(self, tray: ImageInput) -> tuple[Part, ...]:
        """The sequence a request carries (empty for a plain prompt: tray first, then the text)."""
        if not self.parts:
            return ()
        return tuple(
            TextPart(part) if isinstance(part, str) else tray if part == TRAY else self.references[part].image
            for part in self.parts
        )


def split_rendered(rendered: str, references: tuple[Reference, ...]) -> RenderedPrompt:
    """Cut Jinja's output at the image markers. Each text run is stripped and ends with one newline,
    as a whole rendered prompt always has; a template that placed no image is returned as plain text.

    Raises ValueError (the caller words it with the template's name): two trays, or a reference
    placed twice.
    """
    pieces = _MARKER.split(rendered)
    if len(pieces) == 1:
        return RenderedPrompt(text=rendered.strip() + "\n", references=references)
    parts: list[str | int] = []
    seen: set[int] = set()
    for position, piece in enumerate(pieces):
        if position % 2 == 0:
            if piece.strip():
                parts.append(piece.strip() + "\n")
            continue
        slot = int(piece)
        if slot in seen:
            raise ValueError(
                "the tray ({{ image }}) is placed twice"
                if slot == TRAY
                else f"reference {references[slot].id} ({{{{ ref.image }}}}) is placed twice"
            )
        seen.add(slot)
        parts.append(slot)
    if missing := [r.id for i, r in enumerate(references) if i not in seen]:
        raise ValueError(
            f"reference(s) {', '.join(missing)} are never placed: write {{{{ ref.image }}}} in a "
            "{% for ref in references %} loop"
        )
    if TRAY not in seen:
        parts.insert(0, TRAY)  # a template that shows references but never says where the tray goes
    text = "".join(part for part in parts if isinstance(part, str))
    return RenderedPrompt(text=text, parts=tuple(parts), references=references)
