"""Proposals as files: the next free ``prompts/<name>/v<N>.jinja``, unreleased, with their lineage in
the front matter — a plain template a person reviews as a diff, sweeps and promotes like any other.

A proposal that shows reference trays is written with them frozen beside it (``v<N>/refs/``,
``v<N>/references.json``, as ``prompts release`` freezes a rule's choice): a sweep of the version shows
exactly the trays the search measured, and its front matter lists them (a ``references:`` list of the
frozen files) with the steps that chose them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from promptgrade.optimize.pool import Node
from promptgrade.prompts import PromptLibrary, PromptVersion
from promptgrade.reference_sets import freeze
from promptgrade.references import Reference


@dataclass(frozen=True)
class Provenance:
    """What every written version records about the search that wrote it."""

    metric: str
    optimized_on: str  # the split proposals were scored on
    reflected_on: str  # the split whose failures the reflection model was shown
    n_optimized_on: int
    run_id: str | None
    references_from: str | None = None  # where the references came from: a split, or the start version


def write_versions(
    chosen: list[Node],
    nodes: list[Node],
    start: PromptVersion,
    library: PromptLibrary,
    provenance: Provenance,
) -> list[tuple[Node, Path]]:
    """Write ``chosen`` as the next free versions of the start prompt's name; a body showing the same
    references as a version already on disk (an earlier run of the same search) is not written twice —
    the node just points at that version."""
    name = start.name
    existing = {_identity(library.get(name, v)): v for v in library.versions(name)}
    existing[_identity(start)] = start.version  # its references as resolved, whatever its front matter
    version = max(library.versions(name))
    refs: dict[str, str] = {nodes[0].id: f"{name}@{start.version}"}
    fresh = []
    for node in chosen:
        if (same := existing.get((node.body.strip(), node.reference_ids))) is not None:
            node.written_as = refs[node.id] = f"{name}@{same}"
            continue
        version += 1
        refs[node.id] = f"{name}@{version}"
        fresh.append(node)
    written = []
    for node in fresh:
        number = int(refs[node.id].rpartition("@")[2])
        path = library.root / name / f"v{number}.jinja"
        path.write_text(file_text(node, nodes, refs, start, provenance), encoding="utf-8")
        if node.references:
            frozen = freeze(library.get(name, number), list(node.references), library)
            listed = _listed(frozen.references, library.root / name)
            path.write_text(file_text(node, nodes, refs, start, provenance, listed), encoding="utf-8")
        node.written_as = refs[node.id]
        written.append((node, path))
    return written


def _identity(prompt: PromptVersion) -> tuple[str, tuple[str, ...]]:
    return prompt.body.strip(), tuple(r.id for r in prompt.references)


def _listed(references: tuple[Reference, ...], folder: Path) -> list[dict[str, Any]]:
    """The frozen references as a front matter ``references:`` list: the files beside the template and
    their labels, which resolve to the very trays frozen (were ``references.json`` ever lost)."""
    return [
        {
            "file": Path(r.source).relative_to(folder).as_posix(),
            "id": r.id,
            "categories": list(r.categories),
            "grade": r.grade,
        }
        for r in references
    ]


def file_text(
    node: Node,
    nodes: list[Node],
    refs: dict[str, str],
    start: PromptVersion,
    provenance: Provenance,
    references: list[dict[str, Any]] | None = None,
) -> str:
    """The template with its front matter; ``parent`` is the nearest ancestor that is a version. A
    search that showed references also records each step since that parent (``changes``) and the
    frozen references (``references``)."""
    by_id = {n.id: n for n in nodes}
    parent = node.parent
    steps = [node]
    while parent is not None and parent not in refs:
        steps.append(by_id[parent])
        parent = by_id[parent].parent
    seed = nodes[0]
    verb = "rewritten" if all(s.reference_ids == seed.reference_ids for s in steps) else "changed"
    meta: dict[str, Any] = {
        "description": (
            f"{start.ref} {verb} by promptgrade optimize (proposal {node.id}): {provenance.metric} "
            f"{seed.score:.1%} → {node.score:.1%} on {provenance.n_optimized_on} {provenance.optimized_on} examples"
        ),
        "parent": refs[parent or seed.id],
    }
    if seed.references or any(s.references for s in steps):
        meta["changes"] = [f"{s.id}: {s.change}" for s in reversed(steps)]
    meta |= {
        "optimized_on": provenance.optimized_on,
        "reflected_on": provenance.reflected_on,
        "optimization_run_id": provenance.run_id,
        "proposal_run_id": node.run_id,
    }
    if start.structured_output is not None:
        meta["structured_output"] = start.structured_output
    if references:
        meta["references_from"] = provenance.references_from
        meta["references"] = references
    head = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000).strip()
    return f"{{#-\n{head}\n-#}}\n{node.body.rstrip()}\n"


__all__ = ["Provenance", "file_text", "write_versions"]
