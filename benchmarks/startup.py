"""Benchmark 8: start-up of ``promptgrade sweep experiments/quickstart.yaml --dry-run``, installed as
``make install`` installed it before (no bytecode) and as it does now (``uv pip install --compile-bytecode``
plus ``compileall`` of the editable sources).

Two throw-away venvs are made with uv from the same wheels — the versions of this checkout's .venv
(``uv pip freeze``) as constraints, installed from uv's cache (hard links: cheap) — each with its own
copy of the project installed editable with ``[dev]``, exactly the Makefile's command with and without
``--compile-bytecode``. The command then runs in both, alternating, with ``PYTHONDONTWRITEBYTECODE=1``
so that a run cannot leave bytecode behind for the next one: that is the situation of a read-only
install or a container, and of every first command after an install without bytecode. One untimed run
each first (page cache), then ``--runs`` timed runs each; the median wall time of the whole process is
the figure, and the ratio of the two is taken in the same run. The installs are timed too: compiling
is paid once, at install.

    .venv/bin/python benchmarks/startup.py            # about 1-2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import PYTHON, REPO, Check, Report, command_line, load_note

COMMAND = ["sweep", "experiments/quickstart.yaml", "--dry-run"]
PROJECT_PARTS = ("pyproject.toml", "README.md", "evaluator/promptgrade", "lambda_handler", "experiments")


def uv() -> str:
    beside = Path(PYTHON).parent / "uv"
    found = shutil.which("uv") or (str(beside) if beside.is_file() else None)
    if found is None:
        raise SystemExit("uv is needed (make install puts it in the venv)")
    return found


def constraints(path: Path) -> Path:
    """This checkout's installed versions, so both venvs get the wheels the lab is measured with."""
    frozen = subprocess.run(
        [uv(), "pip", "freeze", "--python", PYTHON, "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path.write_text(frozen, encoding="utf-8")
    return path


def project_copy(target: Path) -> Path:
    """The sources as they are now, without bytecode, for one venv's editable install."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "bundle")
    for part in PROJECT_PARTS:
        source, dest = REPO / part, target / part
        if source.is_dir():
            shutil.copytree(source, dest, ignore=ignore)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
    return target


def install(root: Path, pins: Path, *, bytecode: bool) -> dict[str, Any]:
    """A venv at ``root/venv`` as the Makefile makes it, with or without bytecode; timed."""
    project = project_copy(root / "project")
    venv = root / "venv"
    python = venv / "bin" / "python"
    started = time.perf_counter()
    subprocess.run([uv(), "venv", "--quiet", "--python", PYTHON, str(venv)], check=True)
    base = [uv(), "pip", "install", "--python", str(python), "--quiet", "-c", str(pins)]
    base += ["--compile-bytecode"] if bytecode else []
    target = ["-e", f"{project}[dev]"]
    offline = subprocess.run([*base, "--offline", *target], capture_output=True, text=True, check=False)
    if offline.returncode != 0:  # not everything in uv's cache: let uv fetch it from the index
        subprocess.run([*base, *target], check=True)
    if bytecode:
        sources = [str(project / "evaluator"), *map(str, sorted((project / "lambda_handler").glob("*.py")))]
        subprocess.run([str(python), "-m", "compileall", "-q", *sources], check=True)
    seconds = time.perf_counter() - started
    site = next((venv / "lib").glob("python3.*/site-packages"))
    return {
        "venv": venv,
        "install_s": seconds,
        "from_uv_cache_only": offline.returncode == 0,
        "site_packages_pyc": sum(1 for _ in site.rglob("*.pyc")),
        "project_pyc": sum(1 for _ in (project / "evaluator").rglob("*.pyc")),
    }


def run_once(venv: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [str(venv / "bin" / "promptgrade"), *COMMAND],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(
            f"promptgrade {' '.join(COMMAND)} exited {done.returncode}:\n{done.stderr[-3000:]}"
        )
    return seconds, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each install")
    args = parser.parse_args()
    report = Report("startup", command_line())
    print(f"start-up: promptgrade {' '.join(COMMAND)}, installed without and with bytecode ({load_note()})")
    env = {name: value for name, value in os.environ.items() if not name.startswith("PYTHON")}
    env |= {"PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "120", "NO_COLOR": "1"}
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"):
        env.pop(name, None)  # a dry run never calls a model; keep the runs identical
    with tempfile.TemporaryDirectory(prefix="pg-bench-startup-") as tmp_name:
        tmp = Path(tmp_name)
        pins = constraints(tmp / "constraints.txt")
        states = {
            "without_bytecode": install(tmp / "before", pins, bytecode=False),
            "with_bytecode": install(tmp / "after", pins, bytecode=True),
        }
        for name, state in states.items():
            print(
                f"  {name}: installed in {state['install_s']:.1f} s "
                f"({'uv cache only' if state['from_uv_cache_only'] else 'with downloads'}); "
                f"{state['site_packages_pyc']:,} .pyc in site-packages, {state['project_pyc']} in the sources",
                flush=True,
            )
        outputs = {name: run_once(state["venv"], env)[1] for name, state in states.items()}  # untimed
        same_output = outputs["without_bytecode"] == outputs["with_bytecode"]
        times: dict[str, list[float]] = {name: [] for name in states}
        for _ in range(args.runs):
            for name, state in states.items():
                times[name].append(run_once(state["venv"], env)[0])
        left = {
            name: sum(1 for _ in (tmp / folder / "venv").rglob("*.pyc"))
            for name, folder in (("without_bytecode", "before"), ("with_bytecode", "after"))
        }
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["with_bytecode"] / medians["without_bytecode"]
    print(
        f"  {args.runs} runs each, alternating, PYTHONDONTWRITEBYTECODE=1: without bytecode median "
        f"{medians['without_bytecode']:.2f} s (min {min(times['without_bytecode']):.2f}), with bytecode "
        f"{medians['with_bytecode']:.2f} s (min {min(times['with_bytecode']):.2f}) → ×{ratio:.2f}; "
        f"same output: {same_output}; .pyc after the runs: {left['without_bytecode']} / "
        f"{left['with_bytecode']:,}; {load_note()}",
        flush=True,
    )
    report.figures = {
        "command": "promptgrade " + " ".join(COMMAND),
        "runs": args.runs,
        "installs": {name: {k: v for k, v in state.items() if k != "venv"} for name, state in states.items()},
        "wall_s": times,
        "wall_s_median": medians,
        "with_over_without": ratio,
        "same_output": same_output,
        "pyc_after_runs": left,
        "load": load_note(),
    }
    if not same_output:
        report.notes.append("the two installs printed different dry-run output")
    report.check(
        Check(
            "dry-run start-up with / without installed bytecode",
            ratio,
            1.0,
            "x",
            higher=False,
            note=f"no target; {medians['with_bytecode']:.2f} s vs {medians['without_bytecode']:.2f} s (median)",
        )
    )
    report.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
