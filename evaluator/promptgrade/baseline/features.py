"""Hand-made colour and texture features for the classical baseline, with Pillow and numpy only.

A meal-tray photo is mostly *which colours sit where* (a dish's palette) and *how much bare plate
shows* (what was eaten), so the features describe exactly that, at a fixed 96×96 resolution so that
photo size cannot change the vector. Everything is deterministic arithmetic on the decoded pixels:
the same bytes always give the same vector, which is what makes a seeded baseline reproducible.

Bump ``FEATURE_VERSION`` whenever the vector changes: saved models record it and refuse to load a
vector they were not trained on.
"""

from __future__ import annotations

from io import BytesIO

import numpy as np
from PIL import Image

FEATURE_VERSION = 1
SIZE = 96
GRID = 4
_HUE_BINS, _SAT_BINS, _VAL_BINS = 12, 3, 3
_MAG_EDGES = np.array([0.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, np.inf], dtype=np.float32)
_ORIENT_BINS = 8
# "Bare plate": bright and nearly colourless. "Food-like": clearly coloured. Both on Pillow's 0-255 HSV.
_PLATE_MIN_VALUE, _PLATE_MAX_SAT = 190, 40
_FOOD_MIN_SAT = 70


def decode(data: bytes, size: int = SIZE) -> Image.Image:
    """Decode to an RGB ``size``×``size`` image; JPEG is decoded at reduced scale, which is most of the speed."""
    image = Image.open(BytesIO(data))
    image.draft("RGB", (size, size))  # libjpeg DCT scaling: no-op for other formats
    return image.convert("RGB").resize((size, size), Image.Resampling.BOX)


def image_features(data: bytes) -> np.ndarray:
    """A fixed-length float32 vector (``feature_length()`` values) describing one image."""
    image = decode(data)
    rgb = np.asarray(image, dtype=np.float32)
    hsv = np.asarray(image.convert("HSV"), dtype=np.float32)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    plate = (val >= _PLATE_MIN_VALUE) & (sat <= _PLATE_MAX_SAT)
    food = sat >= _FOOD_MIN_SAT
    magnitude, orientation = _gradients(rgb.mean(axis=2))
    parts = [
        _hsv_histogram(hue, sat, val),
        _grid_means(np.concatenate([rgb, hsv[..., 1:]], axis=2) / 255.0),
        _grid_means(np.stack([plate, food], axis=2).astype(np.float32)),
        _grid_means(magnitude[..., None] / 64.0),
        _grid_std(val / 255.0),
        _gradient_histograms(magnitude, orientation),
        _coverage(plate, food),
    ]
    return np.concatenate([p.ravel() for p in parts]).astype(np.float32)


def feature_length() -> int:
    """The vector's length, computed from the layout above so that the two can never disagree."""
    hist = _HUE_BINS * _SAT_BINS * _VAL_BINS
    cells = GRID * GRID
    return hist + cells * 5 + cells * 2 + cells + cells + (len(_MAG_EDGES) - 1) + _ORIENT_BINS + 3


def _hsv_histogram(hue: np.ndarray, sat: np.ndarray, val: np.ndarray) -> np.ndarray:
    """Joint colour histogram: fine in hue (which tells dishes apart), coarse in saturation and value."""
    h = np.minimum((hue * _HUE_BINS / 256.0).astype(np.int64), _HUE_BINS - 1)
    s = np.minimum((sat * _SAT_BINS / 256.0).astype(np.int64), _SAT_BINS - 1)
    v = np.minimum((val * _VAL_BINS / 256.0).astype(np.int64), _VAL_BINS - 1)
    index = (h * _SAT_BINS + s) * _VAL_BINS + v
    counts = np.bincount(index.ravel(), minlength=_HUE_BINS * _SAT_BINS * _VAL_BINS)
    return counts.astype(np.float32) / index.size


def _cells(array: np.ndarray) -> np.ndarray:
    """Reshape (H, W, C) into (GRID, GRID, H/GRID * W/GRID, C) so each cell is one reduction."""
    height, width = array.shape[:2]
    ch, cw = height // GRID, width // GRID
    channels = array.shape[2] if array.ndim == 3 else 1
    blocks = array.reshape(GRID, ch, GRID, cw, channels).transpose(0, 2, 1, 3, 4)
    return blocks.reshape(GRID, GRID, ch * cw, channels)


def _grid_means(array: np.ndarray) -> np.ndarray:
    return _cells(array).mean(axis=2)


def _grid_std(array: np.ndarray) -> np.ndarray:
    return _cells(array[..., None]).std(axis=2)


def _gradients(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Central differences (edge-padded): magnitude on the 0-255 scale, orientation in [0, π)."""
    padded = np.pad(gray, 1, mode="edge")
    gx = (padded[1:-1, 2:] - padded[1:-1, :-2]) * 0.5
    gy = (padded[2:, 1:-1] - padded[:-2, 1:-1]) * 0.5
    magnitude = np.hypot(gx, gy)
    orientation = np.mod(np.arctan2(gy, gx), np.pi)
    return magnitude, orientation


def _gradient_histograms(magnitude: np.ndarray, orientation: np.ndarray) -> np.ndarray:
    """How busy the picture is (grains, specks, strands) and which way its edges run."""
    mag_hist = np.histogram(magnitude, bins=_MAG_EDGES)[0].astype(np.float32) / magnitude.size
    bins = np.minimum((orientation * _ORIENT_BINS / np.pi).astype(np.int64), _ORIENT_BINS - 1)
    orient = np.bincount(bins.ravel(), weights=magnitude.ravel(), minlength=_ORIENT_BINS)
    total = float(orient.sum())
    orient_hist = (orient / total if total > 0 else orient).astype(np.float32)
    return np.concatenate([mag_hist, orient_hist])


def _coverage(plate: np.ndarray, food: np.ndarray) -> np.ndarray:
    """Bare plate vs food share of the picture: the closest single proxy for "how much is left"."""
    plate_share = float(plate.mean())
    food_share = float(food.mean())
    both = plate_share + food_share
    return np.array([plate_share, food_share, food_share / both if both > 0 else 0.0], dtype=np.float32)
