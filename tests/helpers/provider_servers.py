"""Each provider's local server, started, scripted and reachable: the one setup every provider test uses.

``serve(*names, monkeypatch=…)`` starts the stand-in of one provider record (``promptgrade/testing``) and
sets the environment its real SDK client needs (a dummy key or dummy AWS credentials, and nothing of
the developer's), and the ``served`` fixture (tests/conftest.py) does so for every record in turn. So
a behaviour test written once — an answer per image, a 5xx, a 429 — runs against every provider
through its real client. A provider without a stand-in here fails ``test_every_provider_has_a_stand_in``.
A new provider is one ``STAND_INS`` entry and one ``MODELS`` entry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from helpers import ROOT
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


def use_fake_gemini_key(env: pytest.MonkeyPatch) -> str:
    """A dummy GEMINI_API_KEY, with every variable that could redirect or re-authenticate the SDK removed:
    a developer's real key or GOOGLE_GEMINI_BASE_URL never reaches a test."""
    for name in ("GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GEMINI_BASE_URL"):
        env.delenv(name, raising=False)
    env.setenv("GEMINI_API_KEY", FAKE_API_KEY)
    return FAKE_API_KEY


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


@dataclass(frozen=True)
class StandIn:
    """How to serve one provider: its local server, its endpoint, its faults, its client's environment."""

    server: Callable[[], ScriptedAPI[Any, Any]]
    endpoint: Callable[[Any], str]
    faults: dict[FaultName, Any]
    env: dict[str, str] = field(default_factory=dict)
    unset: tuple[str, ...] = ()  # the developer's settings that would redirect or authenticate the client
    spec_fields: dict[str, Any] = field(default_factory=dict)


# Dummy credentials for boto3 (the local Converse server does not check the signature).
AWS_DUMMY = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
}

STAND_INS: dict[str, StandIn] = {
    "gemini": StandIn(
        FakeGemini,
        lambda server: server.base_url,
        {"server_error": Fault.server_error(503), "rate_limited": Fault.rate_limited(retry_delay="2s")},
        env={"GEMINI_API_KEY": FAKE_API_KEY},
        unset=("GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GEMINI_BASE_URL"),
    ),
    "bedrock": StandIn(
        FakeBedrock,
        lambda server: server.endpoint_url,
        {
            "server_error": ConverseFault.exception("ServiceUnavailableException", 503),
            "rate_limited": ConverseFault.throttled(),
        },
        env=AWS_DUMMY,
        unset=("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME"),
        spec_fields={"region": "eu-west-1"},
    ),
    "openai": StandIn(
        FakeOpenAI,
        lambda server: server.base_url,
        {"server_error": ChatFault.http_error(503), "rate_limited": ChatFault.rate_limited("2")},
        unset=("OPENAI_API_KEY", "OPENAI_BASE_URL"),  # a local server needs no key
    ),
}


def dummy_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in AWS_DUMMY.items():
        monkeypatch.setenv(name, value)


@contextlib.contextmanager
def serve(*names: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ServedProvider]]:
    """The named providers' servers, started for the block, with the environment their clients need."""
    with contextlib.ExitStack() as stack:
        served = []
        for name in names:
            stand_in = STAND_INS[name]
            for variable in stand_in.unset:
                monkeypatch.delenv(variable, raising=False)
            for variable, value in stand_in.env.items():
                monkeypatch.setenv(variable, value)
            server = stack.enter_context(stand_in.server())
            record = find(name)
            assert record is not None, f"no provider record named {name}"
            served.append(
                ServedProvider(
                    record,
                    server,
                    MODELS[name],
                    stand_in.endpoint(server),
                    stand_in.faults,
                    stand_in.spec_fields,
                )
            )
        yield served


EXPERIMENT = """\
name: {name}
task: {root}/experiments/tasks/meal_tray.yaml
prompts_dir: {root}/prompts
prices: {root}/experiments/prices.yaml
dataset: {{kind: folder, path: {root}/data/sample, split: test, limit: {n}, image_max_side: {side}}}
prompts: [meal_tray_json@1]
models:
{models}{extra}"""


def write_experiment(
    path: Path, served: list[ServedProvider], *, name: str, n: int, side: int = 128, extra: str = ""
) -> Path:
    """An experiment file sweeping the JSON prompt with every served model on ``n`` sample trays."""
    models = "".join(provider.experiment_entry() for provider in served)
    text = EXPERIMENT.format(name=name, root=ROOT, n=n, side=side, models=models, extra=extra)
    path.write_text(text, encoding="utf-8")
    return path
