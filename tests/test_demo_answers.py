"""The committed demo answers (``data/demo_answers.json``, the offline first loop's stand-in answers) are
what their generator writes today: keyed by the sha256 of each test tray as a sweep sends it, so a
change to the sample set or to image preparation fails here, not as a walk-through with no answers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import ROOT


def test_the_committed_demo_answers_are_fresh(tmp_path: Path) -> None:
    out = tmp_path / "demo_answers.json"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_demo_answers.py"), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    committed = ROOT / "data" / "demo_answers.json"
    assert out.read_bytes() == committed.read_bytes(), (
        "data/demo_answers.json is stale: run `python scripts/make_demo_answers.py` and commit it"
    )
