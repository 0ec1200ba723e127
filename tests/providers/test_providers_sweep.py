"""Given a model of every provider (Gemini, Bedrock, OpenAI-compatible…) in one experiment, when I
sweep, then MLflow has a run per candidate per provider, scored alike, and the summary lists them all.

Each provider's real client talks HTTP to its own local server (Gemini REST, Bedrock Converse, Chat
Completions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from helpers.provider_servers import dummy_aws_credentials, serve, write_experiment
from helpers.sweeps import examples_of
from promptgrade.cli import app
from promptgrade.providers.records import NAMES
from promptgrade.testing.bedrock_server import ConverseRequest, FakeBedrock
from promptgrade.testing.gemini_server import FakeGemini, RequestInfo
from promptgrade.testing.openai_server import ChatRequest, FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]
RUNNER = CliRunner(env={"COLUMNS": "220"})
N = 8
EXPERIMENT = """\
name: two-providers
task: {root}/experiments/tasks/meal_tray.yaml
prompts_dir: {root}/prompts
prices: {root}/experiments/prices.yaml
base_url: {gemini}
dataset: {{kind: folder, path: {root}/data/sample, split: test, limit: {n}, image_max_side: 256}}
prompts: [meal_tray_json@1]
models:
  - model: gemini-2.5-flash
  - provider: openai
    model: qwen2.5-vl-7b
    base_url: {openai}
concurrency: 4
"""
BEDROCK = """\
  - provider: bedrock
    model: amazon.nova-lite-v1:0
    region: eu-west-1
    base_url: {bedrock}
