"""Sweeps that survive the real world: never lose a paid answer, never pay twice for one.

The real google-genai client talks to the local Gemini-REST server, scripted with faults; the
server counts every request, so "no call was made" is a measured fact, not an assumption.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from helpers.sweeps import ACCURACY_METRICS, sweep
from promptgrade.cache import AnswerCache
from promptgrade.cli import app
from promptgrade.testing.gemini_server import FakeGemini, Fault, RequestInfo

ROOT = Path(__file__).resolve().parents[2]
RUNNER = CliRunner(env={"COLUMNS": "200"})
N = 12
EXPERIMENT = """\
name: reliability
task: {root}/experiments/tasks/meal_tray.yaml
prompts_dir: {prompts}
prices: {root}/experiments/prices.yaml
base_url: {base_url}
dataset: {{kind: folder, path: {root}/data/sample, split: test, limit: {n}, image_max_side: 128}}
prompts: [meal_tray_freetext@1, meal_tray_json@1]
models:
  - model: gemini-2.5-flash
    settings: {{temperature: 0.0}}
concurrency: {concurrency}
max_retries: 2
retry_initial_s: 0.01
retry_max_s: 0.05
{extra}
"""


def answer(request: RequestInfo) -> str:
    """A deterministic answer per image, in the format the prompt asked for."""
    digit = int((request.image_sha256 or "0")[0], 16)
    categories = ["soup"] if digit % 2 else ["rice dish", "salad"]
    grade = (digit * 7) % 101
    if request.has_response_schema:
        return json.dumps({"categories": categories, "food_remaining_pct": grade})
    return f"Category: {', '.join(categories)}\nFood %: {grade}%"


@pytest.fixture
def server(gemini_server: FakeGemini) -> FakeGemini:
    gemini_server.default_answer = answer
    return gemini_server


def write_experiment(
    tmp_path: Path,
    server: FakeGemini,
    *,
    extra: str = "",
    concurrency: int = 4,
    prompts: Path = ROOT / "prompts",
    name: str = "exp.yaml",
) -> Path:
    path = tmp_path / name
    text = EXPERIMENT.format(
        root=ROOT, prompts=prompts, base_url=server.base_url, n=N, concurrency=concurrency, extra=extra
    )
    path.write_text(text, encoding="utf-8")
    return path


def candidate_metrics(tracking: str, experiment: str = "reliability") -> dict[str, dict[str, float]]:
    """prompt name → metrics of its candidate run in the latest sweep."""
    client = MlflowClient(tracking_uri=tracking)
    exp = client.get_experiment_by_name(experiment)
    sweeps = client.search_runs(
        [exp.experiment_id], "tags.`promptgrade.kind` = 'sweep'", order_by=["attributes.start_time DESC"]
    )
    runs = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{sweeps[0].info.run_id}'")
    return {r.data.params["prompt_name"]: r.data.metrics for r in runs}


# -- cache ----------------------------------------------------------------------------------------
def test_an_unchanged_rerun_makes_no_calls_and_reproduces_the_metrics(
    tmp_path: Path, server: FakeGemini, tracking: str, fake_api_key: str
) -> None:
    path = write_experiment(tmp_path, server)
    first = sweep(path, tracking)
    assert first.exit_code == 0, first.output
    assert server.calls == 2 * N
    before = candidate_metrics(tracking)
    second = sweep(path, tracking)
    assert second.exit_code == 0, second.output
    assert server.calls == 2 * N  # nothing new was paid for
    assert f"0 API calls, {2 * N} answers from the cache" in second.output
    after = candidate_metrics(tracking)
    for prompt, metrics in before.items():
        for name in (*ACCURACY_METRICS, "latency_p50_ms"):
            assert after[prompt][name] == pytest.approx(metrics[name]), (prompt, name)


def test_changing_one_prompt_recalls_only_its_candidates(
    tmp_path: Path, server: FakeGemini, tracking: str, fake_api_key: str
) -> None:
    import shutil

    prompts = tmp_path / "prompts"
    shutil.copytree(ROOT / "prompts", prompts)
    path = write_experiment(tmp_path, server, prompts=prompts)
    assert sweep(path, tracking).exit_code == 0
    (prompts / "meal_tray_json/v2.jinja").write_text(
        (prompts / "meal_tray_json/v1.jinja").read_text() + "\nBe precise.\n", encoding="utf-8"
    )
    path.write_text(path.read_text().replace("meal_tray_json@1", "meal_tray_json@2"), encoding="utf-8")
    assert sweep(path, tracking).exit_code == 0
    new_calls = server.requests[2 * N :]
    assert len(new_calls) == N
    assert all("Be precise." in r.prompt for r in new_calls)


def test_no_cache_and_refresh(tmp_path: Path, server: FakeGemini, tracking: str, fake_api_key: str) -> None:
    path = write_experiment(tmp_path, server)
    assert sweep(path, tracking, "--no-cache").exit_code == 0
    assert AnswerCache().count() == 0  # --no-cache writes nothing either
    assert sweep(path, tracking).exit_code == 0
    assert server.calls == 4 * N
    assert sweep(path, tracking, "--refresh").exit_code == 0
    assert server.calls == 6 * N  # refresh calls again …
    assert sweep(path, tracking).exit_code == 0
    assert server.calls == 6 * N  # … and stores what it got
    info = RUNNER.invoke(app, ["cache", "info"])
    assert f"{2 * N} answers" in info.output and "gemini/gemini-2.5-flash" in info.output
    cleared = RUNNER.invoke(app, ["cache", "clear"])
    assert f"removed {2 * N}" in cleared.output
    assert AnswerCache().count() == 0


def test_cache_keys_never_hold_the_key_or_image_bytes(
    tmp_path: Path, server: FakeGemini, tracking: str, fake_api_key: str
) -> None:
    path = write_experiment(tmp_path, server)
    assert sweep(path, tracking).exit_code == 0
    raw = Path(os.environ["PROMPTGRADE_CACHE"]).read_bytes()
    assert fake_api_key.encode() not in raw
    assert b"\xff\xd8\xff" not in raw  # no JPEG in the cache file
    assert os.path.getsize(os.environ["PROMPTGRADE_CACHE"]) < 200_000


# -- faults -----------------------------------------------------------------------------------------
def test_429_waits_for_the_servers_retry_delay(
    tmp_path: Path, server: FakeGemini, tracking: str, fake_api_key: str
) -> None:
    path = write_experiment(tmp_path, server, concurrency=1)
    server.enqueue_fault(Fault.rate_limited(retry_delay="1.5s"))
    result = sweep(path, tracking)
    assert result.exit_code == 0, result.output
    assert server.calls == 2 * N + 1
    # Measured at the server: the first request got the 429, the second is its retry (concurrency 1).
    rejected, retry = server.requests[:2]
    assert (retry.prompt, retry.image_sha256) == (rejected.prompt, rejected.image_sha256)
    assert retry.received_at - rejected.received_at >= 1.5  # backoff is ≤ 0.05 s: only RetryInfo explains it
    assert all(m["error_rate"] == 0 for m in candidate_metrics(tracking).values())


@pytest.mark.parametrize(
    "fault", [Fault.server_error(500), Fault.server_error(503), Fault.dropped(), Fault.rate_limited("0.01s")]
)
def test_transient_faults_are_retried_and_nothing_is_lost(
    tmp_path: Path, server: FakeGemini, tracking: str, fake_api_key: str, fault: Fault
) -> None:
    path = write_experiment(tmp_path, server)
    server.enqueue_fault(fault, times=2)
    result = sweep(path, tracking)
    assert result.exit_code == 0, result.output
    assert server.calls == 2 * N + 2
    for metrics in candidate_metrics(tracking).values():
        assert metrics["error_rate"] == 0 and metrics["n_examples"] == N


def test_timeouts_are_retried(tmp_path: Path, server: FakeGemini, tracking: str, fake_api_key: str) -> None:
    path = write_experiment(tmp_path, server)
    path.write_text(
        path.read_text().replace(
            "settings: {temperature: 0.0}", "settings: {temperature: 0.0}\n    timeout_s: 0.5"
        )
    )
    server.enqueue_fault(Fault.hang(2.0))
    assert sweep(path, tracking).exit_code == 0
    assert all(m["error_rate"] == 0 for m in candidate_metrics(tracking).values())


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        (Fault.safety(), "blocked"),
        (Fault.empty(), "empty"),
        (Fault.truncated('{"categories": ["so'), "truncated"),
    ],
)
def test_answers_that_are_not_answers_are_recorded_not_retried(
    tmp_path: Path, server: FakeGemini, tracking: str, fake_api_key: str, fault: Fault, kind: str
) -> None:
    path = write_experiment(tmp_path, server, concurrency=1)
    server.enqueue_fault(fault)
    result = sweep(path, tracking)
    assert result.exit_code == 0, result.output
    assert server.calls == 2 * N  # not retried as if transient
    client = MlflowClient(tracking_uri=tracking)
    exp = client.get_experiment_by_name("reliability")
    kinds = []
    for run in client.search_runs([exp.experiment_id], "tags.`promptgrade.kind` = 'candidate'"):
        table = json.loads(Path(client.download_artifacts(run.info.run_id, "predictions.json")).read_text())
        kinds += [row[table["columns"].index("error_kind")] for row in table["data"]]
    assert kinds.count(kind) == 1


def test_malformed_json_answer_is_a_parse_failure(
    tmp_path: Path, server: FakeGemini, tracking: str, fake_api_key: str
) -> None:
    path = write_experiment(tmp_path, server)
    server.default_answer = lambda r: (
        '{"categories": ["soup"], "food_remaining_pct": ' if r.has_response_schema else answer(r)
    )
    assert sweep(path, tracking).exit_code == 0
    metrics = candidate_metrics(tracking)
    assert metrics["meal_tray_json"]["parse_failure_rate"] == 1.0
    assert metrics["meal_tray_freetext"]["parse_failure_rate"] == 0.0
    assert server.calls == 2 * N


# -- stops that can be resumed -------------------------------------------------------------------------
def test_daily_quota_stops_cleanly_and_the_same_command_resumes(
    tmp_path: Path, server: FakeGemini, tracking: str, fake_api_key: str
) -> None:
    path = write_experiment(tmp_path, server, concurrency=1)
    server.latency_s = 0.0
    original = server.default_answer
    served = 0

    def quota_after_five(request: RequestInfo) -> str:
        nonlocal served
        served += 1
        if served == 5:
            server.enqueue_fault(Fault.quota_exhausted(), times=1000)
        return original(request)

    server.default_answer = quota_after_five
    stopped = sweep(path, tracking)
    assert stopped.exit_code == 3, stopped.output
    assert "daily quota exhausted" in stopped.output and "again to resume" in " ".join(stopped.output.split())
    calls_before = server.calls
    assert calls_before <= 7  # stopped at once, not retried until tomorrow

    client = MlflowClient(tracking_uri=tracking)
    exp = client.get_experiment_by_name("reliability")
    sweep_run = client.search_runs([exp.experiment_id], "tags.`promptgrade.kind` = 'sweep'")[0]
    assert sweep_run.info.status == "KILLED" and sweep_run.data.tags["promptgrade.partial"] == "true"
    partial = [r for r in client.search_runs([exp.experiment_id], "tags.`promptgrade.kind` = 'candidate'")]
    assert any(r.data.tags.get("promptgrade.partial") == "true" for r in partial)

    server.clear_faults()
    server.default_answer = original
    saved = AnswerCache().count()
    resumed = sweep(path, tracking)
    assert resumed.exit_code == 0, resumed.output
    assert "resumed sweep" in resumed.output
    runs = client.search_runs([exp.experiment_id], "tags.`promptgrade.kind` = 'candidate'")
    assert len(runs) == 2  # continued in the same runs, no duplicates
    assert len(client.search_runs([exp.experiment_id], "tags.`promptgrade.kind` = 'sweep'")) == 1
    assert all(r.info.status == "FINISHED" and r.data.metrics["n_examples"] == N for r in runs)
    assert saved == 5  # every request after the fifth hit the quota
    assert server.calls - calls_before == 2 * N - saved


def test_a_model_that_keeps_failing_stops_the_sweep(
    tmp_path: Path, server: FakeGemini, tracking: str, fake_api_key: str
) -> None:
    path = write_experiment(tmp_path, server, concurrency=1, extra="max_consecutive_failures: 3")
    server.enqueue_fault(Fault.server_error(503), times=10_000)
    result = sweep(path, tracking)
    assert result.exit_code == 3
    assert ("keeps failing" in result.output and "503" in result.output) or "server_error" in result.output
    assert server.calls == 3 * 3  # three examples, each with its retries, then stop


def test_budget_stops_before_overspending_and_marks_results_partial(
    tmp_path: Path, server: FakeGemini, tracking: str, fake_api_key: str
) -> None:
    path = write_experiment(tmp_path, server, concurrency=1, extra="max_calls: 5")
    result = sweep(path, tracking)
    assert result.exit_code == 3
    assert "max_calls=5" in result.output
    assert server.calls == 5
    client = MlflowClient(tracking_uri=tracking)
    exp = client.get_experiment_by_name("reliability")
    runs = client.search_runs([exp.experiment_id], "tags.`promptgrade.kind` = 'candidate'")
    partial = [r for r in runs if r.data.tags.get("promptgrade.partial") == "true"]
    assert len(partial) == 1 and partial[0].data.metrics["n_examples"] == 5
    assert "predictions_partial.json" in {a.path for a in client.list_artifacts(partial[0].info.run_id)}


def test_cost_budget(tmp_path: Path, server: FakeGemini, tracking: str, fake_api_key: str) -> None:
    path = write_experiment(tmp_path, server, concurrency=1, extra="max_cost_usd: 0.0005")
    result = sweep(path, tracking)
    assert result.exit_code == 3 and "max_cost_usd" in result.output
    spent = sum(m.get("cost_usd", 0.0) for m in candidate_metrics(tracking).values())
    assert 0 < spent <= 0.0005


def test_cost_budget_counts_the_calls_in_flight(
    tmp_path: Path, server: FakeGemini, tracking: str, fake_api_key: str
) -> None:
    """Four calls at a time, each slow: a call may start only if the ones still running leave room for it."""
    limit = 0.002
    path = write_experiment(tmp_path, server, concurrency=4, extra=f"max_cost_usd: {limit}")
    server.latency_s = 0.1
    result = sweep(path, tracking)
    assert result.exit_code == 3 and "max_cost_usd" in result.output
    # What the API would bill, from the server's usageMetadata, not the sweep's own tally.
    price = yaml.safe_load((ROOT / "experiments/prices.yaml").read_text())["models"]["gemini-2.5-flash"]
    billed = sum(u.input_tokens * price["input"] + u.output_tokens * price["output"] for u in server.usage)
    assert server.calls > 4  # the limit was reached after more than one round of concurrent calls
    assert 0 < billed / 1e6 <= limit
    spent = sum(m.get("cost_usd", 0.0) for m in candidate_metrics(tracking).values())
    assert spent == pytest.approx(billed / 1e6)  # every paid answer is in MLflow


# -- kill -9 and Ctrl-C -------------------------------------------------------------------------------------
# `promptgrade sweep` as a terminal starts it: with Python's Ctrl-C handler even where the suite itself
# runs with SIGINT ignored (a background job of a shell without job control, as `make test &` is), which
# a child would inherit and Python would then honour by never raising KeyboardInterrupt.
AS_IN_A_TERMINAL = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'promptgrade'; runpy.run_module('promptgrade.cli', run_name='__main__')"
)


def _spawn(path: Path, tracking: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", AS_IN_A_TERMINAL, "sweep", str(path), "--tracking-uri", tracking],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _wait_for_calls(server: FakeGemini, count: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while server.calls < count:
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
        assert time.monotonic() < deadline, "the sweep made no progress"
        time.sleep(0.02)


def _cached(cache: Path) -> int:
    with sqlite3.connect(cache) as db:
        return int(db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_killed_sweep_resumes_with_exactly_the_missing_calls_into_the_same_runs(
    tmp_path: Path,
    server: FakeGemini,
    tracking: str,
    fake_api_key: str,
    sig: signal.Signals,
    _migrated_mlflow_db: Path,
) -> None:
    path = write_experiment(tmp_path, server, concurrency=2)
    # calls after the ninth are held until the signal is sent: the sweep is mid-run when it arrives,
    # however slow the machine (a plain 0.1 s latency let a slow test process signal after the end)
    signalled = threading.Event()

    def held_after_nine(info: RequestInfo) -> float:
        if server.calls > 9:
            signalled.wait(30)
        return 0.1

    server.latency_s = held_after_nine
    env = {**os.environ, "COLUMNS": "200"}
    process = _spawn(path, tracking, env)
    _wait_for_calls(server, 9, process)
    process.send_signal(sig)
    signalled.set()
    output = process.communicate(timeout=60)[0].decode()
    if sig == signal.SIGINT:
        assert process.returncode == 130, output
        assert "again to resume" in " ".join(output.split())
    else:
        assert process.returncode == -9
    cache = Path(os.environ["PROMPTGRADE_CACHE"])
    saved = _cached(cache)
    assert 0 < saved < 2 * N
    calls_before = server.calls

    resumed = sweep(path, tracking)
    assert resumed.exit_code == 0, resumed.output
    assert server.calls - calls_before == 2 * N - saved  # exactly the missing answers were bought

    client = MlflowClient(tracking_uri=tracking)
    exp = client.get_experiment_by_name("reliability")
    assert len(client.search_runs([exp.experiment_id], "tags.`promptgrade.kind` = 'sweep'")) == 1
    runs = client.search_runs([exp.experiment_id], "tags.`promptgrade.kind` = 'candidate'")
    assert len(runs) == 2
    resumed_metrics = {r.data.params["prompt_name"]: r.data.metrics for r in runs}

    # The same sweep, uninterrupted, into another store with another cache: same figures.
    other = f"sqlite:///{tmp_path / 'other.db'}"
    shutil.copy(_migrated_mlflow_db, tmp_path / "other.db")
    os.environ["PROMPTGRADE_CACHE"] = str(tmp_path / "other-cache.sqlite")
    clean = sweep(path, other)
    assert clean.exit_code == 0, clean.output
    clean_metrics = candidate_metrics(other)
    for prompt, metrics in clean_metrics.items():
        for name in ACCURACY_METRICS:
            assert resumed_metrics[prompt][name] == pytest.approx(metrics[name]), (prompt, name)


# -- secrets --------------------------------------------------------------------------------------------
def test_the_api_key_is_nowhere_in_mlflow_the_cache_or_logs(
    tmp_path: Path,
    server: FakeGemini,
    tracking: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "sk-promptgrade-test-secret-7f3a9c1e5b"
    monkeypatch.setenv("GEMINI_API_KEY", secret)
    for name in ("GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"):
        monkeypatch.delenv(name, raising=False)
    path = write_experiment(tmp_path, server)
    server.enqueue_fault(Fault.http_error(400, f"API key {secret} not valid"), times=1)
    caplog.set_level("DEBUG")
    result = sweep(path, tracking)
    assert result.exit_code == 0, result.output
    assert secret not in result.output and secret not in caplog.text
    for file in tmp_path.rglob("*"):
        if file.is_file():
            assert secret.encode() not in file.read_bytes(), file
    assert any(r.has_api_key for r in server.requests)  # it was sent, to the API only
