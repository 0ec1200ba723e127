"""Benchmark 9: what the per-example MLflow traces cost (``trace_examples``), side by side in one run.

The real ``Sweep`` over N synthetic trays with one prompt, against the local Gemini-REST server in its
own process with zero latency, into a migrated MLflow sqlite store. Each round runs the same sweep
twice, traces off then on, each with a fresh store and answer cache (so both make N calls); the
difference between the two, per example, is what tracing costs. Rounds alternate so a noisy
neighbour hurts both variants alike; the median round is reported. Five rounds, not three: the same
"off" sweep took 4.1–6.3 s within one run on this machine, so a single round's difference moves by
several milliseconds per example, and the median of three followed it.

    .venv/bin/python benchmarks/tracing.py                 # 500 examples, 5 rounds
    .venv/bin/python benchmarks/tracing.py --examples 1000 --rounds 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    Check,
    Report,
    ServerProcess,
    command_line,
    isolated_env,
    load_note,
    migrate_store,
    synthetic_folder,
    write_experiment,
)


def one_sweep(tmp: Path, dataset: Path, base_url: str, examples: int, traces: bool) -> dict[str, Any]:
    with isolated_env(tmp) as env:
        migrate_store(env["MLFLOW_TRACKING_URI"])
        from promptgrade.cache import AnswerCache
        from promptgrade.runner import CacheMode
        from promptgrade.sweep import Sweep
        from promptgrade.tracking import writer

        writer.shutdown()  # each sweep starts its own tracking writer, as `promptgrade sweep` does
        writer.prestart()

        path = write_experiment(
            tmp / "exp.yaml",
            dataset=dataset,
            base_url=base_url,
            prompts=["meal_tray_json@1"],
            concurrency=16,
            limit=examples,
            name="tracing",
        )
        with path.open("a", encoding="utf-8") as handle:
            handle.write(f"trace_examples: {str(traces).lower()}\n")
        sweep = Sweep(path)
        sweep.connect()
        started = time.perf_counter()
        report = sweep.run(
            tracking_uri=env["MLFLOW_TRACKING_URI"], cache=CacheMode(AnswerCache(env["PROMPTGRADE_CACHE"]))
        )
        seconds = time.perf_counter() - started
        traced = 0
        if traces:
            import mlflow

            mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
            [result] = report.results
            experiment = mlflow.get_experiment_by_name("tracing")
            traced = len(
                mlflow.search_traces(
                    locations=[experiment.experiment_id], run_id=result.run_id, return_type="list"
                )
            )
    return {"seconds": seconds, "calls": report.calls, "traces": traced}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    report = Report("tracing", command_line())
    print(f"tracing: one prompt over {args.examples} examples, traces off vs on ({load_note()})")
    dataset = synthetic_folder(args.examples)
    rounds: list[dict[str, Any]] = []
    with ServerProcess(0.0) as server, tempfile.TemporaryDirectory(prefix="pg-bench-") as tmp:
        for index in range(args.rounds):
            off = one_sweep(Path(tmp) / f"r{index}-off", dataset, server.base_url, args.examples, False)
            on = one_sweep(Path(tmp) / f"r{index}-on", dataset, server.base_url, args.examples, True)
            if on["traces"] != args.examples:
                raise RuntimeError(f"expected {args.examples} traces, MLflow holds {on['traces']}")
            cost_ms = (on["seconds"] - off["seconds"]) * 1000 / args.examples
            rounds.append({"off": off, "on": on, "cost_ms_per_example": cost_ms, "load": load_note()})
            print(
                f"  round {index + 1}: off {off['seconds']:.1f} s, on {on['seconds']:.1f} s "
                f"({on['traces']} traces): {cost_ms:.1f} ms per example; {load_note()}",
                flush=True,
            )
    median = statistics.median(r["cost_ms_per_example"] for r in rounds)
    ratio = statistics.median(r["on"]["seconds"] / r["off"]["seconds"] for r in rounds)
    report.figures = {"examples": args.examples, "rounds": rounds, "median_cost_ms_per_example": median}
    report.figures["median_on_off_ratio"] = ratio
    print(f"  median: {median:.1f} ms per example; a sweep with traces takes {ratio:.2f}x one without")
    report.check(
        Check(
            "tracing cost per example",
            median,
            5.0,
            "ms",
            higher=False,
            note="wall time a sweep spends on its traces, per example (sqlite store, zero-latency server)",
        )
    )
    report.save()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
