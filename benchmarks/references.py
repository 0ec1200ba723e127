"""Benchmark 11: what reference images cost per call, and whether the dry run counts their tokens.

Two templates with the same words, one that shows five graded reference trays before the tray and one
that shows none, are swept side by side in one run (alternating rounds) over N synthetic trays
against the local Gemini-REST server in its own process (zero latency: the client's CPU is the
limit). The figure is the client's CPU per call, references ÷ none: the references are prepared once
per sweep and sit in the per-candidate request template, so a call copies only its tray (target
≤ 1.3×). The second figure is the dry run's input-token estimate for a five-reference request beside
what the server billed for it (target within 10 %).

    .venv/bin/python benchmarks/references.py                 # 400 trays, 3 rounds
    .venv/bin/python benchmarks/references.py --examples 200 --rounds 1
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from common import (
    REPO,
    Check,
    Report,
    ServerProcess,
    Timeline,
    command_line,
    isolated_env,
    load_note,
    migrate_store,
    synthetic_folder,
    write_experiment,
)

REFERENCE_TRAYS = {  # sample-set train trays, one per grade point
    "tray-0107": 0,
    "tray-0072": 25,
    "tray-0177": 50,
    "tray-0042": 75,
    "tray-0002": 100,
}
BODY = """You grade airline meal trays photographed after the meal.
{% for ref in references %}
Reference {{ loop.index }}: {{ grade.name }} = {{ ref.grade | int }}
{{ ref.image }}
{% endfor %}
Now the tray to grade:
{{ image }}
Name up to {{ max_categories }} dish categories from: {{ categories | join("; ") }}.
Return only a JSON object: {"categories": [...], "{{ grade.name }}": <number>}.
"""


def prompts_folder(tmp: Path) -> Path:
    """``none@1`` (no references) and ``five@1`` (five files beside it): the same words either way."""
    prompts = tmp / "prompts"
    for name in ("none", "five"):
        (prompts / name).mkdir(parents=True)
    front = "{#-\ndescription: benchmark\nstructured_output: true\n"
    (prompts / "none" / "v1.jinja").write_text(front + "-#}\n" + BODY, encoding="utf-8")
    (prompts / "five" / "refs").mkdir()
    entries = []
    for tray, grade in REFERENCE_TRAYS.items():
        shutil.copy(REPO / "data" / "sample" / "images" / f"{tray}.jpg", prompts / "five" / "refs")
        entries.append(f"  - {{file: refs/{tray}.jpg, categories: [soup], food_remaining_pct: {grade}}}")
    (prompts / "five" / "v1.jinja").write_text(
        front + "references:\n" + "\n".join(entries) + "\n-#}\n" + BODY, encoding="utf-8"
    )
    return prompts


def one_sweep(tmp: Path, dataset: Path, prompts: Path, base_url: str, name: str, n: int) -> dict[str, Any]:
    with isolated_env(tmp) as env:
        migrate_store(env["MLFLOW_TRACKING_URI"])
        from promptgrade.cache import AnswerCache
        from promptgrade.runner import CacheMode
        from promptgrade.sweep import Sweep

        path = write_experiment(
            tmp / "exp.yaml",
            dataset=dataset,
            base_url=base_url,
            prompts=[f"{name}@1"],
            concurrency=16,
            limit=n,
            name=f"references-{name}",
        )
        text = path.read_text(encoding="utf-8").replace(str(REPO / "prompts"), str(prompts))
        path.write_text(text + "trace_examples: false\n", encoding="utf-8")
        sweep = Sweep(path)
        estimate = sweep.estimate().estimates[0]
        sweep.connect()
        timeline = Timeline(expected=n)
        report = sweep.run(
            tracking_uri=env["MLFLOW_TRACKING_URI"],
            listeners=[timeline],
            cache=CacheMode(AnswerCache(env["PROMPTGRADE_CACHE"])),
        )
    assert timeline.cpu_started is not None
    [result] = report.results
    billed = [o.input_tokens for o in result.outcomes if o.input_tokens]
    return {
        "prompt": name,
        "calls": result.calls,
        "client_cpu_ms_per_call": (timeline.cpu_last_done - timeline.cpu_started) / n * 1000,
        "estimated_input_tokens_per_call": estimate.input_tokens / estimate.calls,
        "billed_input_tokens_per_call": statistics.mean(billed) if billed else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    report = Report("references", command_line())
    print(f"references: {args.examples} trays, no references vs five, alternating ({load_note()})")
    dataset = synthetic_folder(args.examples)
    rounds: list[dict[str, Any]] = []
    with ServerProcess(0.0) as server, tempfile.TemporaryDirectory(prefix="pg-bench-") as tmp:
        prompts = prompts_folder(Path(tmp))
        for index in range(args.rounds):
            none = one_sweep(
                Path(tmp) / f"r{index}-none", dataset, prompts, server.base_url, "none", args.examples
            )
            five = one_sweep(
                Path(tmp) / f"r{index}-five", dataset, prompts, server.base_url, "five", args.examples
            )
            ratio = five["client_cpu_ms_per_call"] / none["client_cpu_ms_per_call"]
            rounds.append({"none": none, "five": five, "cpu_ratio": ratio, "load": load_note()})
            print(
                f"  round {index + 1}: client CPU per call {none['client_cpu_ms_per_call']:.2f} ms without "
                f"references, {five['client_cpu_ms_per_call']:.2f} ms with five ({ratio:.2f}x); {load_note()}",
                flush=True,
            )
    ratio = statistics.median(r["cpu_ratio"] for r in rounds)
    five = rounds[-1]["five"]
    drift = five["estimated_input_tokens_per_call"] / five["billed_input_tokens_per_call"] - 1
    report.figures = {
        "examples": args.examples,
        "rounds": rounds,
        "median_cpu_ratio": ratio,
        "estimate_drift": drift,
    }
    print(
        f"  median: {ratio:.2f}x the client CPU per call with five references; the dry run estimates "
        f"{five['estimated_input_tokens_per_call']:.0f} input tokens per five-reference call, the server "
        f"billed {five['billed_input_tokens_per_call']:.0f} ({drift:+.1%})"
    )
    report.check(Check("client CPU per call, five references ÷ none", ratio, 1.3, "x", higher=False))
    report.check(
        Check(
            "dry-run input tokens ÷ billed, five references", abs(drift), 0.10, "relative error", higher=False
        )
    )
    report.save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
