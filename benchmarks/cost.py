"""Benchmark 6: input tokens and dollars per image under each image policy.

For the bundled sample set (320 synthetic 256×256 trays) and for large photos (4000×3000, made by
upscaling sample trays and adding sensor-like noise), each policy is applied with the real code —
``promptgrade.images.prepare_image`` for ``image_max_side`` and ``promptgrade.estimate.image_tokens`` for
the token rule (and ``media_resolution``) — and priced with ``experiments/prices.yaml``:

* ``original``: the file as it is, no preparation (what a naive client sends);
* ``max_side=N``: promptgrade's preparation, bounded to N pixels (1024 is the default, 768 the flagship
  experiment's, 384 the largest size Gemini bills as a single 258-token image);
* ``media_resolution=low|medium|high``: the generation setting, which fixes the image's token count.

The token rule is the one ``estimate.py`` implements (Gemini 2.x: an image with both sides ≤ 384 px is
258 tokens, a larger one 258 per 768×768 tile; ``media_resolution`` low/medium/high = 64/256/256).
Gemini 3 models bill differently (``media_resolution`` alone sets the count; see benchmarks/README.md),
so for them these figures are not the bill. Dollars: (image + prompt tokens) × input price + the
expected output tokens × output price; the prompt is ``meal_tray_json@1`` rendered for the meal-tray task.

No real model is reachable here, so the accuracy side of the trade-off is not measured: run the same
experiment with ``dataset.image_max_side`` (per experiment) or ``grid: {media_resolution: [...]}``
(per candidate) against Gemini to measure it.

    .venv/bin/python benchmarks/cost.py
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import time
from typing import Any

from common import REPO, SAMPLE, Check, Report, command_line, load_note, markdown_table

POLICIES: list[tuple[str, int | None, str | None]] = [
    ("original", None, None),
    ("max_side=1024 (default)", 1024, None),
    ("max_side=768 (flagship)", 768, None),
    ("max_side=384", 384, None),
    ("media_resolution=high", 1024, "high"),
    ("media_resolution=medium", 1024, "medium"),
    ("media_resolution=low", 1024, "low"),
]


def large_photos(count: int) -> list[bytes]:
    """4000×3000 JPEGs from sample trays: upscaled, with per-pixel noise so they compress like photos."""
    from PIL import Image, ImageFilter

    rng = random.Random(7)
    files = sorted((SAMPLE / "images").glob("*.jpg"))
    out = []
    for index in range(count):
        tray = Image.open(files[(index * 37) % len(files)]).convert("RGB")
        photo = tray.resize((4000, 3000), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(1.5))
        noise = Image.effect_noise((4000, 3000), 18 + rng.random() * 6).convert("RGB")
        photo = Image.blend(photo, noise, 0.12)
        buffer = io.BytesIO()
        photo.save(buffer, format="JPEG", quality=92)
        out.append(buffer.getvalue())
    return out


def apply(images: list[bytes], max_side: int | None, media: str | None) -> dict[str, Any]:
    from promptgrade.estimate import image_size, image_tokens
    from promptgrade.images import prepare_image

    tokens, sizes, seconds = [], [], []
    for data in images:
        if max_side is None:
            sent = data
        else:
            started = time.process_time()
            sent = prepare_image(data, max_side=max_side).data
            seconds.append(time.process_time() - started)
        width, height = image_size(sent)
        tokens.append(image_tokens(width, height, media))
        sizes.append(len(sent))
    width, height = image_size(sent)
    return {
        "image_tokens_mean": statistics.fmean(tokens),
        "bytes_sent_mean": statistics.fmean(sizes),
        "size_sent": f"{width}x{height}",
        "prepare_cpu_ms_per_image": statistics.fmean(seconds) * 1000 if seconds else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=int, default=8, help="how many 4000×3000 photos to make")
    args = parser.parse_args()
    from promptgrade.config import load_prices
    from promptgrade.estimate import EXPECTED_OUTPUT_TOKENS, text_tokens
    from promptgrade.prompts import PromptLibrary
    from promptgrade.task import load_task

    report = Report("cost", command_line())
    print(f"cost: image policies × image sets ({load_note()})")
    task = load_task(REPO / "experiments" / "tasks" / "meal_tray.yaml")
    prompt_tokens = text_tokens(PromptLibrary(REPO / "prompts").get("meal_tray_json", 1).render(task))
    prices = load_prices(REPO / "experiments" / "prices.yaml")
    sets = {
        "sample set (320 × 256x256)": [p.read_bytes() for p in sorted((SAMPLE / "images").glob("*.jpg"))],
        f"large photos ({args.photos} × 4000x3000)": large_photos(args.photos),
    }
    results: dict[str, Any] = {}
    for set_name, images in sets.items():
        original_bytes = statistics.fmean(len(d) for d in images)
        rows = {}
        for name, max_side, media in POLICIES:
            row = apply(images, max_side, media)
            row["usd_per_1000_images"] = {
                model: price.cost(round(row["image_tokens_mean"]) + prompt_tokens, EXPECTED_OUTPUT_TOKENS)
                * 1000
                for model, price in prices.items()
            }
            row["image_usd_per_1000_images"] = {
                model: price.cost(round(row["image_tokens_mean"]), 0) * 1000
                for model, price in prices.items()
            }
            rows[name] = row
        results[set_name] = {"original_bytes_mean": original_bytes, "policies": rows}
        base = rows["original"]["image_tokens_mean"]
        print(f"\n  {set_name} (files {original_bytes / 1024:.0f} KiB on average):")
        table = []
        for name, row in rows.items():
            table.append(
                [
                    name,
                    row["size_sent"],
                    f"{row['image_tokens_mean']:.0f}",
                    f"{row['image_tokens_mean'] / base:.2f}",
                    f"{row['bytes_sent_mean'] / 1024:.0f}",
                    f"{row['prepare_cpu_ms_per_image']:.1f}",
                    *(f"{row['usd_per_1000_images'][m]:.3f}" for m in prices),
                ]
            )
        header = [
            "policy",
            "sent",
            "image tokens",
            "× original",
            "KiB sent",
            "prepare ms",
            *(f"$/1k {m}" for m in prices),
        ]
        text = markdown_table(header, table)
        print("\n".join("    " + line for line in text.splitlines()))
        results[set_name]["table"] = text
    report.figures = {
        "prompt_tokens": prompt_tokens,
        "expected_output_tokens": EXPECTED_OUTPUT_TOKENS,
        "prices": {m: p.model_dump() for m, p in prices.items()},
        "sets": results,
        "token_rule": "promptgrade.estimate.image_tokens (Gemini 2.x rule)",
    }
    large = results[f"large photos ({args.photos} × 4000x3000)"]["policies"]
    saving = large["original"]["image_tokens_mean"] / large["max_side=768 (flagship)"]["image_tokens_mean"]
    report.check(
        Check(
            "large photos: original / max_side=768 image tokens",
            saving,
            1.0,
            "x",
            higher=True,
            note="no target in the issue; >1 means the preparation policy saves tokens",
        )
    )
    report.notes.append("accuracy effect not measured: no real model is reachable from this machine")
    report.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
