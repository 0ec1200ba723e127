"""Shipping: turn a promoted bundle into a Lambda zip, and put that zip live behind an alias.

Kept apart from the grading path (nothing in the Lambda imports this) and from the lab's MLflow code:
packaging needs uv, deploying needs boto3, and neither belongs in the function they build.

``promptgrade.shipping.package.build_package`` builds; ``promptgrade.shipping.deploy.deploy`` deploys.
Names are re-exported lazily so that ``python -m promptgrade.shipping.package`` does not import its
own module twice, and building never imports boto3. The ``deploy`` function is not re-exported: it
would be shadowed by its own module's name.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GRADING_PATH": "package",
    "HANDLER": "package",
    "SUPPORTED_RUNTIMES": "package",
    "PackageReport": "package",
    "PackagingError": "package",
    "build_package": "package",
    "DeployError": "deploy",
    "DeployReport": "deploy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
