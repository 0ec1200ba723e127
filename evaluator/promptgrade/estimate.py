"""What a sweep will cost before it costs anything: calls, input tokens, dollars.

Token counts are estimates from Gemini's published image-token rules (a small image is 258 tokens;
larger ones are tiled in 768×768 tiles of 258 tokens each; an explicit ``media_resolution`` fixes the
count) plus about four characters per text token. The real counts come back in each response's
usage metadata and are what the metrics report.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from PIL import Image

from promptgrade.candidates import Candidate
from promptgrade.config import price_for
from promptgrade.scoring import Price

TOKENS_PER_TILE = 258
MEDIA_RESOLUTION_TOKENS = {"low": 64, "medium": 256, "high": 256}
EXPECTED_OUTPUT_TOKENS = 40  # a category list and a number


def image_tokens(width: int, height: int, media_resolution: str | None = None) -> int:
    if media_resolution is not None:
        return MEDIA_RESOLUTION_TOKENS[media_resolution]
    if width <= 384 and height <= 384:
        return TOKENS_PER_TILE
    tile = 768
    return TOKENS_PER_TILE * math.ceil(width / tile) * math.ceil(height / tile)


def image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def text_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


@dataclass(frozen=True)
class CandidateEstimate:
    candidate: Candidate
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None  # None: the model has no price in the table


def estimate(
    candidates: list[Candidate], image_sizes: list[tuple[int, int]], prices: dict[str, Price]
) -> list[CandidateEstimate]:
    out = []
    for candidate in candidates:
        media = candidate.settings.media_resolution
        prompt_tokens = text_tokens(candidate.rendered_prompt)
        input_tokens = sum(image_tokens(w, h, media) + prompt_tokens for w, h in image_sizes)
        output_tokens = EXPECTED_OUTPUT_TOKENS * len(image_sizes)
        price = price_for(candidate.model, prices)
        out.append(
            CandidateEstimate(
                candidate=candidate,
                calls=len(image_sizes),
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=None if price is None else price.cost(input_tokens, output_tokens),
            )
        )
    return out
