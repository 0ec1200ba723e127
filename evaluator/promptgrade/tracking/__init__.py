"""MLflow: the only package that imports it (the grading path and the Lambda never do).

``runs`` writes sweeps and candidates, ``writer`` runs those writes in a process of their own so a
sweep's requests never wait for them, ``traces`` builds and writes the per-example traces, ``read``
reads runs back for comparison and promotion, ``registry`` manages prompt versions and the
``production`` alias in the MLflow Prompt Registry. Importing this package imports no mlflow: the
classes that need it load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from promptgrade.tracking.uri import DEFAULT_DB, tracking_uri

if TYPE_CHECKING:
    from promptgrade.tracking.runs import Tracker

__all__ = ["DEFAULT_DB", "Tracker", "tracking_uri"]


def __getattr__(name: str) -> Any:
    if name == "Tracker":
        from promptgrade.tracking.runs import Tracker

        return Tracker
    raise AttributeError(name)
