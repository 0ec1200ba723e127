"""Which reference trays a prompt version shows: its front matter's ``references``, resolved.

A version lists its references in one of three ways, resolved here before any paid call:

* **files** beside the template — ``references: [{file: refs/empty.jpg, categories: [rice dish],
  food_remaining_pct: 0}, …]`` (the grade under the task's grade name, or ``grade``; ``id`` defaults
  to the file's stem);
* **a rule** over a split of the experiment's dataset — ``references: {split: train, per_grade: [0,
  25, 50, 75, 100], seed: 7}`` (for each grade point, the tray whose true grade is nearest, within the
  task's tolerance) or ``{split: train, per_category: 1, seed: 7}`` (that many trays of each category
  the split holds, by their first-named category);
* **frozen**, for a released version: the images and labels a release copied beside it
  (``prompts/<name>/v<N>/references.json`` and its ``refs/``, attached by ``PromptLibrary``), which
  stand whatever the front matter says, so a released version shows the same trays forever.

Every reference image is prepared exactly as the dataset's (``prepare_image`` with the experiment's
``image_max_side``), once per sweep. A reference that *is* an evaluated tray — the same id, or the
same prepared pixels — is refused with one line naming both: a model shown the answer is not being
measured.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import mimetypes
import random
import re
from pathlib import Path
from typing import Any

from promptgrade.config import Experiment
from promptgrade.data.examples import Example, LoadedDataset
from promptgrade.data.loaders import load_dataset_split
from promptgrade.errors import PromptError
from promptgrade.images import DEFAULT_MAX_SIDE, ImageError, prepare_image, sniff_mime
from promptgrade.prompts import FROZEN_REFERENCES, PromptLibrary, PromptVersion
from promptgrade.references import Reference
from promptgrade.task import Task

FROZEN_IMAGES = "refs"
RULE_KEYS = {"split", "per_grade", "per_category", "seed"}


def resolve(
    prompt: PromptVersion,
    task: Task,
    *,
    image_max_side: int,
    evaluated: LoadedDataset | None = None,
    load_split: Any = None,
) -> PromptVersion:
    """``prompt`` with its references attached (unchanged if it declares none).

    ``load_split(split) -> LoadedDataset`` loads another split of the experiment's dataset for a rule;
    ``evaluated`` is the split the sweep scores, which no reference may come from.
    """
    spec = prompt.reference_spec
    if prompt.references:  # frozen by a release (or attached by whoever made the version)
        references = [_prepare_attached(prompt, r, image_max_side) for r in prompt.references]
    elif spec is None:
        return prompt
    elif isinstance(spec, list):
        references = _files(prompt, spec, task, image_max_side)
    elif isinstance(spec, dict):
        references = _rule(prompt, spec, task, image_max_side, evaluated, load_split)
    else:
        raise PromptError("references: expected a list of files or a rule (a mapping)", path=prompt.where)
    if not references:
        raise PromptError("references: the list is empty", path=prompt.where)
    if evaluated is not None:
        check_no_leak(prompt, references, evaluated)
    return prompt.with_references(tuple(references))


def check_no_leak(prompt: PromptVersion, references: list[Reference], evaluated: LoadedDataset) -> None:
    by_id = {e.id: e for e in evaluated.examples}
    by_pixels = {e.image.sha256: e for e in evaluated.examples}
    for reference in references:
        same = by_id.get(reference.id) or by_pixels.get(reference.image.sha256)
        if same is not None:
            how = "id" if reference.id == same.id else "image"
            raise PromptError(
                f"reference {reference.id} ({reference.source}) is the evaluated tray {same.id} of split "
                f"{evaluated.split!r} (same {how}): a prompt may not show the trays it is scored on",
                path=prompt.where,
            )


# -- files ---------------------------------------------------------------------------------------------
def _files(prompt: PromptVersion, spec: list[Any], task: Task, image_max_side: int) -> list[Reference]:
    base = Path(prompt.source).parent if prompt.source else Path(".")
    references = []
    for index, entry in enumerate(spec):
        where = f"references[{index}]"
        if not isinstance(entry, dict) or "file" not in entry:
            raise PromptError(f"{where}: expected {{file: …, categories: […], grade}}", path=prompt.where)
        unknown = set(entry) - {"file", "id", "categories", "grade", task.grade.name}
        if unknown:
            raise PromptError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}", path=prompt.where)
        path = base / str(entry["file"])
        ref_id = str(entry.get("id") or Path(str(entry["file"])).stem)
        categories = _categories(prompt, where, ref_id, entry.get("categories"), task)
        grade = _grade(prompt, where, ref_id, entry.get(task.grade.name, entry.get("grade")), task)
        references.append(_prepared(prompt, where, ref_id, path, categories, grade, image_max_side))
    _distinct_ids(prompt, references)
    return references


def _prepared(
    prompt: PromptVersion,
    where: str,
    ref_id: str,
    path: Path,
    categories: tuple[str, ...],
    grade: float | None,
    image_max_side: int,
) -> Reference:
    try:
        data = path.read_bytes()
    except OSError:
        raise PromptError(
            f"{where} ({ref_id}): reference image {path} not found", path=prompt.where
        ) from None
    try:
        image = prepare_image(data, max_side=image_max_side, source=str(path))
    except ImageError as exc:
        raise PromptError(f"{where} ({ref_id}): {exc.message}", path=prompt.where) from None
    return Reference(
        id=ref_id,
        categories=categories,
        grade=grade,
        image=image,
        source=str(path),
        source_sha256=hashlib.sha256(data).hexdigest(),
    )


def _categories(prompt: PromptVersion, where: str, ref_id: str, value: Any, task: Task) -> tuple[str, ...]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names:
        raise PromptError(f"{where} ({ref_id}): categories: expected a list of names", path=prompt.where)
    found = []
    for name in names:
        canonical = task.canonical_category(str(name))
        if canonical is None:
            raise PromptError(
                f"{where} ({ref_id}): category {name!r} is not in task {task.name!r}", path=prompt.where
            )
        found.append(canonical)
    return tuple(found)


def _grade(prompt: PromptVersion, where: str, ref_id: str, value: Any, task: Task) -> float | None:
    if value is None:
        return None
    try:
        grade = float(value)
    except (TypeError, ValueError):
        raise PromptError(
            f"{where} ({ref_id}): {task.grade.name} must be a number", path=prompt.where
        ) from None
    if not task.grade.contains(grade):
        raise PromptError(
            f"{where} ({ref_id}): {task.grade.name} {grade:g} is outside "
            f"{task.grade.minimum:g}–{task.grade.maximum:g}",
            path=prompt.where,
        )
    return grade


def _distinct_ids(prompt: PromptVersion, references: list[Reference]) -> None:
    seen: set[str] = set()
    for reference in references:
        if reference.id in seen:
            raise PromptError(f"references: two references are named {reference.id}", path=prompt.where)
        seen.add(reference.id)


# -- rules ---------------------------------------------------------------------------------------------
def _rule(
    prompt: PromptVersion,
    spec: dict[str, Any],
    task: Task,
    image_max_side: int,
    evaluated: LoadedDataset | None,
    load_split: Any,
) -> list[Reference]:
    unknown = set(spec) - RULE_KEYS
    if unknown:
        raise PromptError(
            f"references: unknown rule field(s) {', '.join(sorted(unknown))}", path=prompt.where
        )
    split = spec.get("split")
    if not isinstance(split, str) or not split:
        raise PromptError("references: a rule needs the split to draw from (split: train)", path=prompt.where)
    if ("per_grade" in spec) == ("per_category" in spec):
        raise PromptError("references: a rule has either per_grade or per_category", path=prompt.where)
    if evaluated is not None and split == evaluated.split:
        raise PromptError(
            f"references: the rule draws from split {split!r}, the split being evaluated; draw from "
            "another (e.g. train)",
            path=prompt.where,
        )
    if load_split is None:
        raise PromptError("references: a rule needs the experiment's dataset", path=prompt.where)
    pool = sorted(load_split(split).examples, key=lambda e: e.id)
    rng = random.Random(spec.get("seed", 0))
    if "per_grade" in spec:
        chosen = _per_grade(prompt, spec["per_grade"], pool, task, rng, split)
    else:
        chosen = _per_category(prompt, spec["per_category"], pool, rng, split)
    origins = load_split(split).image_refs
    return [from_example(example, split, origins.get(example.id, "")) for example in chosen]


def _per_grade(
    prompt: PromptVersion, points: Any, pool: list[Example], task: Task, rng: random.Random, split: str
) -> list[Example]:
    if not isinstance(points, list) or not points:
        raise PromptError("references: per_grade: expected a list of grades", path=prompt.where)
    graded = [e for e in pool if e.labels.grade is not None]
    chosen: list[Example] = []
    for point in points:
        target = float(point)
        free = [e for e in graded if e not in chosen]
        if not free:
            raise PromptError(
                f"references: split {split!r} has no graded tray left for {target:g}", path=prompt.where
            )
        best = min(abs((e.labels.grade or 0.0) - target) for e in free)
        if best > task.grade.tolerance:
            raise PromptError(
                f"references: no tray of split {split!r} is within {task.grade.tolerance:g} of "
                f"{task.grade.name} {target:g} (nearest is {best:g} away)",
                path=prompt.where,
            )
        nearest = [e for e in free if abs((e.labels.grade or 0.0) - target) == best]
        chosen.append(rng.choice(nearest))
    return chosen


def _per_category(
    prompt: PromptVersion, count: Any, pool: list[Example], rng: random.Random, split: str
) -> list[Example]:
    if not isinstance(count, int) or count < 1:
        raise PromptError("references: per_category: expected a whole number ≥ 1", path=prompt.where)
    by_category: dict[str, list[Example]] = {}
    for example in pool:
        if example.labels.categories:
            by_category.setdefault(example.labels.categories[0], []).append(example)
    if not by_category:
        raise PromptError(f"references: split {split!r} has no labelled trays", path=prompt.where)
    short = sorted(name for name, found in by_category.items() if len(found) < count)
    if short:
        raise PromptError(
            f"references: split {split!r} has fewer than {count} tray(s) of {', '.join(short)}",
            path=prompt.where,
        )
    return [e for name in sorted(by_category) for e in rng.sample(by_category[name], count)]


def from_example(example: Example, split: str, origin: str) -> Reference:
    """A dataset tray as a reference; ``source`` is its file where it has one (a release copies that)."""
    return Reference(
        id=example.id,
        categories=example.labels.categories,
        grade=example.labels.grade,
        image=example.image,
        source=origin if origin and Path(origin).is_file() else f"{split}:{example.id}",
    )


# -- attached and frozen ----------------------------------------------------------------------------
def _prepare_attached(prompt: PromptVersion, reference: Reference, image_max_side: int) -> Reference:
    """A reference as stored (a release's frozen file) prepared like every image; its identity —
    id, labels and the stored file's hash — is unchanged, so is the version's sha256."""
    try:
        image = prepare_image(reference.image.data, max_side=image_max_side, source=reference.source)
    except ImageError as exc:
        raise PromptError(f"reference {reference.id}: {exc.message}", path=prompt.where) from None
    return dataclasses.replace(
        reference,
        image=image,
        source_sha256=reference.source_sha256 or hashlib.sha256(reference.image.data).hexdigest(),
    )


def freeze(prompt: PromptVersion, references: list[Reference], library: PromptLibrary) -> PromptVersion:
    """Copy a version's chosen references beside it (``v<N>/refs/`` and ``v<N>/references.json``) and
    return the version as the library now loads it: its sha256 covers the frozen files, so releasing
    it makes them as immutable as its text.

    The original file is copied where there is one (files beside the template, a folder dataset's
    trays); otherwise the prepared image is.
    """
    folder = library.root / prompt.name / f"v{prompt.version}"
    if (folder / FROZEN_REFERENCES).exists():
        raise PromptError(f"{prompt.ref}'s references are frozen already", path=folder / FROZEN_REFERENCES)
    (folder / FROZEN_IMAGES).mkdir(parents=True, exist_ok=True)
    records = []
    for reference in references:
        source = Path(reference.source) if reference.source else None
        data = source.read_bytes() if source is not None and source.is_file() else reference.image.data
        mime = sniff_mime(data) or reference.image.mime_type
        name = f"{FROZEN_IMAGES}/{_safe(reference.id)}{mimetypes.guess_extension(mime) or '.jpg'}"
        (folder / name).write_bytes(data)
        records.append(
            {
                "id": reference.id,
                "file": name,
                "categories": list(reference.categories),
                "grade": reference.grade,
                "sha256": hashlib.sha256(data).hexdigest(),
                "from": reference.source,
            }
        )
    (folder / FROZEN_REFERENCES).write_text(
        json.dumps({"references": records}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return library.get(prompt.name, prompt.version)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "reference"


def freeze_for_release(
    prompt: PromptVersion, library: PromptLibrary, task: Task, experiment: Experiment | None
) -> PromptVersion:
    """Resolve a version's references as a sweep would — a rule against ``experiment``'s dataset, never
    its evaluated split — and freeze them beside it (see ``freeze``)."""
    if isinstance(prompt.reference_spec, dict) and experiment is None:
        raise PromptError(
            f"{prompt.ref} draws its references by a rule: pass --experiment FILE, whose dataset it draws "
            "them from (and whose evaluated split it must not)",
            path=prompt.where,
        )
    evaluated = None
    load_split = None
    max_side = DEFAULT_MAX_SIDE
    if experiment is not None:
        config = experiment.dataset.model_copy(update={"limit": None})
        evaluated = load_dataset_split(config, task, experiment.base_dir)
        max_side = config.image_max_side

        def load_split(split: str) -> LoadedDataset:
            return load_dataset_split(config, task, experiment.base_dir, split=split)

    resolved = resolve(prompt, task, image_max_side=max_side, evaluated=evaluated, load_split=load_split)
    return freeze(prompt, list(resolved.references), library)
