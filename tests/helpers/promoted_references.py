"""A sweep of a prompt that shows reference trays, then its promotion: the bundle the tests of
promotion, the Lambda and the package start from, and the requests the sweep sent to compare with.

The prompt is the sample set's ``meal_tray_anchors@2`` (five graded trays drawn from the train split
by a rule), swept on the first test trays against the local Gemini server, promoted with the CLI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner, Result

from helpers.scripted_sweeps import ROOT, write_experiment
from promptgrade.cli import app
from promptgrade.data.examples import Example
from promptgrade.testing.gemini_server import FakeGemini, RequestInfo

PROMPT = "meal_tray_anchors@2"
N_REFERENCES = 5
RUNNER = CliRunner(env={"COLUMNS": "240"})


@dataclass(frozen=True)
class Promoted:
    bundle_dir: Path
    examples: list[Example]  # the evaluated trays, by id
    requests: list[RequestInfo]  # what the sweep sent, one per tray

    def request_for(self, example: Example) -> RequestInfo:
        return next(r for r in self.requests if r.image_sha256 == example.image.sha256)

    def tray_file(self, example: Example) -> Path:
        """The tray as a client would send it: the original file, before preparation."""
        return next((ROOT / "data" / "sample" / "images").glob(f"{example.id}.*"))


def truthful(examples: list[Example]) -> object:
    """The server's answer: each tray's own labels, so every candidate is eligible for promotion."""
    by_sha = {e.image.sha256: e for e in examples}

    def answer(request: RequestInfo) -> str:
        labels = by_sha[request.image_sha256 or ""].labels
        return json.dumps({"categories": list(labels.categories), "food_remaining_pct": labels.grade or 0})

    return answer


def sweep_and_promote(tmp_path: Path, server: FakeGemini, tracking: str, n: int = 8) -> Promoted:
    """Needs the ``fake_api_key`` fixture (the sweep's Gemini client reads the key)."""
    path = tmp_path / "exp.yaml"
    examples = write_experiment(path, name="anchors", base_url=server.base_url, n=n, prompts=PROMPT)
    server.default_answer = truthful(examples)
    swept = RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", tracking])
    assert swept.exit_code == 0, swept.output
    requests = list(server.requests)
    bundle = tmp_path / "bundle"
    promoted = promote(tracking, bundle, n)
    assert promoted.exit_code == 0, promoted.output
    return Promoted(bundle, examples, requests)


def promote(tracking: str, bundle: Path, n: int = 8) -> Result:
    command = ["promote", "-e", "anchors", "--tracking-uri", tracking, "--bundle-dir", str(bundle)]
    return RUNNER.invoke(app, [*command, "--min-examples", str(n)])
