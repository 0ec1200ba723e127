"""The grading function as if deployed, in this process: moto for AWS, the bundle on disk, the key in
Secrets Manager, the model at a local server. Shared by the Lambda's tests and the production tests
(which drive the function through its queue)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer

from helpers.lambda_events import API_KEY, SECRET_ID
from promptgrade.testing.gemini_server import FakeGemini

# what a developer's shell may set that would redirect or re-configure the function under test
FUNCTION_VARIABLES = (
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_GEMINI_BASE_URL",
    "PROMPTGRADE_API_KEY_PARAMETER",
    "PROMPTGRADE_OUTPUT_BUCKET",
    "PROMPTGRADE_OUTPUT_PREFIX",
    "PROMPTGRADE_MAX_IMAGE_BYTES",
    "PROMPTGRADE_MODEL_TIMEOUT_S",
    "PROMPTGRADE_FETCH_TIMEOUT_S",
)


@contextlib.contextmanager
def fake_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto in-process, with fake credentials so no developer profile is ever used."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_LAMBDA_RUNTIME_API"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with mock_aws():
        yield


def deploy_locally(monkeypatch: pytest.MonkeyPatch, bundle_dir: Path, gemini: FakeGemini) -> FakeGemini:
    """The function's environment (inside ``fake_aws``): bundle, key in Secrets Manager, model endpoint."""
    for name in FUNCTION_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    boto3.client("secretsmanager").create_secret(Name=SECRET_ID, SecretString=API_KEY)
    monkeypatch.setenv("PROMPTGRADE_API_KEY_SECRET_ID", SECRET_ID)
    monkeypatch.setenv("PROMPTGRADE_BUNDLE_DIR", str(bundle_dir))
    monkeypatch.setenv("PROMPTGRADE_GEMINI_BASE_URL", gemini.base_url)
    return gemini


@contextlib.contextmanager
def moto_endpoint() -> Iterator[str]:
    """A real HTTP moto endpoint, as boto3 in another process (an unzipped Lambda, a second
    instance of the function) can reach it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
