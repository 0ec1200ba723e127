"""Benchmark 4: peak memory of a sweep as the dataset grows (1,000 vs 20,000 examples).

Each size runs in a fresh interpreter (so one run's memory cannot hide in the other's): the real
``Sweep`` (dataset load, then ``run`` with the answer cache and a migrated MLflow sqlite store) over
N distinct synthetic trays with one prompt, against the local Gemini-REST server in its own process
with zero latency. Peak RSS is the child's ``ru_maxrss`` as the parent sees it through ``wait4``; the
child also reports its RSS after imports, after loading the dataset and after the run, so the growth
can be put where it belongs (images held by the dataset, outcomes held by the runner, the MLflow
predictions table).

    .venv/bin/python benchmarks/memory_growth.py               # 1,000 and 20,000 examples
    .venv/bin/python benchmarks/memory_growth.py --sizes 500 5000   # smaller
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    PYTHON,
    Check,
    Report,
    ServerProcess,
    child_result,
    command_line,
    isolated_env,
    load_note,
    migrate_store,
    print_result,
    rss_mb,
    synthetic_folder,
    write_experiment,
)


def child(args: argparse.Namespace) -> int:
    """Runs inside the measured interpreter: one sweep, then one JSON line with what it saw."""
    tmp = Path(args.tmp)
    with isolated_env(tmp) as env:
        migrate_store(env["MLFLOW_TRACKING_URI"])  # a team's store exists already
        from promptgrade.cache import AnswerCache
        from promptgrade.runner import CacheMode
        from promptgrade.sweep import Sweep
        from promptgrade.tracking import Tracker  # noqa: F401

        marks: dict[str, Any] = {"after_imports_mb": rss_mb()[0]}
        experiment = write_experiment(
            tmp / "exp.yaml",
            dataset=Path(args.dataset),
            base_url=args.base_url,
            prompts=["meal_tray_json@1"],
            concurrency=args.concurrency,
            limit=args.examples,
            name="memory",
        )
        started = time.perf_counter()
        sweep = Sweep(experiment)
        marks["load_s"] = time.perf_counter() - started
        marks["after_load_mb"] = rss_mb()[0]
        marks["prepared_image_mb"] = sum(len(e.image.data) for e in sweep.dataset.examples) / 2**20
        # held in memory unless the loader spooled them to disk (StoredImage reads them back on use)
        marks["images_in_memory"] = not any(
            type(e.image).__name__ == "StoredImage" for e in sweep.dataset.examples
        )
        sweep.connect()
        started = time.perf_counter()
        report = sweep.run(
            tracking_uri=env["MLFLOW_TRACKING_URI"],
            cache=CacheMode(AnswerCache(env["PROMPTGRADE_CACHE"])),
        )
        marks["run_s"] = time.perf_counter() - started
        marks["after_run_mb"], marks["peak_mb"] = rss_mb()
        marks["examples"] = len(sweep.dataset.examples)
        marks["calls"] = report.calls
        marks["ok"] = sum(o.status == "ok" for r in report.results for o in r.outcomes)
    print_result(marks)
    return 0


def measure(n: int, dataset: Path, server: ServerProcess, concurrency: int, tmp: Path) -> dict[str, Any]:
    command = [PYTHON, __file__, "--child", "--examples", str(n), "--dataset", str(dataset)]
    command += ["--base-url", server.base_url, "--tmp", str(tmp), "--concurrency", str(concurrency)]
    started = time.perf_counter()
    marks = child_result(command, f"memory child for {n}")
    marks["wall_s"] = time.perf_counter() - started
    marks["load"] = load_note()
    return marks


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs=2, default=[1000, 20000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="500 and 5,000 examples")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--examples", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.quick:
        args.sizes = [500, 5000]
    small, large = args.sizes
    report = Report("memory_growth", command_line())
    print(f"memory: sweeps over {small} and {large} examples, one prompt, server latency 0 ({load_note()})")
    datasets = {n: synthetic_folder(n) for n in (small, large)}
    runs: dict[int, dict[str, Any]] = {}
    with ServerProcess(0.0) as server, tempfile.TemporaryDirectory(prefix="pg-bench-") as tmp:
        for n in (small, large):
            run = measure(n, datasets[n], server, args.concurrency, Path(tmp) / f"n{n}")
            runs[n] = run
            print(
                f"  {n} examples: peak RSS {run['peak_mb']:.0f} MiB (after imports {run['after_imports_mb']:.0f}, "
                f"after load {run['after_load_mb']:.0f}, after run {run['after_run_mb']:.0f}; "
                f"{run['prepared_image_mb']:.0f} MiB of prepared images, "
                f"{'held in memory' if run['images_in_memory'] else 'spooled to disk'}); "
                f"{run['calls']} calls, {run['ok']} ok; "
                f"load {run['load_s']:.1f} s, run {run['run_s']:.1f} s; {run['load']}",
                flush=True,
            )
    ratio = runs[large]["peak_mb"] / runs[small]["peak_mb"]
    report.figures = {"sizes": [small, large], "concurrency": args.concurrency, "runs": runs, "ratio": ratio}
    per_example_kb = (runs[large]["peak_mb"] - runs[small]["peak_mb"]) * 1024 / (large - small)
    report.figures["peak_growth_kib_per_example"] = per_example_kb
    print(f"  peak grows by {per_example_kb:.1f} KiB per extra example")
    report.check(
        Check(
            f"peak RSS {large} / {small} examples",
            ratio,
            1.3,
            "x",
            higher=False,
            note=f"{runs[large]['peak_mb']:.0f} vs {runs[small]['peak_mb']:.0f} MiB",
        )
    )
    report.save()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
