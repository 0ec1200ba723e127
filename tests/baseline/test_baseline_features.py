"""Image features: the same bytes always give the same fixed-length vector, whatever the image."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from PIL import Image

from promptgrade.baseline.features import feature_length, image_features


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def noisy(mode: str, size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    array = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(array[..., 0] if channels == 1 else array, mode)


def test_the_same_bytes_give_the_same_vector(make) -> None:
    data = make(1, seed=3)[0].image.data
    first, second = image_features(data), image_features(bytes(data))
    assert first.dtype == np.float32
    assert np.array_equal(first, second)


@pytest.mark.parametrize(
    ("mode", "size", "fmt"),
    [("RGB", (64, 64), "JPEG"), ("RGBA", (300, 200), "PNG"), ("L", (97, 401), "PNG"), ("RGB", (1, 1), "PNG")],
)
def test_every_image_gives_a_finite_vector_of_one_length(mode: str, size: tuple[int, int], fmt: str) -> None:
    vector = image_features(encoded(noisy(mode, size), fmt))
    assert vector.shape == (feature_length(),)
    assert np.isfinite(vector).all()


def test_different_dishes_give_different_vectors(make) -> None:
    soup, salad = make(2, seed=4, categories=("soup", "salad"))
    assert not np.allclose(image_features(soup.image.data), image_features(salad.image.data))


def test_more_food_on_the_plate_shows_in_the_vector(draw) -> None:
    """Coverage is what the grade regressor needs: vectors must move further the more food differs."""
    rng = np.random.default_rng(0)
    vectors = [image_features(draw("soup", grade, rng)) for grade in (20, 50, 90)]
    assert np.linalg.norm(vectors[0] - vectors[1]) > 0.1
    assert np.linalg.norm(vectors[0] - vectors[2]) > np.linalg.norm(vectors[0] - vectors[1])
