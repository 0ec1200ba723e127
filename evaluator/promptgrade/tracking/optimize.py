"""An optimisation as MLflow records it: one run, one nested run per template tried, the lineage tree.

The parent run holds what was asked (start prompt, models, budget, splits) and what came of it (the
best score, the calls and dollars spent, the versions written, ``lineage.json``); each nested run holds
one template's text, the reflection answer it came from and its metrics on the optimisation split, so
a person can read the search afterwards and see why each proposal was kept or rejected. A prompt that
shows reference trays names them on its run (tag ``references``, param ``n_references``, as a sweep's
candidate does), with what the proposal changed (tag ``change``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric, Param, RunTag

from promptgrade.scoring import flatten
from promptgrade.tracking.runs import Tracker

if TYPE_CHECKING:
    from promptgrade.optimize.pool import Node
    from promptgrade.runner import Budget

KIND = "optimization"


class OptimizationTracker(Tracker):
    """The experiment's MLflow store (same resolution as a sweep's), with an optimisation's runs."""

    run_id: str

    def start(self, params: dict[str, Any]) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"optimize {params['start_prompt']} {time.strftime('%Y-%m-%d %H:%M:%S')}",
            tags={"promptgrade.kind": KIND, "start_prompt": str(params["start_prompt"])},
        )
        self.run_id = run.info.run_id
        self.client.log_batch(
            self.run_id, params=[Param(k, "" if v is None else str(v)) for k, v in params.items()]
        )
        return self.run_id

    def log_node(self, node: Node) -> None:
        """One nested run per template: its text, where it came from, and how it did."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=node.id if node.parent is None else f"{node.id} ← {node.parent}",
            tags={
                "mlflow.parentRunId": self.run_id,
                "promptgrade.kind": "proposal",
                "proposal": node.id,
                "proposal_status": node.status,
                **({"rejected_reason": node.reason[:5000]} if node.reason else {}),
                **({"change": node.change[:5000]} if node.change else {}),
                **({"references": ",".join(node.reference_ids)[:5000]} if node.references else {}),
            },
        )
        node.run_id = run_id = run.info.run_id
        params = [
            Param("proposal", node.id),
            Param("parent", node.parent or ""),
            Param("round", str(node.round)),
        ]
        if node.references:
            params.append(Param("n_references", str(len(node.references))))
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in flatten(node.metrics).items()]
        if node.scores:
            metrics.append(Metric("score", node.score, now, 0))
        if node.minibatch is not None:
            metrics += [
                Metric("minibatch_parent_score", node.minibatch[0], now, 0),
                Metric("minibatch_score", node.minibatch[1], now, 0),
            ]
        self.client.log_batch(run_id, metrics=metrics, params=params)
        if node.body:
            self.client.log_text(run_id, node.body, "template.jinja")
        if node.reflection_prompt is not None:
            self.client.log_text(run_id, node.reflection_prompt, "reflection_prompt.txt")
        if node.reflection_answer is not None:
            self.client.log_text(run_id, node.reflection_answer, "reflection_answer.txt")
        if node.scores:
            self.client.log_dict(run_id, node.scores, "scores.json")
        self.client.set_terminated(run_id)

    def finish(
        self,
        nodes: list[Node],
        written: list[tuple[Node, Path]],
        status: str,
        stop_reason: str,
        budget: Budget,
    ) -> None:
        for node, path in written:
            if node.run_id:
                self.client.set_tag(node.run_id, "written_as", node.written_as or str(path))
        self.client.log_dict(self.run_id, lineage(nodes), "lineage.json")
        self.client.log_text(self.run_id, lineage_text(nodes), "lineage.txt")
        scored = [n for n in nodes if n.scores]
        now = int(time.time() * 1000)
        metrics = {"calls": float(budget.calls), "cost_usd": budget.spent_usd, "n_proposals": len(nodes) - 1}
        metrics["n_rejected"] = sum(n.status == "rejected" for n in nodes)
        if scored:
            metrics["start_score"] = scored[0].score if scored[0].parent is None else math.nan
            metrics["best_score"] = max(n.score for n in scored)
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if not math.isnan(float(v))],
            tags=[
                RunTag("stop_reason", stop_reason[:5000]),
                RunTag("written_versions", ", ".join(n.written_as or "" for n, _ in written)),
                RunTag("promptgrade.partial", str(status != "FINISHED").lower()),
            ],
        )
        self.client.set_terminated(self.run_id, status=status)


def lineage(nodes: list[Node]) -> dict[str, Any]:
    """The search tree: every template with its parent, outcome and (if written) its version."""
    return {
        "nodes": [
            {
                "id": n.id,
                "parent": n.parent,
                "round": n.round,
                "status": n.status,
                "reason": n.reason,
                "score": None if not n.scores else n.score,
                "minibatch": None if n.minibatch is None else list(n.minibatch),
                "written_as": n.written_as,
                "run_id": n.run_id,
                "change": n.change,
                "references": list(n.reference_ids),
            }
            for n in nodes
        ]
    }


def lineage_text(nodes: list[Node]) -> str:
    """The same tree, indented, for reading in the MLflow UI's artifact view."""
    children: dict[str | None, list[Node]] = {}
    for node in nodes:
        children.setdefault(node.parent, []).append(node)
    lines: list[str] = []

    def walk(node: Node, depth: int) -> None:
        score = "" if not node.scores else f" score={node.score:.3f}"
        written = f" → {node.written_as}" if node.written_as else ""
        shown = f" refs={','.join(node.reference_ids)}" if node.references else ""
        reason = f" ({node.reason})" if node.reason else ""
        lines.append(f"{'  ' * depth}{node.id} [{node.status}]{score}{written}{shown}{reason}")
        for child in children.get(node.id, []):
            walk(child, depth + 1)

    for root in children.get(None, []):
        walk(root, 0)
    return "\n".join(lines) + "\n"


__all__ = ["OptimizationTracker", "lineage", "lineage_text"]
