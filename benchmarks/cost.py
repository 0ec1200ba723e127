"""Benchmark 6: input tokens and dollars per image under each image policy, per model family.

For the bundled sample set (320 synthetic 256×256 trays) and for large photos (4000×3000, made by
upscaling sample trays and adding sensor-like noise), each policy is applied with the real code —
``promptgrade.images.prepare_image`` for ``image_max_side`` and ``promptgrade.tokens.image_tokens`` with
the price table's per-family rule (``image_tokens`` in ``experiments/prices.yaml``) — and priced with
the same table's models of that family:

* ``original``: the file as it is, no preparation (what a naive client sends);
* ``max_side=N``: promptgrade's preparation, bounded to N pixels (1024 is the default, 768 the flagship
  experiment's, 384 the largest size Gemini 2.x bills as a single 258-token image);
* ``media_resolution=low|medium|high``: the generation setting, which fixes the image's token count.

Gemini 2.x bills an image by its size when no ``media_resolution`` is set (258 per 768-px tile), so
downscaling saves tokens there; Gemini 3 bills a fixed count per resolution (1,120 unset), so only
``media_resolution`` changes its bill. Dollars: (image + prompt tokens) × input price + the expected
output tokens × output price; the prompt is ``meal_tray_json@1`` rendered for the meal-tray task.

Then a real sweep over ``media_resolution`` (unset, low, medium, high) × two families runs on the sample
set's test split against the local Gemini server, which bills each image by the family's documented
count for the resolution in the request: the input tokens and dollars are what a sweep reports
(MLflow metrics), beside the dry-run estimate. The server's answers are scripted, the same for every
resolution, so **the accuracy side is not measured here**: run the same grid against Gemini to see what
``low`` costs in accuracy.

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


def apply(images: list[bytes], max_side: int | None, media: str | None, rule: Any) -> dict[str, Any]:
    from promptgrade.images import prepare_image
    from promptgrade.tokens import image_size, image_tokens

    tokens, sizes, seconds = [], [], []
    for data in images:
        if max_side is None:
            sent = data
        else:
            started = time.process_time()
            sent = prepare_image(data, max_side=max_side).data
            seconds.append(time.process_time() - started)
        width, height = image_size(sent)
        tokens.append(image_tokens(width, height, media, rule))
        sizes.append(len(sent))
    width, height = image_size(sent)
    return {
        "image_tokens_mean": statistics.fmean(tokens),
        "bytes_sent_mean": statistics.fmean(sizes),
        "size_sent": f"{width}x{height}",
        "prepare_cpu_ms_per_image": statistics.fmean(seconds) * 1000 if seconds else 0.0,
    }


GRID_MODELS = ("gemini-3-flash-preview", "gemini-2.5-flash")
_RESOLUTION = {
    "MEDIA_RESOLUTION_LOW": "low",
    "MEDIA_RESOLUTION_MEDIUM": "medium",
    "MEDIA_RESOLUTION_HIGH": "high",
}


def resolution_grid(rules: dict[str, Any]) -> dict[str, Any]:
    """A sweep over media_resolution × family on the sample set's test split; the server bills images by
    each family's documented count (so tokens and dollars are measured; accuracy is scripted)."""
    import tempfile
    from pathlib import Path

    from common import ANSWER, isolated_env
    from mlflow import MlflowClient

    from promptgrade.runner import CacheMode
    from promptgrade.sweep import Sweep
    from promptgrade.testing.gemini_server import FakeGemini, RequestInfo
    from promptgrade.tokens import image_tokens, longest_prefix

    def billed(info: RequestInfo) -> int:
        media = _RESOLUTION.get(str(info.generation_config.get("mediaResolution", "")))
        return image_tokens(256, 256, media, longest_prefix(info.model, rules))

    models = "\n".join(
        f"  - model: {m}\n    settings: {{temperature: 0.0, max_output_tokens: 256}}\n"
        "    grid: {media_resolution: [null, low, medium, high]}"
        for m in GRID_MODELS
    )
    with (
        tempfile.TemporaryDirectory(prefix="pg-bench-") as tmp,
        FakeGemini(default_answer=ANSWER, image_tokens=billed) as server,
        isolated_env(Path(tmp)) as env,
    ):
        path = Path(tmp) / "grid.yaml"
        path.write_text(
            f"name: media-resolution-grid\ntask: {REPO}/experiments/tasks/meal_tray.yaml\n"
            f"prompts_dir: {REPO}/prompts\nprices: {REPO}/experiments/prices.yaml\nbase_url: {server.base_url}\n"
            f"dataset: {{kind: folder, path: {SAMPLE}, split: test, image_max_side: 768}}\n"
            f"prompts: [meal_tray_json@1]\nmodels:\n{models}\nconcurrency: 8\n",
            encoding="utf-8",
        )
        sweep = Sweep(path)
        estimates = {e.candidate.key: e for e in sweep.estimate().estimates}
        report = sweep.run(tracking_uri=env["MLFLOW_TRACKING_URI"], cache=CacheMode.off())
        client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
        rows = []
        for result in report.results:
            metrics = client.get_run(result.run_id).data.metrics
            candidate = result.candidate
            n = metrics["n_examples"]
            rows.append(
                {
                    "model": candidate.model,
                    "media_resolution": candidate.settings.media_resolution or "unset",
                    "examples": int(n),
                    "input_tokens_per_call": metrics["input_tokens"] / n,
                    "estimated_input_tokens_per_call": estimates[candidate.key].input_tokens / n,
                    "usd_per_1000_images": metrics["cost_usd"] / n * 1000,
                    "category_accuracy_scripted": metrics["category_accuracy"],
                }
            )
        calls = server.calls
    table = markdown_table(
        [
            "model",
            "media_resolution",
            "input tokens / call",
            "dry-run estimate",
            "$ / 1k images",
            "category acc (scripted)",
        ],
        [
            [
                r["model"],
                r["media_resolution"],
                f"{r['input_tokens_per_call']:,.0f}",
                f"{r['estimated_input_tokens_per_call']:,.0f}",
                f"{r['usd_per_1000_images']:.3f}",
                f"{r['category_accuracy_scripted']:.0%}",
            ]
            for r in rows
        ],
    )
    print("\n  media_resolution grid on the sample set's test split (sweep → MLflow; scripted answers):")
    print("\n".join("    " + line for line in table.splitlines()))
    by = {(r["model"], r["media_resolution"]): r for r in rows}
    savings = {
        m: by[(m, "unset")]["usd_per_1000_images"] / by[(m, "low")]["usd_per_1000_images"]
        for m in GRID_MODELS
    }
    for model, saving in savings.items():
        print(
            f"  {model}: media_resolution low costs 1/{saving:.2f} of unset per image (tokens only; accuracy not measured)"
        )
    return {
        "rows": rows,
        "table": table,
        "calls": calls,
        "unset_over_low_cost": savings,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=int, default=8, help="how many 4000×3000 photos to make")
    args = parser.parse_args()
    from promptgrade.config import load_price_table
    from promptgrade.prompts import PromptLibrary
    from promptgrade.task import load_task
    from promptgrade.tokens import EXPECTED_OUTPUT_TOKENS, longest_prefix, text_tokens

    report = Report("cost", command_line())
    print(f"cost: image policies × image sets × model families ({load_note()})")
    task = load_task(REPO / "experiments" / "tasks" / "meal_tray.yaml")
    prompt_tokens = text_tokens(PromptLibrary(REPO / "prompts").get("meal_tray_json", 1).render(task))
    table_file = load_price_table(REPO / "experiments" / "prices.yaml")
    prices, rules = table_file.models, table_file.image_tokens
    families = {
        family: [m for m in prices if longest_prefix(m, rules) is rule] for family, rule in rules.items()
    }
    families = {family: models for family, models in families.items() if models}
    sets = {
        "sample set (320 × 256x256)": [p.read_bytes() for p in sorted((SAMPLE / "images").glob("*.jpg"))],
        f"large photos ({args.photos} × 4000x3000)": large_photos(args.photos),
    }
    results: dict[str, Any] = {}
    for set_name, images in sets.items():
        original_bytes = statistics.fmean(len(d) for d in images)
        results[set_name] = {"original_bytes_mean": original_bytes, "families": {}}
        for family, models in families.items():
            rule = rules[family]
            rows = {}
            for name, max_side, media in POLICIES:
                row = apply(images, max_side, media, rule)
                row["usd_per_1000_images"] = {
                    model: prices[model].cost(
                        round(row["image_tokens_mean"]) + prompt_tokens, EXPECTED_OUTPUT_TOKENS
                    )
                    * 1000
                    for model in models
                }
                rows[name] = row
            base = rows["original"]["image_tokens_mean"]
            print(f"\n  {set_name} (files {original_bytes / 1024:.0f} KiB on average), {family} family:")
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
                        *(f"{row['usd_per_1000_images'][m]:.3f}" for m in models),
                    ]
                )
            header = ["policy", "sent", "image tokens", "× original", "KiB sent", "prepare ms"]
            text = markdown_table([*header, *(f"$/1k {m}" for m in models)], table)
            print("\n".join("    " + line for line in text.splitlines()))
            results[set_name]["families"][family] = {"policies": rows, "table": text}
    grid = resolution_grid(rules)
    report.figures = {
        "prompt_tokens": prompt_tokens,
        "expected_output_tokens": EXPECTED_OUTPUT_TOKENS,
        "prices": {m: p.model_dump() for m, p in prices.items()},
        "image_token_rules": {f: r.model_dump() for f, r in rules.items()},
        "sets": results,
        "media_resolution_grid": grid,
    }
    large = results[f"large photos ({args.photos} × 4000x3000)"]["families"]
    for family in families:
        policies = large[family]["policies"]
        saving = (
            policies["original"]["image_tokens_mean"]
            / policies["max_side=768 (flagship)"]["image_tokens_mean"]
        )
        report.figures[f"downscale_saving_{family}"] = saving
        report.check(
            Check(
                f"{family}: large photos, original / max_side=768 image tokens",
                saving,
                1.0,
                "x",
                higher=True,
                note="no target; >1 means downscaling saves tokens for this family",
            )
        )
    report.notes.append(
        "accuracy effect not measured: no real model is reachable from this machine; the grid's answers are scripted"
    )
    report.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
