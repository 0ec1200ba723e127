"""Benchmark 5: wall time of an unchanged re-run against the first run (the answer cache at work).

The flagship experiment's shape — the three shipped prompts over N synthetic trays (N × 3 requests) at
concurrency 8 — runs twice through the CLI exactly as a user types it, ``promptgrade sweep exp.yaml``,
against the local Gemini-REST server answering after a fixed latency, with one answer cache and one
(pre-created) MLflow store. The re-run must make no API calls. Then the same sweep runs a third time
in-process, to split the re-run's time into interpreter start and imports, loading the dataset
(preparing every image), and ``Sweep.run`` (MLflow runs, cache lookups, scoring, logging).

    .venv/bin/python benchmarks/cache_rerun.py            # 500 trays × 3 prompts, 200 ms latency
    .venv/bin/python benchmarks/cache_rerun.py --quick    # 100 trays × 3 prompts
"""

from __future__ import annotations

import argparse
import re
import subprocess
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
    command_line,
    import_profile,
    isolated_env,
    load_note,
    migrate_store,
    synthetic_folder,
    with_bytecode,
    write_experiment,
)

PROMPTS = ["meal_tray_freetext@1", "meal_tray_json@1", "meal_tray_anchors@1"]
CLI = str(Path(PYTHON).with_name("promptgrade"))
IMPORTS = "import promptgrade.cli, promptgrade.sweep, promptgrade.tracking, promptgrade.cache"


def cli_sweep(experiment: Path, env: dict[str, str]) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run(
        [CLI, "sweep", str(experiment), "--tracking-uri", env["MLFLOW_TRACKING_URI"]],
        env={**env, "COLUMNS": "200"},
        cwd=experiment.parent,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(
            f"promptgrade sweep failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
    match = re.search(r"(\d+) API calls, (\d+) answers from the cache", done.stdout)
    if match is None:
        raise RuntimeError(f"unexpected sweep output:\n{done.stdout[-2000:]}")
    return {"wall_s": wall, "api_calls": int(match[1]), "cache_hits": int(match[2]), "load": load_note()}


def imports_wall(env: dict[str, str], repeats: int = 3) -> float:
    """Best wall time of a fresh interpreter importing what ``promptgrade sweep`` imports."""
    code = IMPORTS
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([PYTHON, "-c", code], env=env, check=True, capture_output=True)
        best = min(best, time.perf_counter() - started)
    return best


def store_connect_wall(env: dict[str, str]) -> float:
    """Seconds a fresh interpreter spends opening the (existing) MLflow store, imports excluded."""
    code = (
        "import time, mlflow\nstarted = time.perf_counter()\n"
        f"mlflow.MlflowClient(tracking_uri={env['MLFLOW_TRACKING_URI']!r}).search_experiments()\n"
        "print(time.perf_counter() - started)"
    )
    done = subprocess.run([PYTHON, "-c", code], env=env, check=True, capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


def in_process(experiment: Path, env: dict[str, str]) -> dict[str, Any]:
    from promptgrade.cache import AnswerCache
    from promptgrade.runner import CacheMode
    from promptgrade.sweep import Sweep

    started = time.perf_counter()
    sweep = Sweep(experiment)
    load_s = time.perf_counter() - started
    sweep.connect()
    started = time.perf_counter()
    report = sweep.run(
        tracking_uri=env["MLFLOW_TRACKING_URI"], cache=CacheMode(AnswerCache(env["PROMPTGRADE_CACHE"]))
    )
    run_s = time.perf_counter() - started
    return {"load_s": load_s, "run_s": run_s, "api_calls": report.calls, "cache_hits": report.cache_hits}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="100 trays")
    args = parser.parse_args()
    if args.quick:
        args.images = 100
    report = Report("cache_rerun", command_line())
    requests = args.images * len(PROMPTS)
    print(
        f"cache: {args.images} trays × {len(PROMPTS)} prompts = {requests} requests, latency "
        f"{args.latency * 1000:.0f} ms, concurrency {args.concurrency} ({load_note()})"
    )
    dataset = synthetic_folder(args.images)
    with (
        ServerProcess(args.latency) as server,
        tempfile.TemporaryDirectory(prefix="pg-bench-") as tmp,
        isolated_env(Path(tmp)) as env,
    ):
        experiment = write_experiment(
            Path(tmp) / "exp.yaml",
            dataset=dataset,
            base_url=server.base_url,
            prompts=PROMPTS,
            concurrency=args.concurrency,
            limit=args.images,
            name="cache-rerun",
        )
        migrate_store(env["MLFLOW_TRACKING_URI"])
        child_env = with_bytecode(env)
        imports_wall(child_env, repeats=1)  # writes the bytecode cache, so both runs start alike
        first = cli_sweep(experiment, child_env)
        print(
            f"  first run: {first['wall_s']:.1f} s, {first['api_calls']} API calls; {first['load']}",
            flush=True,
        )
        rerun = cli_sweep(experiment, child_env)
        print(
            f"  unchanged re-run: {rerun['wall_s']:.2f} s, {rerun['api_calls']} API calls, "
            f"{rerun['cache_hits']} from the cache; {rerun['load']}",
            flush=True,
        )
        imports = imports_wall(child_env)
        slowest = import_profile(["-c", IMPORTS], child_env)
        store = store_connect_wall(child_env)
        third = in_process(experiment, env)
        third["load"] = load_note()
        # the same re-run as this machine's environment runs it: PYTHONDONTWRITEBYTECODE=1, no .pyc
        no_bytecode = cli_sweep(experiment, env) if env.get("PYTHONDONTWRITEBYTECODE") else None
        if no_bytecode is not None:
            print(
                f"  re-run without bytecode (this machine's PYTHONDONTWRITEBYTECODE=1): "
                f"{no_bytecode['wall_s']:.2f} s; {no_bytecode['load']}",
                flush=True,
            )
    ratio = rerun["wall_s"] / first["wall_s"]
    in_process_ratio = (third["load_s"] + third["run_s"]) / first["wall_s"]
    print(
        f"  re-run split: interpreter + imports {imports:.2f} s, opening the MLflow store in a fresh "
        f"interpreter {store:.2f} s; in-process third run: load dataset "
        f"{third['load_s']:.2f} s, Sweep.run {third['run_s']:.2f} s ({third['api_calls']} API calls); {third['load']}"
    )
    print(
        "  slowest packages to import (self time summed, s): " + ", ".join(f"{n} {t:.2f}" for n, t in slowest)
    )
    report.figures = {
        "images": args.images,
        "prompts": PROMPTS,
        "requests": requests,
        "latency_s": args.latency,
        "concurrency": args.concurrency,
        "first_run": first,
        "rerun": rerun,
        "ratio": ratio,
        "rerun_breakdown": {
            "interpreter_and_imports_s": imports,
            "slowest_imports_s": slowest,
            "mlflow_store_open_s": store,
            **third,
        },
        "in_process_ratio": in_process_ratio,
        "rerun_without_bytecode": no_bytecode,
    }
    if rerun["api_calls"] != 0:
        report.notes.append(f"the re-run made {rerun['api_calls']} API calls: the cache missed")
    report.check(
        Check(
            "re-run / first run (CLI, wall)",
            ratio,
            0.05,
            "x",
            higher=False,
            note=f"{rerun['wall_s']:.2f} s vs {first['wall_s']:.1f} s; in-process (no interpreter start) "
            f"{in_process_ratio:.3f}",
        )
    )
    report.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
