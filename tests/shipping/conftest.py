"""Fixtures for shipping: a real promoted bundle and the real Lambda zip (built once); the moto
server is the suite's (tests/conftest.py).

The zip is built from PyPI wheels once per session, with uv's cache kept in pytest's cache folder,
because that download is the slow part and every package test reads the same zip. Every test that
uses the zip or the wheel cache reaches the package index, so it is marked ``needs_index`` here.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import urllib3

from helpers.checkout import copy_project
from helpers.shared import once_per_run
from promptgrade.bundle import Manifest, PromptInfo, Provenance, write_bundle
from promptgrade.prompts import PromptLibrary, PromptVersion
from promptgrade.shipping.package import PackageReport, build_package
from promptgrade.task import load_task

ROOT = Path(__file__).resolve().parents[2]
MODEL = "gemini-2.5-flash"
REGION = "us-east-1"
# The machine's runtime and architecture, so the built zip can be imported by this very interpreter.
RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"
ARCHITECTURE = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}[
    platform.machine().lower()
]
# Fixtures that install wheels from the package index: a test using one is marked needs_index.
INDEX_FIXTURES = frozenset({"lambda_zip", "wheel_cache"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INDEX_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.needs_index)


def promoted_prompt() -> PromptVersion:
    return PromptLibrary(ROOT / "prompts").get("meal_tray_json", 1)


def make_bundle(directory: Path) -> Path:
    """A bundle exactly as `promote` writes it: the released meal-tray prompt and its task."""
    prompt = promoted_prompt()
    manifest = Manifest(
        prompt=PromptInfo(name=prompt.name, version=prompt.version, sha256=prompt.sha256),
        model=MODEL,
        task=load_task(ROOT / "experiments" / "tasks" / "meal_tray.yaml"),
        provenance=Provenance(run_id="test-run", experiment="meal_tray", metrics={"grade_accuracy": 0.8}),
    )
    return write_bundle(directory, prompt, manifest)


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(name="make_bundle", scope="session")
def make_bundle_fixture() -> Callable[[Path], Path]:
    """``make_bundle(folder)``: a fresh promoted bundle a test may edit."""
    return make_bundle


@pytest.fixture(scope="session")
def target() -> tuple[str, str]:
    """(runtime, architecture) of this machine, so a zip built for it can be imported here."""
    return RUNTIME, ARCHITECTURE


@pytest.fixture(scope="session")
def wheel_cache(request: pytest.FixtureRequest) -> Path:
    return request.config.cache.mkdir("promptgrade-wheel-cache")


@pytest.fixture(scope="session")
def project_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The handler and promptgrade as they are when the session starts: the builds compared for
    determinism must see the same sources even while someone edits the working tree."""
    return copy_project(tmp_path_factory.mktemp("project"))


@dataclass(frozen=True)
class BuiltZip:
    report: PackageReport
    seconds: float


@pytest.fixture(scope="session")
def lambda_zip(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    bundle_dir: Path,
    wheel_cache: Path,
    project_snapshot: Path,
) -> BuiltZip:

    def build(folder: Path) -> tuple[PackageReport, float]:  # not a BuiltZip: a conftest's class won't pickle
        started = time.perf_counter()
        folder.mkdir(exist_ok=True)
        report = build_package(
            bundle_dir,
            folder / "promptgrade-lambda.zip",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            project_root=project_snapshot,
            cache_dir=wheel_cache,
            quiet=True,
        )
        return report, time.perf_counter() - started

    # test_package.py's and test_bytecode.py's: one build, whichever workers run them
    report, seconds = once_per_run(tmp_path_factory, "lambda-zip", build)
    built = BuiltZip(report, seconds)
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n[lambda zip] {report.summary()} — built in {built.seconds:.1f} s")
    return built


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials, so nothing here can ever reach a real AWS account."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")


# -- a moto account per test, for deploy -------------------------------------------------------------
@pytest.fixture
def aws(moto_server: str, aws_env: None) -> Iterator[Callable[[str], Any]]:
    """A clean moto account per test, and a factory of boto3 clients pointed at it."""
    urllib3.PoolManager().request("POST", f"{moto_server}/moto-api/reset")

    def client(service: str) -> Any:
        return boto3.client(service, region_name=REGION, endpoint_url=moto_server)

    yield client


@pytest.fixture
def role_arn(aws: Callable[[str], Any]) -> str:
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    return aws("iam").create_role(RoleName="promptgrade-lambda", AssumeRolePolicyDocument=json.dumps(trust))[
        "Role"
    ]["Arn"]
