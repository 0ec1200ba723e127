"""Proposals as files: the next free ``prompts/<name>/v<N>.jinja``, unreleased, with their lineage in
the front matter — a plain template a person reviews as a diff, sweeps and promotes like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from promptgrade.optimize.pool import Node
from promptgrade.prompts import PromptLibrary, PromptVersion


@dataclass(frozen=True)
class Provenance:
    """What every written version records about the search that wrote it."""

    metric: str
    optimized_on: str  # the split proposals were scored on
    reflected_on: str  # the split whose failures the reflection model was shown
    n_optimized_on: int
    run_id: str | None


def write_versions(
    chosen: list[Node],
    nodes: list[Node],
    start: PromptVersion,
    library: PromptLibrary,
    provenance: Provenance,
) -> list[tuple[Node, Path]]:
    """Write ``chosen`` as the next free versions of the start prompt's name; a body already on disk
    (an earlier run of the same search) is not written twice — the node just points at that version."""
    name = start.name
    existing = {library.get(name, v).body.strip(): v for v in library.versions(name)}
    version = max(existing.values())
    refs: dict[str, str] = {nodes[0].id: f"{name}@{start.version}"}
    fresh = []
    for node in chosen:
        if (same := existing.get(node.body.strip())) is not None:
            node.written_as = refs[node.id] = f"{name}@{same}"
            continue
        version += 1
        refs[node.id] = f"{name}@{version}"
        fresh.append(node)
    written = []
    for node in fresh:
        path = library.root / name / f"v{refs[node.id].rpartition('@')[2]}.jinja"
        path.write_text(file_text(node, nodes, refs, start, provenance), encoding="utf-8")
        node.written_as = refs[node.id]
        written.append((node, path))
    return written


def file_text(
    node: Node, nodes: list[Node], refs: dict[str, str], start: PromptVersion, provenance: Provenance
) -> str:
    """The template with its front matter; ``parent`` is the nearest ancestor that is a version."""
    by_id = {n.id: n for n in nodes}
    parent = node.parent
    while parent is not None and parent not in refs:
        parent = by_id[parent].parent
    seed = nodes[0]
    meta: dict[str, Any] = {
        "description": (
            f"{start.ref} rewritten by promptgrade optimize (proposal {node.id}): {provenance.metric} "
            f"{seed.score:.1%} → {node.score:.1%} on {provenance.n_optimized_on} {provenance.optimized_on} examples"
        ),
        "parent": refs[parent or seed.id],
        "optimized_on": provenance.optimized_on,
        "reflected_on": provenance.reflected_on,
        "optimization_run_id": provenance.run_id,
        "proposal_run_id": node.run_id,
    }
    if start.structured_output is not None:
        meta["structured_output"] = start.structured_output
    head = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000).strip()
    return f"{{#-\n{head}\n-#}}\n{node.body.rstrip()}\n"


__all__ = ["Provenance", "file_text", "write_versions"]
