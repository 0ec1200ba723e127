"""A stand-in for the Lambda runtime's /var/runtime, for running the built zip in isolation.

The real runtime provides boto3 and its dependencies and nothing else; a fresh interpreter whose
path holds only the unzipped package and this folder shows whether the zip is self-sufficient.
Shared by the packaging tests and the cold-start benchmark, so both isolate the zip the same way.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

RUNTIME_MODULES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")
MARK = "RESULT:"  # the line a script prints its JSON result on, among whatever else it prints


def runtime_dir(parent: Path) -> Path:
    """Links to boto3 and its dependencies only (not the whole venv), in ``parent/var-runtime``."""
    folder = parent / "var-runtime"
    folder.mkdir()
    for name in RUNTIME_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin:
            raise RuntimeError(f"{name} is not installed here")
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        (folder / source.name).symlink_to(source, target_is_directory=source.is_dir())
    return folder


def isolated_env(home: Path, **variables: str) -> dict[str, str]:
    """A minimal environment with AWS credentials that can reach no account, plus ``variables``: no
    developer profile or key of this machine leaks into the isolated interpreter."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_CONFIG_FILE": "/dev/null",
        **variables,
    }


def run_isolated(
    script: str, task_dir: Path, env: dict[str, str], *, stdin: str | None = None, timeout_s: float = 120
) -> Any:
    """What ``script`` printed after ``MARK`` (as JSON), run by a fresh interpreter (``-I -S``: no user
    site, no venv) whose path holds only ``task_dir`` — the unzipped package — and a stand-in runtime
    made beside it. A failed run is a RuntimeError carrying the end of its output."""
    runtime = runtime_dir(Path(task_dir).parent)
    prelude = f"import sys\nsys.path[:0] = [{str(task_dir)!r}, {str(runtime)!r}]\n"
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", prelude + script],
        input=stdin,
        env=env,
        cwd=runtime.parent,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(MARK)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"the isolated interpreter failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return json.loads(line.removeprefix(MARK))
