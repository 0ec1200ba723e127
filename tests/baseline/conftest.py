"""Synthetic labelled trays for the baseline tests: the truth is known by construction.

Each image is a near-white "plate" with one coloured rectangle: the category is the colour (so a
model that reads colour can separate them) and the grade is the share of the image the rectangle
covers (so a model that reads coverage can estimate it). Different seeds give different trays.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from promptgrade.answers import Prediction
from promptgrade.baseline.evaluate import score_predictions
from promptgrade.data.examples import Example, Labels
from promptgrade.providers.base import ImageInput
from promptgrade.scoring import Estimate, summarise
from promptgrade.task import GradeScale, Task

COLOURS = {
    "soup": (200, 40, 30),
    "salad": (40, 160, 50),
    "dessert": (60, 70, 200),
    "bread": (220, 190, 40),
}
TASK = Task(
    name="synthetic_trays",
    categories=(*COLOURS, "pasta"),  # "pasta" is never drawn: a category training cannot learn
    max_categories=2,
    grade=GradeScale(name="food_remaining_pct", minimum=0, maximum=100, tolerance=10),
)

MakeExamples = Callable[..., list[Example]]


def tray_image(category: str, grade: float, rng: np.random.Generator, size: int = 64) -> bytes:
    """JPEG bytes: a plate with a ``category``-coloured band covering ``grade`` % of the picture."""
    pixels = np.full((size, size, 3), 235, dtype=np.int16) + rng.integers(-6, 7, (size, size, 1))
    rows = round(size * grade / 100)
    top = int(rng.integers(0, size - rows + 1))
    colour = np.array(COLOURS[category], dtype=np.int16) + rng.integers(-15, 16, 3)
    pixels[top : top + rows] = colour + rng.integers(-8, 9, (rows, size, 1))
    buffer = BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_examples(
    n: int, seed: int, categories: tuple[str, ...] = tuple(COLOURS), prefix: str = "tray"
) -> list[Example]:
    """``n`` trays cycling through ``categories``, grades 20–90 % in steps of 5."""
    rng = np.random.default_rng(seed)
    examples = []
    for index in range(n):
        category = categories[index % len(categories)]
        grade = float(rng.integers(4, 19) * 5)
        image = ImageInput(data=tray_image(category, grade, rng), mime_type="image/jpeg")
        labels = Labels(categories=(category,), grade=grade)
        examples.append(Example(id=f"{prefix}-{seed}-{index:03d}", image=image, labels=labels))
    return examples


def evaluate(predictions: list[Prediction], examples: list[Example], task: Task) -> dict[str, float]:
    """The project's own metrics for baseline predictions, exactly as a sweep would score them."""
    outcomes = score_predictions(predictions, examples, task)
    return {k: v.value if isinstance(v, Estimate) else v for k, v in summarise(outcomes).items()}


@pytest.fixture
def store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _migrated_mlflow_db: Path
) -> Iterator[tuple[str, str]]:
    """A local sqlite MLflow store in tmp_path with one RUNNING run, as the tracker would create it."""
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # anything mlflow writes relative to the working directory lands here
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copy(_migrated_mlflow_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("baselines", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    yield uri, run_id
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="session")
def task() -> Task:
    return TASK


@pytest.fixture(scope="session")
def make() -> MakeExamples:
    """``make(n, seed, categories=..., prefix=...)`` → synthetic examples."""
    return make_examples


@pytest.fixture(scope="session")
def draw() -> Callable[[str, float, np.random.Generator], bytes]:
    """``draw(category, grade, rng)`` → JPEG bytes of one synthetic tray."""
    return tray_image


@pytest.fixture(scope="session")
def metrics() -> Callable[[list[Prediction], list[Example]], dict[str, float]]:
    """``metrics(predictions, examples)`` → the sweep's metrics for them on the synthetic task."""
    return lambda predictions, examples: evaluate(predictions, examples, TASK)
