"""The CNN baseline: the original study's kind of model, a small convolutional network trained from
scratch on the labelled tray images, with one head for categories and one for the grade.

It exists to reproduce the study's comparison honestly (a trained image model vs a prompted LLM) on
the same examples and the same scorer. It is deliberately small — four conv blocks on 96×96 inputs —
so that it trains in seconds on a laptop CPU; a bigger or pre-trained network is a different baseline
and should get a different kind name.

torch is an optional extra, so this module is imported only when the ``cnn`` kind is asked for.
Training is reproducible for a given seed: weights are seeded, shuffling and flips draw from a private
generator, and training runs on one thread with deterministic algorithms (both process-global switches,
restored afterwards).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from promptgrade.answers import Prediction
from promptgrade.baseline.base import (
    DEFAULT_SECOND_CATEGORY_THRESHOLD,
    Progress,
    decide,
    manifest_task,
    read_manifest,
    training_targets,
    write_manifest,
)
from promptgrade.baseline.features import decode
from promptgrade.errors import ProviderError
from promptgrade.task import Task

if TYPE_CHECKING:
    from promptgrade.data.examples import Example

KIND = "cnn"
_WEIGHTS_FILE = "model.pt"
_CHANNELS = (16, 32, 64, 128)


class TrayNet(nn.Module):
    """Four conv–BN–ReLU–pool blocks, global average pooling, and two linear heads."""

    def __init__(self, n_categories: int, dropout: float = 0.2) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        previous = 3
        for channels in _CHANNELS:
            blocks += [
                nn.Conv2d(previous, channels, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            previous = channels
        self.body = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.categories = nn.Linear(previous, n_categories)
        self.grade = nn.Linear(previous, 1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Category logits, and the grade as a logit of its 0–1 position on the task's scale."""
        hidden = self.body(images)
        return self.categories(hidden), self.grade(hidden).squeeze(1)


@contextmanager
def _controlled(*, training: bool) -> Iterator[None]:
    """One thread (and, for training, deterministic kernels), then the caller's process-global settings back.

    One thread because a network this small gains little from two, while on a busy machine (a sweep
    calling APIs, other jobs) spinning OpenMP workers made training several times slower; and a fixed
    thread count keeps floating-point sums, and so the trained weights, the same on any machine.
    Deterministic kernels only for training: this network's forward pass on the CPU (convolutions, batch
    norm, pooling, linear layers) has no nondeterministic kernel for the flag to replace at a fixed
    thread count, and setting the flag imports torch's compiler stack (~1.8 s of CPU), which a process
    that only predicts (the tracking writer logging the model, a loaded pyfunc) would pay for nothing.
    """
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    if training:
        torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if training:
            torch.use_deterministic_algorithms(deterministic)


