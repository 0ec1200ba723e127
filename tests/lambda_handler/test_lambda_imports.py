"""The deployed function imports the grading path and nothing of the lab.

A fresh interpreter is the only honest check: in the test process, other tests have already
imported whatever they liked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAB = ("mlflow", "pandas", "datasets", "sklearn", "typer", "rich", "numpy")

# google-genai imports httpx when it happens to be installed (its own transport is httpx2), and httpx
# 0.28 then imports its CLI — rich, click, pygments. The zip does not ship httpx (asserted below), so
# the probe imports as the Lambda would: without it.
PROBE = """
import json, sys, time
class NoHttpx:
    def find_spec(self, name, path=None, target=None):
        if name == "httpx" or name.startswith("httpx."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, NoHttpx())
started = time.perf_counter()
import lambda_handler.app
elapsed = time.perf_counter() - started
print(json.dumps({
    "loaded": sorted({name.split(".")[0] for name in sys.modules}),
    "seconds": elapsed,
}))
"""


def test_importing_the_handler_loads_no_lab_dependency_and_no_boto3(bundle_dir: Path) -> None:
    """With a Gemini bundle, google-genai is imported in the init phase; boto3 only when needed."""
    completed = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**os.environ, "PROMPTGRADE_BUNDLE_DIR": str(bundle_dir)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    locked = (ROOT / "lambda_handler" / "requirements.txt").read_text(encoding="utf-8")
    assert not any(line.startswith("httpx==") for line in locked.splitlines())
    loaded = set(json.loads(completed.stdout.strip().splitlines()[-1])["loaded"])
    assert not loaded & set(LAB), f"the handler imports lab packages: {sorted(loaded & set(LAB))}"
    # boto3 is imported only when S3 or the secret is first needed, not on every cold start
    assert "boto3" not in loaded and "botocore" not in loaded
    assert {"promptgrade", "google", "pydantic", "PIL", "jinja2"} <= loaded
