"""A stand-in for the Lambda runtime's /var/runtime, for running the built zip in isolation.

The real runtime provides boto3 and its dependencies and nothing else; a fresh interpreter whose
path holds only the unzipped package and this folder shows whether the zip is self-sufficient.
Shared by the packaging tests and the cold-start benchmark, so both isolate the zip the same way.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

RUNTIME_MODULES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")


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
