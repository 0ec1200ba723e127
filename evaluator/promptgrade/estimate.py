"""What a sweep will cost before it costs anything: calls, input tokens, dollars.

Image tokens follow the price table's per-family rules (``promptgrade.tokens``), text about four
characters per token. The real counts come back in each response's usage metadata and are what the
metrics report; the sweep prints estimated beside actual so that a stale rule is visible.
"""

from __future__ import annotations

from dataclasses import dataclass

from promptgrade.candidates import Candidate
from promptgrade.config import Plan, price_for
from promptgrade.providers.base import ImageInput
from promptgrade.tokens import EXPECTED_OUTPUT_TOKENS, image_size, image_tokens, text_tokens


@dataclass(frozen=True)
class CandidateEstimate:
    candidate: Candidate
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None  # None: the model has no price in the table (in the candidate's mode)
    rule_known: bool = True  # False: no image-token rule for this model; the tile rule was assumed
    online_cost_usd: float | None = None  # a batch candidate's cost had it been swept online


SMALL_DEFAULT = 384  # an unreadable image is billed (if at all) as a small one


def size_of(image: ImageInput) -> tuple[int, int]:
    """Prepared images know their size; anything else is read from its header once."""
    if image.size is not None:
        return image.size
    try:
        return image_size(image.data)
    except OSError:
        return (SMALL_DEFAULT, SMALL_DEFAULT)


def request_input_tokens(
    plan: Plan,
    model: str,
    prompt: str,
    size: tuple[int, int],
    media: str | None,
    references: tuple[tuple[int, int], ...] = (),
) -> int:
    """The tray's image tokens, each reference image's (the same rule per image), and the text's."""
    rule = plan.image_rule(model)
    images = sum(image_tokens(width, height, media, rule) for width, height in (size, *references))
    return images + text_tokens(prompt)


def reference_sizes(candidate: Candidate) -> tuple[tuple[int, int], ...]:
    return tuple(size_of(reference.image) for reference in candidate.references)


def estimate(
    plan: Plan, candidates: list[Candidate], sizes: list[tuple[int, int]]
) -> list[CandidateEstimate]:
    out = []
    for candidate in candidates:
        media = candidate.settings.media_resolution
        references = reference_sizes(candidate)
        k = candidate.samples  # each sample is a request of its own
        input_tokens = k * sum(
            request_input_tokens(plan, candidate.model, candidate.rendered_prompt, size, media, references)
            for size in sizes
        )
        output_tokens = EXPECTED_OUTPUT_TOKENS * len(sizes) * k
        price = price_for(candidate.model, plan.prices, batch=candidate.batch)
        online = price_for(candidate.model, plan.prices)
        out.append(
            CandidateEstimate(
                candidate=candidate,
                calls=len(sizes) * k,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=None if price is None else price.cost(input_tokens, output_tokens),
                rule_known=plan.image_rule(candidate.model) is not None,
                online_cost_usd=None if online is None else online.cost(input_tokens, output_tokens),
            )
        )
    return out
