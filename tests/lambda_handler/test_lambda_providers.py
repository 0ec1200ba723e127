"""The function grades with whichever provider the promoted bundle names: Bedrock with only the IAM
role's credentials (no API-key secret), an OpenAI-compatible server, and — in a fresh interpreter —
a Bedrock bundle never imports google-genai. Each real client talks to its local server."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.lambda_events import b64, body_json, context, http_api_v2, make_jpeg
from lambda_handler import app
from promptgrade.bundle import Manifest, PromptInfo, write_bundle
from promptgrade.images import prepare_image
from promptgrade.prompts import PromptLibrary
from promptgrade.providers.base import GenerationSettings
from promptgrade.providers.records import NAMES, RECORDS
from promptgrade.shipping.package import RUNTIME_PROVIDED
from promptgrade.task import load_task
from promptgrade.testing.bedrock_server import FakeBedrock
from promptgrade.testing.openai_server import FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]
ANSWER = '{"categories": ["soup", "bread"], "food_remaining_pct": 40}'
BEDROCK_MODEL = "us.anthropic.claude-sonnet-4-20250514-v1:0"


def bundle_for(tmp_path: Path, provider: str, model: str, **endpoint: str) -> Path:
    prompt = PromptLibrary(ROOT / "prompts").get("meal_tray_json", 1)
    manifest = Manifest(
        prompt=PromptInfo(name=prompt.name, version=prompt.version, sha256=prompt.sha256),
        provider=provider,
        model=model,
        settings=GenerationSettings(structured_output=True, temperature=0.0),
        task=load_task(ROOT / "experiments" / "tasks" / "meal_tray.yaml"),
        **endpoint,
    )
    return write_bundle(tmp_path / f"bundle-{provider}", prompt, manifest)


@pytest.fixture
def no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PROMPTGRADE_API_KEY_SECRET_ID", "PROMPTGRADE_API_KEY_PARAMETER", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def role_credentials(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """What a Lambda's execution role provides: credentials and a region in the environment."""
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "ASIATESTING"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_SESSION_TOKEN", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_CONFIG_FILE", "/nonexistent"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
    ):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    yield


def test_a_bedrock_bundle_grades_with_the_role_and_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_secret: None, role_credentials: None
) -> None:
    with FakeBedrock(default_answer=ANSWER) as bedrock:
        monkeypatch.setenv(
            "PROMPTGRADE_BUNDLE_DIR", str(bundle_for(tmp_path, "bedrock", BEDROCK_MODEL, region="us-east-1"))
        )
        monkeypatch.setenv("PROMPTGRADE_BEDROCK_ENDPOINT_URL", bedrock.endpoint_url)
        tray = make_jpeg((200, 120, 40))
        response = app.handler(http_api_v2({"image_base64": b64(tray), "id": "tray-1"}), context())
        assert response["statusCode"] == 200, response
        result = body_json(response)
        assert result["categories"] == ["soup", "bread"] and result["food_remaining_pct"] == 40
        assert result["model"] == BEDROCK_MODEL
        [sent] = bedrock.requests
        assert sent.model_id == BEDROCK_MODEL and sent.tool_config is not None  # structured, as measured
        assert sent.image_sha256 == prepare_image(tray).sha256
        assert (sent.authorization or "").startswith("AWS4-HMAC-SHA256")


def test_an_openai_compatible_bundle_grades_against_its_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_secret: None
) -> None:
    with FakeOpenAI(default_answer=ANSWER) as server:
        monkeypatch.setenv("PROMPTGRADE_BUNDLE_DIR", str(bundle_for(tmp_path, "openai", "qwen2.5-vl-7b")))
        monkeypatch.setenv("PROMPTGRADE_OPENAI_BASE_URL", server.base_url)
        response = app.handler(http_api_v2({"image_base64": b64(make_jpeg((90, 160, 40)))}), context())
        assert response["statusCode"] == 200, response
        assert body_json(response)["categories"] == ["soup", "bread"]
        [sent] = server.requests
        assert sent.model == "qwen2.5-vl-7b" and sent.response_format is not None


def test_a_bundle_of_an_unknown_provider_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_secret: None
) -> None:
    monkeypatch.setenv("PROMPTGRADE_BUNDLE_DIR", str(bundle_for(tmp_path, "watsonx", "granite-vision")))
    response = app.handler(http_api_v2({"image_base64": b64(make_jpeg((1, 2, 3)))}), context())
    assert response["statusCode"] == 500
    assert body_json(response)["error"]["code"] == "config_error"
    assert "watsonx" in body_json(response)["error"]["message"]


PROBE = """
import json, sys
import lambda_handler.app
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def sdks(provider: str) -> tuple[set[str], set[str]]:
    """The bundle's SDK, and the others' that its Lambda must never import (boto3 is the runtime's;
    two providers may share an SDK, as OpenAI-compatible ones do)."""
    [own] = [r.sdk for r in RECORDS if r.name == provider]
    others = {r.sdk for r in RECORDS} - {own} - RUNTIME_PROVIDED
    return {own}, others


@pytest.mark.parametrize("provider", NAMES)
def test_the_handler_imports_only_the_bundles_provider(tmp_path: Path, provider: str) -> None:
    present, absent = sdks(provider)
    bundle = bundle_for(tmp_path, provider, "some-model")
    completed = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PROMPTGRADE_BUNDLE_DIR": str(bundle)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    loaded = set(json.loads(completed.stdout.strip().splitlines()[-1]))
    assert present <= loaded, "the bundle's provider is imported in the init phase"
    assert not loaded & absent, f"another provider's SDK was imported: {sorted(loaded & absent)}"


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("throttled", 503, "model_rate_limited"),
        ("access_denied", 502, "model_auth_failed"),
        ("timeout", 504, "model_timeout"),
    ],
)
def test_bedrock_failures_get_the_same_status_codes_as_gemini_failures(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_secret: None,
    role_credentials: None,
    fault: str,
    status: int,
    code: str,
) -> None:
    from promptgrade.testing.bedrock_server import ConverseFault

    faults = {
        "throttled": ConverseFault.throttled(),
        "access_denied": ConverseFault.exception("AccessDeniedException", 403, "no access to the model"),
        "timeout": ConverseFault.exception("ModelTimeoutException", 408, "the model took too long"),
    }
    with FakeBedrock(default_answer=ANSWER) as bedrock:
        bedrock.enqueue_fault(faults[fault], times=10)
        monkeypatch.setenv("PROMPTGRADE_BUNDLE_DIR", str(bundle_for(tmp_path, "bedrock", BEDROCK_MODEL)))
        monkeypatch.setenv("PROMPTGRADE_BEDROCK_ENDPOINT_URL", bedrock.endpoint_url)
        response = app.handler(http_api_v2({"image_base64": b64(make_jpeg((5, 6, 7)))}), context())
    assert response["statusCode"] == status, response
    assert body_json(response)["error"]["code"] == code
