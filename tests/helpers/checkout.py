"""A copy of the sources a Lambda zip is built from — the handler and promptgrade — for the packaging
tests that edit one of them, or that must not see edits made to the working tree while they run."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_NOT_SOURCES = shutil.ignore_patterns("__pycache__", "build", "*.pyc")


def copy_project(destination: Path) -> Path:
    """``lambda_handler/`` and ``evaluator/promptgrade/`` under ``destination`` (a ``project_root``
    for ``build_package``), without build output or bytecode."""
    for parts in (("lambda_handler",), ("evaluator", "promptgrade")):
        shutil.copytree(ROOT.joinpath(*parts), destination.joinpath(*parts), ignore=_NOT_SOURCES)
    return destination
