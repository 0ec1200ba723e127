"""PyTorch (the optional ``cnn`` extra) for the CNN tests: skipped where it is not installed, unless required.

A skip is the right answer on a laptop without the extra, and the wrong one in CI, where a missing
torch would silently drop every CNN test. ``PROMPTGRADE_REQUIRE_CNN=1`` (set by ``.ci/run`` when the
CPU wheel is available) turns the skip into a failure.
"""

from __future__ import annotations

import os
from types import ModuleType

import pytest

REQUIRE_CNN = "PROMPTGRADE_REQUIRE_CNN"


def import_torch() -> ModuleType:
    """``torch``, or a skip — or, when ``PROMPTGRADE_REQUIRE_CNN=1``, a failure naming the variable."""
    if os.environ.get(REQUIRE_CNN, "") not in ("", "0"):
        try:
            import torch
        except ImportError as exc:
            pytest.fail(f"{REQUIRE_CNN} is set but torch cannot be imported: {exc}", pytrace=False)
        return torch
    return pytest.importorskip("torch")
