"""MLflow: the only package that imports it (the grading path and the Lambda never do).

``runs`` writes sweeps and candidates, ``read`` reads them back for comparison and promotion,
``registry`` manages prompt versions and the ``production`` alias in the MLflow Prompt Registry.
"""

from promptgrade.tracking.runs import DEFAULT_DB, Tracker, tracking_uri

__all__ = ["DEFAULT_DB", "Tracker", "tracking_uri"]