"""


def test_one_sweep_scores_every_provider_alike(
    tmp_path: Path, tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve(*NAMES, monkeypatch=monkeypatch) as served:
        path = write_experiment(
            tmp_path / "exp.yaml", served, name="two-providers", n=N, side=256, extra="concurrency: 4\n"
        )
        truth = {e.image.sha256: e.labels for e in examples_of(path)}

        def right(request: RequestInfo | ChatRequest | ConverseRequest) -> str:
            labels = truth[request.image_sha256 or ""]
            return json.dumps({"categories": list(labels.categories), "food_remaining_pct": labels.grade})

        def wrong(request: ChatRequest) -> str:
            return json.dumps({"categories": ["snack"], "food_remaining_pct": 100})

        for provider in served:
            provider.answer(wrong if provider.name == "openai" else right)
        result = RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", tracking])
        assert result.exit_code == 0, result.output
        assert [provider.server.calls for provider in served] == [N] * len(served)
        servers = {provider.name: provider.server for provider in served}
        # structured output, as the template asks, through each API's own mechanism
        assert all(r.response_format is not None for r in servers["openai"].requests)
        assert all(r.tool_config is not None for r in servers["bedrock"].requests)

    client = MlflowClient(tracking_uri=tracking)
    experiment_id = client.get_experiment_by_name("two-providers").experiment_id
    runs = client.search_runs([experiment_id], "tags.`promptgrade.kind` = 'candidate'")
    by_provider = {r.data.params["provider"]: r for r in runs}
    assert set(by_provider) == set(NAMES)
    assert by_provider["openai"].data.params["model"] == "qwen2.5-vl-7b"
    assert by_provider["bedrock"].data.params["model"] == "amazon.nova-lite-v1:0"
    for name, run in by_provider.items():
        assert run.data.metrics["category_accuracy"] == (0.0 if name == "openai" else 1.0), name
    assert by_provider["openai"].data.metrics["n_examples"] == N
    assert "cost_usd" not in by_provider["openai"].data.metrics  # no price for the local model: unknown
    for model in ("qwen2.5-vl-7b", "gemini-2.5-flash", "amazon.nova-lite-v1:0", *(s.model for s in served)):
        assert model in result.output


def test_api_key_env_is_only_for_openai(tmp_path: Path) -> None:
    text = EXPERIMENT.format(root=ROOT, gemini="http://127.0.0.1:9", openai="http://127.0.0.1:9/v1", n=N)
    path = tmp_path / "exp.yaml"
    path.write_text(
        text.replace("  - model: gemini-2.5-flash\n", "  - model: gemini-2.5-flash\n    api_key_env: X\n")
    )
    result = RUNNER.invoke(app, ["sweep", str(path), "--dry-run"])
    assert result.exit_code == 2
    assert "api_key_env is for provider: openai" in " ".join(result.output.split())


def test_an_openai_candidate_is_promoted_into_a_bundle_that_names_its_provider(
    tmp_path: Path,
    tracking: str,
    gemini_server: FakeGemini,
    fake_api_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeOpenAI(default_answer='{"categories": ["soup"], "food_remaining_pct": 10}') as openai_server:
        path = tmp_path / "exp.yaml"
        text = EXPERIMENT.format(root=ROOT, gemini=gemini_server.base_url, openai=openai_server.base_url, n=N)
        path.write_text(text.replace("  - model: gemini-2.5-flash\n", ""), encoding="utf-8")
        assert RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", tracking]).exit_code == 0
        base_url = openai_server.base_url
    bundle = tmp_path / "bundle"
    result = RUNNER.invoke(
        app,
        [
            "promote",
            "-e",
            "two-providers",
            "--min-examples",
            "1",
            "--bundle-dir",
            str(bundle),
            "--tracking-uri",
            tracking,
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["provider"] == "openai" and manifest["model"] == "qwen2.5-vl-7b"
    assert manifest["base_url"] == base_url  # provenance; the function's PROMPTGRADE_OPENAI_BASE_URL wins


def test_a_mistyped_bedrock_model_stops_its_own_candidates_and_the_others_finish(
    tmp_path: Path,
    tracking: str,
    gemini_server: FakeGemini,
    fake_api_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from promptgrade.testing.bedrock_server import ConverseFault

    dummy_aws_credentials(monkeypatch)
    gemini_server.default_answer = '{"categories": ["soup"], "food_remaining_pct": 10}'
    with FakeBedrock() as bedrock_server:
        bedrock_server.enqueue_fault(
            ConverseFault.exception("ValidationException", 400, "The provided model identifier is invalid."),
            times=1000,
        )
        text = EXPERIMENT.format(root=ROOT, gemini=gemini_server.base_url, openai="unused", n=N)
        text = text.replace("  - provider: openai\n    model: qwen2.5-vl-7b\n    base_url: unused\n", "")
        bedrock = BEDROCK.format(bedrock=bedrock_server.endpoint_url).replace(
            "amazon.nova-lite-v1:0", "amazon.nova-lyte-v1:0"
        )
        # the failing model first: the sweep must go on to the next model after it stops
        text = text.replace("models:\n", "models:\n" + bedrock)
        text = text.replace("concurrency: 4\n", "concurrency: 1\nmax_consecutive_failures: 2\n")
        path = tmp_path / "exp.yaml"
        path.write_text(text, encoding="utf-8")
        result = RUNNER.invoke(app, ["sweep", str(path), "--tracking-uri", tracking])
        bedrock_calls = bedrock_server.calls
    assert result.exit_code == 3, result.output  # stopped, resumable
    line = " ".join(result.output.split())
    assert "amazon.nova-lyte-v1:0 keeps failing" in line and "ValidationException" in line
    assert "the other models' candidates finished" in line
    assert bedrock_calls == 2  # stopped after two failures in a row, not after every example
    client = MlflowClient(tracking_uri=tracking)
    runs = client.search_runs(
        [client.get_experiment_by_name("two-providers").experiment_id],
        "tags.`promptgrade.kind` = 'candidate'",
    )
    gemini_run = next(r for r in runs if r.data.params["provider"] == "gemini")
    assert gemini_run.info.status == "FINISHED" and gemini_run.data.metrics["n_examples"] == N
