"""What every benchmark shares: machine facts, result files, synthetic datasets and the local Gemini server.

Benchmarks run the real code paths — ``Sweep`` / ``run_sweep``, the real ``GeminiProvider`` (google-genai)
talking HTTP to the local Gemini-REST server, a real MLflow sqlite store and answer cache in a temp dir —
and print each figure next to its target. Only loopback traffic; every loop is bounded.

The fake server runs in its own process (``python -m promptgrade.testing.gemini_server``), as a real API
would: sharing the benchmark's interpreter would make client and server fight over one GIL, and its CPU
time can then be read from /proc to tell whether it, rather than promptgrade, is the bottleneck.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
RESULTS = BENCH / "results"
SAMPLE = REPO / "data" / "sample"
PYTHON = sys.executable
FAKE_API_KEY = "benchmark-key-not-real"
# A valid JSON answer for the meal-tray task, so every response parses and is scored like a real one.
ANSWER = '{"categories": ["soup", "bread"], "food_remaining_pct": 40}'
DATASET_VERSION = 1  # bump when the synthetic images change, so cached copies are regenerated
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- machine -----------------------------------------------------------------------------------------
def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def memory_total_mb() -> int:
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 0


def git_sha() -> str:
    """The commit measured, with ``-dirty`` when the working tree differs from it (read-only git)."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "memory_mb": memory_total_mb(),
        "load_average": load_average(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "promptgrade_git": git_sha(),
        "time_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def load_note() -> str:
    one, five, fifteen = load_average()
    return f"load {one} / {five} / {fifteen} (1/5/15 min) on {os.cpu_count()} cores"


# -- results -----------------------------------------------------------------------------------------
@dataclass
class Check:
    """One figure against its target; ``higher`` says which direction is good."""

    name: str
    value: float
    target: float
    unit: str
    higher: bool
    note: str = ""

    @property
    def ratio(self) -> float:
        """How far from the target, as a number where >= 1 means met."""
        if self.higher:
            return self.value / self.target if self.target else float("inf")
        return self.target / self.value if self.value else float("inf")

    @property
    def met(self) -> bool:
        return self.value >= self.target if self.higher else self.value <= self.target

    def line(self) -> str:
        sign = ">=" if self.higher else "<="
        verdict = "MET" if self.met else "MISSED"
        return (
            f"  {self.name}: {fmt(self.value)} {self.unit} (target {sign} {fmt(self.target)} {self.unit}; "
            f"ratio to target {self.ratio:.2f}) {verdict}" + (f" — {self.note}" if self.note else "")
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "target": self.target,
            "unit": self.unit,
            "direction": "higher is better" if self.higher else "lower is better",
            "ratio_to_target": self.ratio,
            "met": self.met,
            "note": self.note,
        }


def fmt(value: float) -> str:
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3g}"


@dataclass
class Report:
    """A benchmark's output: its figures, checks against targets, and the machine it ran on."""

    name: str
    command: str
    started: dict[str, Any] = field(default_factory=machine)
    figures: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(self, check: Check) -> Check:
        self.checks.append(check)
        print(check.line(), flush=True)
        return check

    def save(self) -> Path:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{self.name}.json"
        record = {
            "benchmark": self.name,
            "command": self.command,
            "machine": self.started,
            "load_average_at_end": load_average(),
            "figures": self.figures,
            "checks": [c.as_dict() for c in self.checks],
            "notes": self.notes,
        }
        path.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"saved {path.relative_to(REPO)} ({load_note()})", flush=True)
        return path


def command_line() -> str:
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(REPO) if script.is_relative_to(REPO) else script
    return " ".join([".venv/bin/python", str(shown), *sys.argv[1:]])


