"""How many input tokens a request will cost before it is sent: the dry run's and the budget's basis.

Google bills an image by rules that depend on the model family and the request's ``media_resolution``
(Gemini 3: a fixed count per image per resolution; Gemini 2.x: the same for an explicit resolution,
258 tokens per 768-px tile when none is set). Model ids and those rules change every few months, so
they are data — the ``image_tokens`` section of the price table, keyed by model-id prefix — and this
module only applies them. The real counts come back in each response's usage and are what the
metrics report; the sweep prints both so a stale rule shows up as drift.
"""

from __future__ import annotations

import io
import math
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

TILE_TOKENS = 258  # Gemini 2.x without media_resolution: per 768×768 tile, or one image ≤ 384 px
TILE_SIDE = 768
SMALL_SIDE = 384
EXPECTED_OUTPUT_TOKENS = 40  # a category list and a number

T = TypeVar("T")


class ImageTokenRule(BaseModel):
    """Input tokens for one image of a model family, per ``media_resolution``.

    ``unset`` is what an image costs when the request names no resolution (or the family has no such
    setting): a fixed count; ``tiles`` for Gemini 2.x's size rule; or ``area`` for families that bill
    by pixels (Claude: width × height ÷ 750, images above ~1.15 MP scaled down first), with
    ``pixels_per_token`` and ``max_pixels``. A resolution the family does not list costs as unset.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: int | None = Field(None, ge=1)
    medium: int | None = Field(None, ge=1)
    high: int | None = Field(None, ge=1)
    unset: int | Literal["tiles", "area"] = Field("tiles")
    pixels_per_token: int = Field(750, ge=1)
    max_pixels: int | None = Field(None, ge=1)

    def tokens(self, width: int, height: int, media_resolution: str | None) -> int:
        if media_resolution is not None and (fixed := getattr(self, media_resolution)) is not None:
            return int(fixed)
        if self.unset == "tiles":
            return tile_tokens(width, height)
        if self.unset == "area":
            pixels = width * height if self.max_pixels is None else min(width * height, self.max_pixels)
            return max(1, math.ceil(pixels / self.pixels_per_token))
        return self.unset


def tile_tokens(width: int, height: int) -> int:
    """Gemini 2.x's size rule: a small image is one 258-token unit, a larger one 258 per 768-px tile."""
    if width <= SMALL_SIDE and height <= SMALL_SIDE:
        return TILE_TOKENS
    return TILE_TOKENS * math.ceil(width / TILE_SIDE) * math.ceil(height / TILE_SIDE)


def longest_prefix(model: str, table: dict[str, T]) -> T | None:
    """Exact id first, then the longest listed id that prefixes it (``gemini-2.5-flash-001``)."""
    if model in table:
        return table[model]
    matches = [key for key in table if model.startswith(key)]
    return table[max(matches, key=len)] if matches else None


def image_tokens(width: int, height: int, media_resolution: str | None, rule: ImageTokenRule | None) -> int:
    """A model without a rule in the table is estimated with the tile rule (and the dry run says so)."""
    if rule is None:
        return tile_tokens(width, height)
    return rule.tokens(width, height, media_resolution)


def text_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def image_size(data: bytes) -> tuple[int, int]:
    """Read from the header only: Pillow decodes no pixels for ``.size``."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.size
