"""Label Studio's JSON export, crafted from tasks promptgrade wrote and the annotations a test wants,
shaped exactly like a real export (``tests/labels/label_studio_1.23.2_export.json``)."""

from __future__ import annotations

import json
from typing import Any

from helpers import ROOT

# One task exactly as Label Studio 1.23.2 exported it (GET /api/projects/1/export?exportType=JSON) after
# importing `label export`'s tasks and config and annotating; crafted exports are copies of it.
REAL_EXPORT = ROOT / "tests" / "labels" / "label_studio_1.23.2_export.json"


def ls_export(tasks: list[dict], annotate: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Label Studio's JSON export of ``tasks`` with the given annotations, shaped like the real one."""
    [template] = json.loads(REAL_EXPORT.read_text(encoding="utf-8"))
    exported = []
    for position, item in enumerate(tasks):
        task_id = 1000 + position
        annotations = []
        for number, spec in enumerate(annotate.get(item["data"]["example_id"], [])):
            result = []
            if "categories" in spec:
                result.append(
                    {
                        "from_name": spec.get("from_name", "categories"),
                        "to_name": "image",
                        "type": "choices",
                        "value": {"choices": spec["categories"]},
                        "origin": "manual",
                    }
                )
            if "grade" in spec:
                result.append(
                    {
                        "from_name": "food_remaining_pct",
                        "to_name": "image",
                        "type": "number",
                        "value": {"number": spec["grade"]},
                        "origin": "manual",
                    }
                )
            annotation = json.loads(json.dumps(template["annotations"][0]))
            at = spec.get("at", "2026-12-02T01:30:00.000000Z")
            annotation.update(
                id=task_id * 10 + number,
                completed_by=spec.get("by", 1),
                updated_by=spec.get("by", 1),
                result=result,
                was_cancelled=spec.get("cancelled", False),
                created_at=at,
                updated_at=at,
                task=task_id,
            )
            annotations.append(annotation)
        task = json.loads(json.dumps(template))
        task.update(
            id=task_id,
            inner_id=position + 1,
            data=item["data"],
            annotations=annotations,
            total_annotations=len(annotations),
            predictions=[task_id] if item.get("predictions") else [],
        )
        exported.append(task)
    return exported
