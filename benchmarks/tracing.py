"""Benchmark 9: what the per-example MLflow traces cost (``trace_examples``), side by side in one run.

The real ``Sweep`` over N synthetic trays with one prompt, against the local Gemini-REST server in its
own process with zero latency, into a migrated MLflow sqlite store. Each round runs the same sweep
twice, traces off then on, each with a fresh store and answer cache (so both make N calls); the
difference between the two, per example, is what tracing costs. Rounds alternate so a noisy
neighbour hurts both variants alike; the median round is reported. Each sweep runs in a fresh Python
process, as a user's ``promptgrade sweep`` does (timed from ``Sweep.run`` on, as before): run one
after another in the benchmark's own process, the untraced sweeps grew slower from round to round
(3.6–4.5 s in the first round, 4.4–6.3 s later, with ``os.sync()`` between sweeps too) while the traced
ones did not, so every round after the first understated what tracing costs. Five rounds, not three: a
single round's difference moves by several milliseconds per example (untraced sweeps took 3.2–4.7 s
within one run, each in its fresh process), and the median of three followed it.

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
    child_result,
    command_line,
    isolated_env,
    load_note,
    migrate_store,
    print_result,
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


def fresh_sweep(tmp: Path, dataset: Path, base_url: str, examples: int, traces: bool) -> dict[str, Any]:
    """``one_sweep`` in a Python process of its own, started for it (see the module docstring)."""
    command = [sys.executable, __file__, "--one-sweep", str(tmp), "--dataset", str(dataset)]
    command += ["--base-url", base_url, "--examples", str(examples)]
    command += ["--traces"] if traces else []
    return child_result(command, f"the sweep in {tmp}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    # one sweep, in the process fresh_sweep starts
    parser.add_argument("--one-sweep", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dataset", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--traces", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_sweep is not None:
        print_result(one_sweep(args.one_sweep, args.dataset, args.base_url, args.examples, args.traces))
        return 0
    report = Report("tracing", command_line())
    print(f"tracing: one prompt over {args.examples} examples, traces off vs on ({load_note()})")
    dataset = synthetic_folder(args.examples)
    rounds: list[dict[str, Any]] = []
    with ServerProcess(0.0) as server, tempfile.TemporaryDirectory(prefix="pg-bench-") as tmp:
        for index in range(args.rounds):
            off = fresh_sweep(Path(tmp) / f"r{index}-off", dataset, server.base_url, args.examples, False)
            on = fresh_sweep(Path(tmp) / f"r{index}-on", dataset, server.base_url, args.examples, True)
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