class CnnBaseline:
    """Trains ``TrayNet`` with BCE on categories and a Huber loss on the 0–1 scaled grade."""

    name = KIND

    def __init__(
        self,
        *,
        epochs: int = 25,
        batch_size: int = 32,
        learning_rate: float = 3e-3,
        weight_decay: float = 1e-4,
        image_size: int = 96,
        grade_weight: float = 4.0,
        second_category_threshold: float = DEFAULT_SECOND_CATEGORY_THRESHOLD,
    ) -> None:
        if epochs < 1 or batch_size < 1:
            raise ProviderError("cnn baseline: epochs and batch_size must be at least 1")
        if image_size < 16 or image_size % 16:
            raise ProviderError("cnn baseline: image_size must be a multiple of 16 (four 2× poolings)")
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.image_size = image_size
        self.grade_weight = grade_weight
        self.second_category_threshold = second_category_threshold
        self.task: Task | None = None
        self.vocabulary: tuple[str, ...] = ()
        self.seed: int | None = None
        self.n_train = 0
        self._net: TrayNet | None = None
        self._mean = torch.zeros(3)
        self._std = torch.ones(3)

    # -- training --------------------------------------------------------------------------------
    def fit(
        self, examples: Sequence[Example], task: Task, seed: int = 0, progress: Progress | None = None
    ) -> CnnBaseline:
        targets = training_targets(examples, task)
        report = progress or (lambda _message, _fraction: None)
        report(f"decoding {len(examples)} images", 0.0)
        pixels = self._pixels([e.image.data for e in examples])
        self._mean = pixels.mean(dim=(0, 2, 3))
        self._std = pixels.std(dim=(0, 2, 3)).clamp_min(1e-3)
        images = self._normalise(pixels)
        labels = torch.from_numpy(targets.multi_hot)
        span = task.grade.maximum - task.grade.minimum
        scaled = (torch.from_numpy(targets.grades).float() - task.grade.minimum) / span
        graded = ~torch.isnan(scaled)
        scaled = torch.nan_to_num(scaled, nan=0.0).clamp(0.0, 1.0)

        generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]), _controlled(training=True):
            torch.manual_seed(seed)  # weight initialisation and dropout, without touching the caller's RNG
            net = TrayNet(len(targets.vocabulary))
            optimiser = torch.optim.AdamW(
                net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
            )
            steps_per_epoch = math.ceil(len(examples) / self.batch_size)
            schedule = torch.optim.lr_scheduler.OneCycleLR(
                optimiser, max_lr=self.learning_rate, total_steps=self.epochs * steps_per_epoch
            )
            net.train()
            for epoch in range(self.epochs):
                total, seen = 0.0, 0
                for batch in torch.randperm(len(examples), generator=generator).split(self.batch_size):
                    x = _flip(images[batch], generator)
                    category_logits, grade_logits = net(x)
                    loss = F.binary_cross_entropy_with_logits(category_logits, labels[batch])
                    mask = graded[batch]
                    if mask.any():
                        predicted = torch.sigmoid(grade_logits[mask])
                        grade_loss = F.smooth_l1_loss(predicted, scaled[batch][mask], beta=0.1)
                        loss = loss + self.grade_weight * grade_loss
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
                    schedule.step()
                    total += float(loss.detach()) * len(batch)
                    seen += len(batch)
                report(f"epoch {epoch + 1}/{self.epochs} loss {total / seen:.3f}", (epoch + 1) / self.epochs)
        net.eval()
        self._net = net
        self.task, self.vocabulary, self.seed, self.n_train = task, targets.vocabulary, seed, len(examples)
        return self

    # -- prediction ------------------------------------------------------------------------------
    def predict(self, examples: Sequence[Example]) -> list[Prediction]:
        return self.predict_images([e.image.data for e in examples])

    def predict_images(self, images: Sequence[bytes]) -> list[Prediction]:
        task, net = self._trained()
        if not images:
            return []
        probabilities, positions = [], []
        with _controlled(training=False), torch.inference_mode():
            for start in range(0, len(images), 64):
                batch = self._normalise(self._pixels(images[start : start + 64]))
                category_logits, grade_logits = net(batch)
                probabilities.append(torch.sigmoid(category_logits))
                positions.append(torch.sigmoid(grade_logits))
        span = task.grade.maximum - task.grade.minimum
        grades = torch.cat(positions).double().numpy() * span + task.grade.minimum
        return decide(
            torch.cat(probabilities).double().numpy(),
            grades,
            self.vocabulary,
            task,
            self.second_category_threshold,
        )

    def _pixels(self, images: Sequence[bytes]) -> torch.Tensor:
        """N×3×S×S floats in 0–1, decoded exactly as the classical features decode."""
        arrays = [np.asarray(decode(data, self.image_size), dtype=np.uint8) for data in images]
        stacked = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        return stacked.float().div(255.0).contiguous()

    def _normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self._mean.view(1, 3, 1, 1)) / self._std.view(1, 3, 1, 1)

    def _trained(self) -> tuple[Task, TrayNet]:
        if self.task is None or self._net is None:
            raise ProviderError("the cnn baseline is not trained: call fit() or load() first")
        return self.task, self._net

    # -- saved form ------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        task, net = self._trained()
        folder = write_manifest(
            directory,
            KIND,
            task,
            vocabulary=list(self.vocabulary),
            seed=self.seed,
            n_train=self.n_train,
            options=self._options(),
            torch=torch.__version__,
        )
        state = {"net": net.state_dict(), "mean": self._mean, "std": self._std}
        torch.save(state, folder / _WEIGHTS_FILE)
        return folder

    @classmethod
    def load(cls, directory: str | Path) -> CnnBaseline:
        """Weights only (``weights_only=True``): loading a model directory cannot run code."""
        manifest = read_manifest(directory, KIND)
        baseline = cls(**manifest.get("options", {}))
        state: dict[str, Any] = torch.load(Path(directory) / _WEIGHTS_FILE, weights_only=True)
        baseline.vocabulary = tuple(manifest["vocabulary"])
        net = TrayNet(len(baseline.vocabulary))
        net.load_state_dict(state["net"])
        net.eval()
        baseline._net = net
        baseline._mean, baseline._std = state["mean"], state["std"]
        baseline.task = manifest_task(manifest)
        baseline.seed = manifest.get("seed")
        baseline.n_train = int(manifest.get("n_train", 0))
        return baseline

    def _options(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
            "image_size": self.image_size,
            "grade_weight": self.grade_weight,
            "second_category_threshold": self.second_category_threshold,
        }

    def __repr__(self) -> str:
        state = f"trained on {self.n_train}" if self.task else "untrained"
        return f"CnnBaseline({self._options()}, {state})"


def _flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal and vertical flips: a tray seen from above has no preferred side."""
    horizontal = torch.rand(len(images), generator=generator) < 0.5
    vertical = torch.rand(len(images), generator=generator) < 0.5
    out = images.clone()
    out[horizontal] = out[horizontal].flip(3)
    out[vertical] = out[vertical].flip(2)
    return out
