"""Trained baselines: image models scored by the same evaluator as the prompts, so each prompt has a
floor to beat.

Importing this package needs neither torch (the optional ``cnn`` extra) nor mlflow: torch is loaded
only when a cnn is created, and logging a baseline as an MLflow model is ``tracking.models``'s.
"""

from promptgrade.baseline.classical import ClassicalBaseline
from promptgrade.baseline.features import image_features
from promptgrade.baseline.model import (
    KINDS,
    Baseline,
    Progress,
    available_kinds,
    create_baseline,
    load_baseline,
)
from promptgrade.baseline.train import check_disjoint, train_and_predict

__all__ = [
    "KINDS",
    "Baseline",
    "ClassicalBaseline",
    "Progress",
    "available_kinds",
    "check_disjoint",
    "create_baseline",
    "image_features",
    "load_baseline",
    "train_and_predict",
]