# -- synthetic datasets ------------------------------------------------------------------------------
def _sample_rows() -> list[dict[str, str]]:
    with (SAMPLE / "labels.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def synthetic_folder(n: int, *, root: Path | None = None) -> Path:
    """A folder dataset of ``n`` distinct 256×256 JPEG trays (split ``test``), made from the sample set.

    Image ``i`` is sample tray ``i % 320`` with ``i`` written into its corner as a 16-block binary code
    (blocks of 4×4 pixels survive JPEG re-encoding), so every file — and every prepared image — has its
    own sha256 while looking and weighing like the sample set. Labels are the source tray's. Built once
    per size under ``$TMPDIR/promptgrade-bench`` and reused (deterministic; a marker file says complete).
    """
    from PIL import Image

    root = root or Path(tempfile.gettempdir()) / "promptgrade-bench"
    folder = root / f"trays-{n}-v{DATASET_VERSION}"
    marker = folder / ".complete"
    if marker.is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "images").mkdir(parents=True)
    rows = _sample_rows()
    started = time.perf_counter()
    bases = [Image.open(SAMPLE / row["file"]).convert("RGB") for row in rows]
    with (folder / "labels.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "file", "categories", "food_remaining_pct", "split"])
        for i in range(n):
            source = rows[i % len(rows)]
            image = bases[i % len(rows)].copy()
            for bit in range(16):
                shade = (0, 0, 0) if (i >> bit) & 1 else (255, 255, 255)
                x = 4 * bit
                image.paste(shade, (x, 0, x + 4, 4))
            name = f"images/syn-{i:06d}.jpg"
            image.save(folder / name, format="JPEG", quality=90)
            writer.writerow(
                [f"syn-{i:06d}", name, source["categories"], source["food_remaining_pct"], "test"]
            )
    marker.write_text(f"{n} images in {time.perf_counter() - started:.1f} s\n", encoding="utf-8")
    print(f"generated {n} synthetic trays in {folder} ({time.perf_counter() - started:.1f} s)", flush=True)
    return folder


# -- experiment files --------------------------------------------------------------------------------
def write_experiment(
    path: Path,
    *,
    dataset: Path,
    base_url: str,
    prompts: list[str],
    concurrency: int,
    name: str = "bench",
    limit: int | None = None,
    image_max_side: int = 768,
    settings: str = "{temperature: 0.0, max_output_tokens: 256}",
    model: str = "gemini-2.5-flash",
) -> Path:
    """An experiment file like ``experiments/meal_tray.yaml``, pointed at ``dataset`` and ``base_url``."""
    lines = [
        f"name: {name}",
        f"task: {REPO / 'experiments' / 'tasks' / 'meal_tray.yaml'}",
        f"prompts_dir: {REPO / 'prompts'}",
        f"prices: {REPO / 'experiments' / 'prices.yaml'}",
        f"base_url: {base_url}",
        "dataset:",
        "  kind: folder",
        f"  path: {dataset}",
        "  split: test",
        f"  image_max_side: {image_max_side}",
        *([f"  limit: {limit}"] if limit is not None else []),
        "prompts:",
        *[f"  - {p}" for p in prompts],
        "models:",
        f"  - model: {model}",
        f"    settings: {settings}",
        f"    limits: {{concurrency: {concurrency}}}",
        f"concurrency: {concurrency}",
        "max_retries: 4",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@contextlib.contextmanager
def isolated_env(tmp: Path) -> Iterator[dict[str, str]]:
    """A fake key, an empty answer cache and MLflow store under ``tmp``; nothing can reach Google."""
    tmp.mkdir(parents=True, exist_ok=True)
    saved = dict(os.environ)
    for name in ("GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GEMINI_BASE_URL"):
        os.environ.pop(name, None)
    os.environ.update(
        {
            "GEMINI_API_KEY": FAKE_API_KEY,
            "PROMPTGRADE_CACHE": str(tmp / "answer-cache.sqlite"),
            "PROMPTGRADE_CACHE_DIR": str(tmp / "dataset-cache"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        }
    )
    try:
        yield dict(os.environ)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def migrate_store(tracking_uri: str) -> float:
    """Create and migrate an empty MLflow sqlite store; returns seconds taken.

    A team's store exists already, so its one-off creation (schema migrations, seconds of CPU) is done
    before any timing starts and reported apart.
    """
    from mlflow import MlflowClient

    started = time.perf_counter()
    MlflowClient(tracking_uri=tracking_uri).search_experiments()
    return time.perf_counter() - started


def with_bytecode(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a child interpreter that reads and writes bytecode, kept under $TMPDIR.

    This machine sets PYTHONDONTWRITEBYTECODE=1, so every fresh interpreter would compile mlflow,
    scikit-learn & co. from source (seconds), which no installed copy of promptgrade does (pip writes
    .pyc at install time). Benchmarks that time a fresh interpreter use a bytecode cache outside the
    work tree instead (PYTHONPYCACHEPREFIX), warmed before timing.
    """
    out = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "promptgrade-bench" / "pycache")
    return out


RESULT_MARK = "RESULT:"


def print_result(result: dict[str, Any]) -> None:
    """What a benchmark's child process hands back: one marked JSON line on its stdout (``child_result``)."""
    print(RESULT_MARK + json.dumps(result), flush=True)


def child_result(command: list[str], what: str) -> dict[str, Any]:
    """Run a benchmark's child — a fresh interpreter, so what one measurement leaves behind in a process
    cannot slow the next — and return what it printed with ``print_result``. A child that fails, or
    prints no result, is an error naming ``what``."""
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-3000:]}")
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_MARK)), None)
    if line is None:
        raise RuntimeError(f"{what} printed no result:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(line.removeprefix(RESULT_MARK))
    return result


def import_profile(args: list[str], env: dict[str, str], top: int = 8) -> list[tuple[str, float]]:
    """Top-level packages by import time in a fresh interpreter (``-X importtime`` self times, summed
    per package so nothing is counted twice). ``args`` follow the interpreter, e.g. ``["-c", code]``."""
    done = subprocess.run(
        [PYTHON, "-X", "importtime", *args], env=env, capture_output=True, text=True, check=True
    )
    totals: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        own, _, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        if own.isdigit():
            root = name.split(".")[0]
            totals[root] = totals.get(root, 0.0) + int(own) / 1e6
    return sorted(totals.items(), key=lambda item: -item[1])[:top]


# -- the local Gemini server, in its own process -----------------------------------------------------
class ServerProcess:
    """``python -m promptgrade.testing.gemini_server`` on a free loopback port, with its CPU time.

    ``keep_alive``: connections stay open between requests, as the real API's do; otherwise one
    connection per request, as the test suite's stand-in serves (see throughput.py for the difference).
    """

    def __init__(self, latency_s: float, answer: str = ANSWER, *, keep_alive: bool = False) -> None:
        self.latency_s = latency_s
        self.answer = answer
        self.keep_alive = keep_alive
        self.process: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> ServerProcess:
        command = [PYTHON, "-m", "promptgrade.testing.gemini_server", "--port", "0"]
        command += ["--latency", str(self.latency_s), "--default-answer", self.answer]
        command += ["--keep-alive"] if self.keep_alive else []
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            if line.startswith("GOOGLE_GEMINI_BASE_URL="):
                self.base_url = line.split("=", 1)[1].strip()
                return self
        self.__exit__()
        raise RuntimeError("the local Gemini server did not start")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process so far (all its threads)."""
        assert self.process is not None
        return process_cpu_seconds(self.process.pid)


def process_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15)


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB, from /proc/self/status."""
    values = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, amount = line.split(":", 1)
                values[key] = int(amount.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


# -- timing a sweep ----------------------------------------------------------------------------------
class Timeline:
    """A sweep listener that notes when candidates start and examples finish, and CPU time at each.

    ``on_first`` runs when the first candidate starts and ``on_last`` when the ``expected``-th example
    is done (e.g. to read the server's CPU time at exactly those moments).
    """

    def __init__(
        self,
        expected: int = 0,
        on_first: Callable[[], None] | None = None,
        on_last: Callable[[], None] | None = None,
    ) -> None:
        self.expected = expected
        self.on_first = on_first
        self.on_last = on_last
        self.started: float | None = None
        self.cpu_started: float | None = None
        self.last_done = 0.0
        self.cpu_last_done = 0.0
        self.done = 0
        self.statuses: dict[str, int] = {}
        self.candidate_done_at: list[tuple[float, float]] = []

    def candidate_started(self, candidate: object, total: int) -> None:
        if self.started is None:
            if self.on_first is not None:
                self.on_first()
            self.started = time.perf_counter()
            self.cpu_started = time.process_time()

    def example_done(self, candidate: object, outcome: Any) -> None:
        self.done += 1
        self.statuses[outcome.status] = self.statuses.get(outcome.status, 0) + 1
        self.last_done = time.perf_counter()
        self.cpu_last_done = time.process_time()
        if self.done == self.expected and self.on_last is not None:
            self.on_last()

    def candidate_done(self, result: object) -> None:
        self.candidate_done_at.append((time.perf_counter(), time.process_time()))

    def training(self, candidate: object, stage: str, fraction: float) -> None:
        """Baselines' training progress: no baselines run in these benchmarks."""

    @property
    def seconds(self) -> float:
        assert self.started is not None
        return self.last_done - self.started


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)
