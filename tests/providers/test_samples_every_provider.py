"""Given ``samples: 3`` on any provider, when its local server answers each tray three ways (scripted by
order of arrival), then the runner asks three times per tray through that provider's real client and
the vote, the agreement, the unvoted sample accuracy and the selective accuracy are exactly what is
computed here by hand."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from helpers.provider_servers import ServedProvider, write_experiment
from helpers.sweeps import run_connected
from promptgrade.sweep import Sweep

N = 3


def test_three_samples_vote_on_every_provider(served: ServedProvider, tmp_path: Path) -> None:
    path = write_experiment(tmp_path / "exp.yaml", [served], name="samples", n=N, extra="concurrency: 1\n")
    text = path.read_text(encoding="utf-8").replace(
        f"    model: {served.model}\n", f"    model: {served.model}\n    samples: 3\n    abstain_below: 0.6\n"
    )
    path.write_text(text, encoding="utf-8")
    sweep = Sweep(path)
    examples = sorted(sweep.dataset.examples, key=lambda e: e.id)
    by_sha = {e.image.sha256: e for e in examples}
    arrivals: Counter[str] = Counter()
    plans = [["right", "right", "snack"], ["snack", "snack", "right"], ["right", "snack", "fruit"]]

    def answer(request: Any) -> str:
        example = by_sha[request.image_sha256]
        which = plans[examples.index(example)][arrivals[example.id]]
        arrivals[example.id] += 1
        categories = list(example.labels.categories) if which == "right" else [which]
        return json.dumps({"categories": categories, "food_remaining_pct": example.labels.grade})

    served.answer(answer)
    sweep.connect()

    [result] = run_connected(sweep)

    assert served.server.calls == 3 * N
    metrics = {k: getattr(v, "value", v) for k, v in result.metrics.items()}
    assert metrics["category_accuracy"] == pytest.approx(
        2 / 3
    )  # A right, B wrong, C right (earliest of a tie)
    assert metrics["agreement_mean"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 3) / 3)
    assert metrics["sample_category_accuracy"] == pytest.approx(4 / 9)
    assert metrics["coverage"] == pytest.approx(2 / 3)  # C abstained
    assert metrics["selective_category_accuracy"] == pytest.approx(1 / 2)
