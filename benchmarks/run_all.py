"""Run every benchmark, one fresh interpreter each, then rewrite the results section of benchmarks/README.md.

    .venv/bin/python benchmarks/run_all.py                 # all seven, then the README table
    .venv/bin/python benchmarks/run_all.py --table-only    # only rebuild the table from results/*.json

Each benchmark prints its figures and saves ``benchmarks/results/<name>.json``; the table is built from
those files, with the machine they ran on and the load average when each finished.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import BENCH, PYTHON, REPO, RESULTS, fmt, load_note, machine, markdown_table

BENCHMARKS = [
    "throughput",
    "overhead",
    "memory_growth",
    "cache_rerun",
    "cost",
    "lambda_cold_start",
    "startup",
    "tracing",
    "references",
]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def run(names: list[str]) -> list[tuple[str, int, float]]:
    out = []
    for name in names:
        print(f"\n=== {name} ({load_note()}) ===", flush=True)
        started = time.perf_counter()
        code = subprocess.run([PYTHON, str(BENCH / f"{name}.py")], cwd=REPO, check=False).returncode
        out.append((name, code, time.perf_counter() - started))
        print(f"=== {name}: exit {code} in {time.perf_counter() - started:.0f} s ===", flush=True)
    return out


def results() -> dict[str, dict[str, Any]]:
    found = {}
    for name in BENCHMARKS:
        path = RESULTS / f"{name}.json"
        if path.is_file():
            found[name] = json.loads(path.read_text(encoding="utf-8"))
    return found


def load_of(record: dict[str, Any]) -> str:
    one, five, _ = record["load_average_at_end"]
    return f"{one} / {five}"


def checks_table(found: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, record in found.items():
        for check in record["checks"]:
            sign = ">=" if check["direction"].startswith("higher") else "<="
            informative = check["note"].startswith("no target")
            rows.append(
                [
                    name,
                    check["name"] + (" (informative: the issue sets no target)" if informative else ""),
                    f"{fmt(check['value'])} {check['unit']}",
                    f"{sign} {fmt(check['target'])} {check['unit']}",
                    f"{check['ratio_to_target']:.2f}",
                    "—" if informative else "met" if check["met"] else "**missed**",
                    load_of(record),
                ]
            )
    header = ["benchmark", "figure", "measured", "target", "ratio to target", "", "load (1/5 min)"]
    return markdown_table(header, rows)


def details(found: dict[str, dict[str, Any]]) -> list[str]:
    out: list[str] = []
    if (record := found.get("throughput")) is not None:
        figures = record["figures"]
        rows = []
        per_call = figures.get("sweep_with_sdk_conversion_per_call")
        per_connection = (figures.get("one_connection_per_request") or {}).get("sweep")
        for run in [
            *figures["sweeps"],
            *([per_call] if per_call else []),
            *([per_connection] if per_connection else []),
            *([figures["long_latency_sweep"]] if figures.get("long_latency_sweep") else []),
        ]:
            bare = run.get("bare_client_per_s")
            rows.append(
                [
                    str(run["concurrency"])
                    + (" (SDK conversion per call)" if run.get("convert_per_call") else "")
                    + (" (one connection per request)" if run.get("one_connection_per_request") else ""),
                    f"{run['latency_s'] * 1000:.0f} ms",
                    str(run["requests"]),
                    f"{run['ideal_per_s']:.0f}",
                    "–" if bare is None else f"{bare:.1f}",
                    f"{run['rate_per_s']:.1f}",
                    "–" if bare is None else f"{run['ratio_to_bare_client']:.3f}",
                    f"{run['end_to_end_rate_per_s']:.1f}",
                    f"{run['fixed_startup_s']:.2f} s",
                    f"{run['client_cpu_ms_per_request']:.2f}",
                    f"{run['server_cpu_cores']:.2f}",
                    run["load"].split(" (")[0].removeprefix("load "),
                ]
            )
        naive = figures["naive"]
        speedups = ", ".join(f"{c}: {s:.1f}×" for c, s in figures["speedup_vs_naive"].items())
        gain = figures.get("request_templates_speedup")
        out += [
            "**Throughput** (`throughput.py`): requests/s against the ideal (concurrency ÷ latency) and a bare "
            "aiohttp client posting the same bodies to the same server at the same concurrency (what this "
            "machine allows); the sweep's request phase, its end-to-end rate (dataset load and MLflow "
            "included) and that fixed start-up apart. The server keeps connections open between requests, "
            "as the real API's are; the row marked *one connection per request* is the test suite's "
            "stand-in, which makes every client pay a TCP handshake per request (its bare client: "
            + (
                f"{per_connection['bare_client_per_s']:.1f} req/s)."
                if per_connection
                else "not measured in this run)."
            ),
            "",
            markdown_table(
                [
                    "concurrency",
                    "latency",
                    "requests",
                    "ideal req/s",
                    "bare client req/s",
                    "sweep req/s (request phase)",
                    "sweep ÷ bare",
                    "sweep req/s end to end",
                    "fixed start-up",
                    "client CPU ms/req",
                    "server CPU (cores)",
                    "load 1/5/15",
                ],
                rows,
            ),
            "",
            f"Naive loop (one call at a time, retry-and-sleep): {naive['rate_per_s']:.2f} req/s over "
            f"{naive['requests']} requests. Speed-up of the sweep, same run: {speedups}."
            + (
                f" Per-candidate request templates vs the SDK's conversion per call, same run: {gain:.2f}× "
                "the request-phase rate."
                if gain
                else ""
            ),
            "",
        ]
        sdk, split = figures.get("sdk_alone"), figures.get("client_cpu_ms_per_request")
        if sdk and split:
            out += [
                f"Where the request phase's client CPU goes at concurrency {sdk['concurrency']}, same run (ms per "
                f"request): the bare client {split['bare_client']:.2f}; google-genai on top "
                f"+{split['google_genai']:.2f} (the sweep's own provider over the same requests with nothing "
                f"else: {sdk['rate_per_s']:.1f} req/s, {sdk['ratio_to_bare_client']:.3f} of the bare client); "
                f"promptgrade's runner, cache, parsing, scoring and hand-over to the writer "
                f"+{split['promptgrade']:.2f} (the sweep: {split['sweep']:.2f}, "
                f"{sdk['sweep_ratio_to_sdk_alone']:.3f} of google-genai alone).",
                "",
            ]
    if (record := found.get("overhead")) is not None:
        figures = record["figures"]
        per = figures["attributed_concurrency_1"]["ms_per_request"]
        parts = figures["components_us"]
        out += [
            "**Client overhead** (`overhead.py`, CPU ms per request, zero server latency, concurrency 1): "
            f"promptgrade {per['promptgrade_total']:.2f} = load and prepare {per['load_and_prepare']:.2f} + "
            f"runner/cache/parse/score {per['runner_cache_parse_score']:.2f} + MLflow {per['mlflow_logging']:.2f}; "
            f"google-genai and HTTP {per['google_genai_sdk_and_http']:.2f} (not counted); whole client at "
            f"concurrency 8: {figures['concurrency_8']['ms_per_request']['whole_client']:.2f}. Components (µs/call): "
            + ", ".join(f"{k.removesuffix('_us')} {v:.0f}" for k, v in parts.items())
            + ".",
            "",
        ]
    if (record := found.get("memory_growth")) is not None:
        figures = record["figures"]
        rows = [
            [
                str(n),
                f"{run['after_imports_mb']:.0f}",
                f"{run['after_load_mb']:.0f}",
                f"{run['prepared_image_mb']:.0f} ({'in memory' if run['images_in_memory'] else 'on disk'})",
                f"{run['after_run_mb']:.0f}",
                f"{run['peak_mb']:.0f}",
                run["load"].split(" (")[0].removeprefix("load "),
            ]
            for n, run in figures["runs"].items()
        ]
        out += [
            "**Memory** (`memory_growth.py`, MiB RSS of a fresh interpreter, one prompt):",
            "",
            markdown_table(
                [
                    "examples",
                    "after imports",
                    "after load",
                    "prepared images (where)",
                    "after run",
                    "peak",
                    "load 1/5/15",
                ],
                rows,
            ),
            "",
        ]
    if (record := found.get("cache_rerun")) is not None:
        figures = record["figures"]
        split = figures["rerun_breakdown"]
        no_bytecode = figures.get("rerun_without_bytecode")
        out += [
            f"**Cache** (`cache_rerun.py`, {figures['requests']} requests = {figures['images']} trays × "
            f"{len(figures['prompts'])} prompts, {figures['latency_s'] * 1000:.0f} ms latency, concurrency "
            f"{figures['concurrency']}): first run {figures['first_run']['wall_s']:.1f} s, unchanged re-run "
            f"{figures['rerun']['wall_s']:.2f} s with {figures['rerun']['api_calls']} API calls. Re-run split: "
            f"interpreter and imports {split['interpreter_and_imports_s']:.2f} s, opening the MLflow store "
            f"{split['mlflow_store_open_s']:.2f} s, loading the dataset {split['load_s']:.2f} s, `Sweep.run` "
            f"{split['run_s']:.2f} s (in-process ratio {figures['in_process_ratio']:.3f})."
            + (
                f" Without bytecode (this machine sets PYTHONDONTWRITEBYTECODE=1): {no_bytecode['wall_s']:.2f} s."
                if no_bytecode
                else ""
            ),
            "",
        ]
    if (record := found.get("cost")) is not None:
        for set_name, data in record["figures"]["sets"].items():
            for family, table in data.get("families", {}).items():
                out += [
                    f"**Cost per image**, {set_name}, {family} family (`cost.py`; the price table's "
                    f"`image_tokens` rule for {family}):",
                    "",
                    table["table"],
                    "",
                ]
        if (grid := record["figures"].get("media_resolution_grid")) is not None:
            out += [
                "**media_resolution grid** (`cost.py`): a sweep on the sample set's test split against the "
                "local server, which bills each image by the family's documented count; the answers are "
                "scripted, the same at every resolution, so only tokens and dollars are measured, not "
                "accuracy:",
                "",
                grid["table"],
                "",
            ]
    if (record := found.get("lambda_cold_start")) is not None:
        figures = record["figures"]
        warm = figures["warm"]
        bytecode = figures["zip"]["bytecode"]
        shipped, bare = figures["cold_import_as_shipped"], figures["cold_import_no_bytecode"]
        out += [
            f"**Lambda** (`lambda_cold_start.py`): zip {figures['zip']['bytes']:,} bytes "
            f"({figures['zip']['mib']:.2f} MiB; largest: "
            + ", ".join(f"{n} {m:.1f} MiB" for n, m in figures["zip"]["largest_entries_mib"][:4])
            + f"; {bytecode['zip_bytes_without_bytecode']:,} bytes without its {bytecode['pyc_files']:,} .pyc); "
            f"cold import from a read-only tree, median of {shipped['runs']} alternating runs: "
            f"{shipped['import_s_median']:.3f} s as shipped "
            + (f"(bytecode {bytecode['cache_tag']})" if bytecode["compiled"] else "(no bytecode)")
            + f", {bare['import_s_median']:.3f} s without bytecode "
            f"(×{figures['cold_import_shipped_over_no_bytecode']:.2f}); warm: handler "
            f"{warm['handler_ms_median']:.1f} ms median, bare round trip {warm['raw_round_trip_ms_median']:.1f} ms, "
            f"overhead {warm['overhead_ms']:.1f} ms.",
            "",
        ]
    if (record := found.get("startup")) is not None:
        figures = record["figures"]
        medians, installs = figures["wall_s_median"], figures["installs"]
        out += [
            f"**Start-up** (`startup.py`): `{figures['command']}` in two venvs built by uv from the same "
            f"wheels, {figures['runs']} alternating runs each with PYTHONDONTWRITEBYTECODE=1: median "
            f"{medians['without_bytecode']:.2f} s installed without bytecode, {medians['with_bytecode']:.2f} s "
            f"with `--compile-bytecode` (×{figures['with_over_without']:.2f}); the install took "
            f"{installs['without_bytecode']['install_s']:.0f} s without and "
            f"{installs['with_bytecode']['install_s']:.0f} s with compiling "
            f"({installs['with_bytecode']['site_packages_pyc']:,} .pyc).",
            "",
        ]
    return out


def write_table(found: dict[str, dict[str, Any]], command: str) -> str:
    machines = {
        json.dumps({k: r["machine"][k] for k in ("cores", "memory_mb", "python")}) for r in found.values()
    }
    first = next(iter(found.values()))["machine"]
    shas = sorted({r["machine"]["promptgrade_git"] for r in found.values()})
    times = sorted(r["machine"]["time_utc"] for r in found.values())
    lines = [
        START,
        f"Produced by `{command}` — {times[0]} to {times[-1]} UTC, promptgrade {', '.join(shas)}; "
        f"{first['cores']} cores, {first['memory_mb'] / 1024:.1f} GiB memory, Python {first['python']}, "
        f"{first['platform']}"
        + ("" if len(machines) == 1 else " (results from more than one machine!)")
        + ". Other processes were running tests on the same machine: the load average is given per row.",
        "",
        checks_table(found),
        "",
        *details(found),
        END,
    ]
    return "\n".join(lines)


def update_readme(block: str) -> None:
    readme = BENCH / "README.md"
    text = readme.read_text(encoding="utf-8")
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    readme.write_text(text, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--table-only", action="store_true", help="do not run; rebuild the table")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these (table from all files)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if not args.table_only:
        outcomes = run(args.only or BENCHMARKS)
        failed = [name for name, code, _ in outcomes if code != 0]
        for name, code, seconds in outcomes:
            print(f"{name}: exit {code}, {seconds:.0f} s")
        if failed:
            print(f"failed: {', '.join(failed)}; README not updated", file=sys.stderr)
            return 1
    found = results()
    command = ".venv/bin/python benchmarks/run_all.py"
    block = write_table(found, command)
    update_readme(block)
    print(f"\n{block}\n\nupdated {Path(BENCH / 'README.md').relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
