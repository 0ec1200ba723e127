"""Each provider's local server, started, scripted and reachable: the one setup every provider test uses.

``serve(*names, monkeypatch=…)`` starts the stand-in of one provider record (``promptgrade/testing``) and
sets the environment its real SDK client needs (a dummy key or dummy AWS credentials, and nothing of
the developer's), and the ``served`` fixture (tests/conftest.py) does so for every record in turn. So
a behaviour test written once — an answer per image, a 5xx, a 429 — runs against every provider
through its real client. A provider without a stand-in here fails ``test_every_provider_has_a_stand_in``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from promptgrade.config import ModelSpec
from promptgrade.providers.base import Provider
from promptgrade.providers.records import ProviderRecord, find
from promptgrade.providers.registry import make_provider
from promptgrade.testing.bedrock_server import ConverseFault, FakeBedrock
from promptgrade.testing.gemini_server import FakeGemini, Fault
from promptgrade.testing.openai_server import ChatFault, FakeOpenAI
from promptgrade.testing.scripted import ScriptedAPI

FAKE_API_KEY = "test-key-not-real"  # the dummy GEMINI_API_KEY (also tests/conftest.py's fake_api_key)
FaultName = Literal["server_error", "rate_limited"]
MODELS = {"gemini": "gemini-2.5-flash", "bedrock": "amazon.nova-lite-v1:0", "openai": "qwen2.5-vl-7b"}


@dataclass
class ServedProvider:
    """One provider's started server and what a model spec needs to reach it."""

    record: ProviderRecord
    server: ScriptedAPI[Any, Any]
    model: str
    endpoint: str  # what the model's ``base_url`` (or the lab's endpoint variable) takes
    faults: dict[FaultName, Any]  # the provider's own wording of each common fault
    spec_fields: dict[str, Any] = field(default_factory=dict)  # e.g. a Bedrock region

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def lambda_env(self) -> dict[str, str]:
        """The deployed function's variables that point the bundle's provider at this server."""
        return {self.record.lambda_settings["base_url"]: self.endpoint}

    def spec(self, **fields: Any) -> ModelSpec:
        return ModelSpec.model_validate(
            {
                "provider": self.name,
                "model": self.model,
                "base_url": self.endpoint,
                **self.spec_fields,
                **fields,
            }
        )

    def experiment_entry(self) -> str:
        """This model as an entry of an experiment file's ``models:`` list."""
        lines = [f"  - provider: {self.name}", f"    model: {self.model}", f"    base_url: {self.endpoint}"]
        lines += [f"    {name}: {value}" for name, value in self.spec_fields.items()]
        return "\n".join(lines) + "\n"

    def provider(self, **overrides: Any) -> Provider:
        """The real provider, built as a sweep builds it, pointed at this server unless overridden."""
        spec = self.spec()
        arguments: dict[str, Any] = {"base_url": spec.base_url, "timeout_s": 10.0, **spec.provider_fields()}
        return make_provider(self.name, self.model, **{**arguments, **overrides})

    def answer(self, answer: str | Callable[[Any], str]) -> None:
        self.server.default_answer = answer

    def fail(self, fault: FaultName, *, times: int = 1, image_sha256: str | None = None) -> None:
        self.server.enqueue_fault(self.faults[fault], times=times, image_sha256=image_sha256)


Setup = Callable[[pytest.MonkeyPatch, contextlib.ExitStack], ServedProvider]


def _gemini(monkeypatch: pytest.MonkeyPatch, stack: contextlib.ExitStack) -> ServedProvider:
    for name in ("GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GEMINI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_API_KEY)
    server = stack.enter_context(FakeGemini())
    return ServedProvider(
        _record("gemini"),
        server,
        MODELS["gemini"],
        server.base_url,
        {"server_error": Fault.server_error(503), "rate_limited": Fault.rate_limited(retry_delay="2s")},
    )


def _bedrock(monkeypatch: pytest.MonkeyPatch, stack: contextlib.ExitStack) -> ServedProvider:
    """Dummy credentials for boto3 (the local Converse server does not check the signature)."""
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_CONFIG_FILE", "/nonexistent"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
    ):
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME"):
        monkeypatch.delenv(name, raising=False)
    server = stack.enter_context(FakeBedrock())
    return ServedProvider(
        _record("bedrock"),
        server,
        MODELS["bedrock"],
        server.endpoint_url,
        {
            "server_error": ConverseFault.exception("ServiceUnavailableException", 503),
            "rate_limited": ConverseFault.throttled(),
        },
        {"region": "eu-west-1"},
    )


def _openai(monkeypatch: pytest.MonkeyPatch, stack: contextlib.ExitStack) -> ServedProvider:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)  # a local server needs no key
    server = stack.enter_context(FakeOpenAI())
    return ServedProvider(
        _record("openai"),
        server,
        MODELS["openai"],
        server.base_url,
        {"server_error": ChatFault.http_error(503), "rate_limited": ChatFault.rate_limited("2")},
    )


STAND_INS: dict[str, Setup] = {"gemini": _gemini, "bedrock": _bedrock, "openai": _openai}


def _record(name: str) -> ProviderRecord:
    record = find(name)
    assert record is not None, f"no provider record named {name}"
    return record


@contextlib.contextmanager
def serve(*names: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ServedProvider]]:
    """The named providers' servers, started for the block, with the environment their clients need."""
    with contextlib.ExitStack() as stack:
        yield [STAND_INS[name](monkeypatch, stack) for name in names]
