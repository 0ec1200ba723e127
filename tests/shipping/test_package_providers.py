"""A bundle of any provider packages into a zip that holds only that provider, and the zip grades.

Given a promoted Bedrock (or OpenAI-compatible) bundle, when I package it, then the zip has that
provider's code and lock and nothing of the others (a Bedrock zip: no google-genai at all), and a
fresh interpreter that sees only the unzipped package and the runtime's boto3 grades an API Gateway
event through the real client against the local server. These build zips from PyPI wheels, like the
other packaging tests (marked needs_index).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers.provider_servers import MODELS, serve
from promptgrade.bundle import Manifest, PromptInfo, write_bundle
from promptgrade.prompts import PromptLibrary
from promptgrade.providers.base import GenerationSettings
from promptgrade.providers.records import RECORDS, Credential
from promptgrade.shipping.package import RUNTIME_PROVIDED, PackageReport, build_package
from promptgrade.task import load_task
from promptgrade.testing.lambda_runtime import runtime_dir as lambda_runtime_dir

ROOT = Path(__file__).resolve().parents[2]
MARK = "RESULT "
ANSWER = '{"categories": ["soup", "bread"], "food_remaining_pct": 40}'
PROVIDER_FILES = {r.name: {f"promptgrade/{module}" for module in r.lambda_modules} for r in RECORDS}
# The Gemini zip, whose key comes from a secret store, is test_package.py's (against a moto server).
WITHOUT_SECRET = [r.name for r in RECORDS if r.credential is not Credential.API_KEY]


def provider_bundle(directory: Path, provider: str) -> Path:
    prompt = PromptLibrary(ROOT / "prompts").get("meal_tray_json", 1)
    manifest = Manifest(
        prompt=PromptInfo(name=prompt.name, version=prompt.version, sha256=prompt.sha256),
        provider=provider,
        model=MODELS[provider],
        settings=GenerationSettings(structured_output=True, temperature=0.0),
        task=load_task(ROOT / "experiments" / "tasks" / "meal_tray.yaml"),
    )
    return write_bundle(directory, prompt, manifest)


@pytest.fixture(scope="session")
def provider_zips(
    tmp_path_factory: pytest.TempPathFactory,
    wheel_cache: Path,
    project_snapshot: Path,
    target: tuple[str, str],
) -> Callable[[str], PackageReport]:
    runtime, architecture = target
    built: dict[str, PackageReport] = {}

    def build(provider: str) -> PackageReport:
        if provider not in built:
            root = tmp_path_factory.mktemp(f"zip-{provider}")
            built[provider] = build_package(
                provider_bundle(root / "bundle", provider),
                root / "promptgrade-lambda.zip",
                runtime=runtime,
                architecture=architecture,  # type: ignore[arg-type]
                project_root=project_snapshot,
                cache_dir=wheel_cache,
                quiet=True,
            )
            print(f"\n[{provider} zip] {built[provider].summary()}")
        return built[provider]

    return build


@pytest.mark.parametrize("provider", WITHOUT_SECRET)
def test_the_zip_holds_only_the_bundles_provider(
    provider: str, provider_zips: Callable[[str], PackageReport]
) -> None:
    report = provider_zips(provider)
    with zipfile.ZipFile(report.path) as archive:
        entries = set(archive.namelist())
    sources = {e for e in entries if e.startswith("promptgrade/providers/") and e.endswith(".py")}
    others = set().union(*(files for name, files in PROVIDER_FILES.items() if name != provider))
    assert PROVIDER_FILES[provider] <= sources and not sources & others
    tops = {e.split("/", 1)[0].lower() for e in entries}
    assert not {t for t in tops if t.startswith(("google", "google_genai"))}, (
        "google-genai in a non-Gemini zip"
    )
    names = {d.lower() for d in report.dependencies}
    assert "google-genai" not in names and "pydantic" in names and "pillow" in names
    assert ("openai" in names) is (provider == "openai")
    assert "boto3" not in names  # the runtime's, even for Bedrock
    [own] = [r.package for r in RECORDS if r.name == provider]
    for record in RECORDS:  # its SDK, unless the runtime has it, and no other provider's
        shipped = record.package in names
        assert shipped is (record.package == own and own not in RUNTIME_PROVIDED), record.name


@pytest.mark.parametrize("provider", WITHOUT_SECRET)
def test_a_fresh_interpreter_grades_an_api_gateway_event_with_the_bundles_provider(
    provider: str,
    provider_zips: Callable[[str], PackageReport],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    report = provider_zips(provider)
    task_dir = tmp_path / "var-task"
    [own] = [r.sdk for r in RECORDS if r.name == provider]
    other_sdks = {r.sdk for r in RECORDS} - {own} - RUNTIME_PROVIDED
    with zipfile.ZipFile(report.path) as archive:
        archive.extractall(task_dir)
    runtime_dir = lambda_runtime_dir(tmp_path)
    event = {
        "version": "2.0",
        "routeKey": "POST /grade",
        "rawPath": "/grade",
        "headers": {"content-type": "application/json"},
        "requestContext": {"http": {"method": "POST", "path": "/grade"}, "requestId": "req-1"},
        "body": json.dumps({"id": "tray-1", "image_base64": _jpeg_b64()}),
        "isBase64Encoded": False,
    }
    script = textwrap.dedent(
        f"""
        import json, sys, sysconfig
        sys.path[:0] = [{str(task_dir)!r}, {str(runtime_dir)!r}]
        import lambda_handler.app as app
        response = app.handler({event!r}, None)
        allowed = ({str(task_dir)!r}, {str(runtime_dir)!r}, sysconfig.get_paths()["stdlib"],
                   sysconfig.get_paths()["platstdlib"])
        outside = sorted(name for name, module in list(sys.modules.items())
                         if getattr(module, "__file__", None) and not module.__file__.startswith(allowed))
        print({MARK!r} + json.dumps({{"response": response, "outside": outside,
              "google": sorted(n for n in sys.modules if n.startswith("google")),
              "sdks": sorted({{n.split(".")[0] for n in sys.modules}} & set({sorted(other_sdks)!r}))}}))
        """
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "AWS_ACCESS_KEY_ID": "ASIATESTING",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_CONFIG_FILE": "/dev/null",
    }
    with serve(provider, monkeypatch=monkeypatch) as (served,):
        served.answer(ANSWER)
        env.update(served.lambda_env)
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", script],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        calls = served.server.calls
    assert done.returncode == 0, done.stderr[-3000:]
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(MARK)), None)
    assert line is not None, done.stdout[-3000:] + done.stderr[-3000:]
    out = json.loads(line.removeprefix(MARK))
    response = out["response"]
    assert response["statusCode"] == 200, response
    body = json.loads(response["body"])
    assert body["categories"] == ["soup", "bread"] and body["food_remaining_pct"] == 40
    assert body["model"] == MODELS[provider]
    assert out["outside"] == [], "modules were loaded from outside the zip and the runtime"
    assert out["google"] == []  # no google-genai (nor google-auth) outside a Gemini zip
    assert out["sdks"] == []  # nor any other provider's SDK
    assert calls == 1


def _jpeg_b64() -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (160, 120), (200, 120, 40)).save(buffer, format="JPEG")
    return base64.b64encode(buffer.getvalue()).decode()
