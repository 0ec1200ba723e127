"""Given any provider, when its real client talks to its local server, then it behaves as every
provider must: an answer per image with its usage, one request per call whatever fails, a 5xx and a
429 as transient errors, which the runner retries until every example is scored; and ``aclose``.

Written once, run for each provider record by the ``served`` fixture (tests/helpers/provider_servers.py).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers.provider_servers import ServedProvider, write_experiment
from helpers.sweeps import run_connected
from promptgrade.providers import Completion, CompletionRequest, ErrorKind, ImageInput, Provider
from promptgrade.sweep import Sweep, provider_for

PROMPT = "Which dishes, and how much is left?"
N = 4


def image(n: int) -> ImageInput:
    return ImageInput(
        data=b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4 + n.to_bytes(4, "big"), mime_type="image/png"
    )


def complete(provider: Provider, *images: ImageInput) -> list[Completion]:
    """Complete concurrently on a fresh event loop, then release what the provider bound to it."""

    async def go() -> list[Completion]:
        try:
            requests = [CompletionRequest(prompt=PROMPT, image=i) for i in images]
            return list(await asyncio.gather(*(provider.complete(r) for r in requests)))
        finally:
            await provider.aclose()

    return asyncio.run(go())


def test_each_image_gets_its_own_answer_with_its_usage(served: ServedProvider) -> None:
    images = [image(n) for n in range(8)]
    for n, img in enumerate(images):
        served.server.answer_for_image(img.sha256, json.dumps({"categories": ["soup"], "grade": n}))
    provider = served.provider()

    completions = complete(provider, *images)

    assert isinstance(provider, Provider) and provider.name == served.name
    assert served.server.calls == len(images)
    for n, completion in enumerate(completions):
        assert completion.error is None, completion.error
        assert json.loads(completion.text or "") == {"categories": ["soup"], "grade": n}
        assert completion.input_tokens > 0 and completion.output_tokens > 0 and completion.latency_ms > 0


@pytest.mark.parametrize(
    ("fault", "kind"), [("server_error", ErrorKind.SERVER_ERROR), ("rate_limited", ErrorKind.RATE_LIMITED)]
)
def test_a_5xx_and_a_429_are_one_request_and_a_transient_error(
    served: ServedProvider, fault: Any, kind: ErrorKind
) -> None:
    served.fail(fault)

    [completion] = complete(served.provider(), image(0))

    assert completion.text is None and completion.error is not None
    assert completion.error.kind is kind and completion.error.transient
    assert served.server.calls == 1, "the SDK must not retry: retries belong to the runner"


def test_a_refused_connection_is_a_transient_connection_error(served: ServedProvider) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = served.endpoint.replace(served.endpoint.split("/")[2], f"127.0.0.1:{port}")

    [completion] = complete(served.provider(base_url=closed, timeout_s=5), image(0))

    assert completion.error is not None and completion.error.kind is ErrorKind.CONNECTION
    assert completion.error.transient


def test_the_labs_endpoint_variable_reaches_the_server(
    served: ServedProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(served.record.lab_endpoint_env, served.endpoint)
    spec = served.spec().model_copy(update={"base_url": None})

    [completion] = complete(provider_for(spec, None), image(0))

    assert completion.error is None and served.server.calls == 1


def test_the_runner_retries_a_5xx_until_every_example_is_scored(
    served: ServedProvider, tmp_path: Path
) -> None:
    retries = "concurrency: 2\nmax_retries: 2\nretry_initial_s: 0.01\nretry_max_s: 0.05\n"
    path = write_experiment(tmp_path / "experiment.yaml", [served], name="every-provider", n=N, extra=retries)
    sweep = Sweep(path)
    truth = {e.image.sha256: e.labels for e in sweep.dataset.examples}
    served.answer(right_answer(truth))
    served.fail("server_error", times=2, image_sha256=sweep.dataset.examples[0].image.sha256)
    sweep.connect()

    [result] = run_connected(sweep)

    assert served.server.calls == N + 2 and result.calls == N + 2
    assert result.metrics["category_accuracy"].value == 1.0  # type: ignore[union-attr]
    assert result.metrics["error_rate"].value == 0.0  # type: ignore[union-attr]


def right_answer(truth: dict[str, Any]) -> Callable[[Any], str]:
    def answer(request: Any) -> str:
        labels = truth[request.image_sha256 or ""]
        return json.dumps({"categories": list(labels.categories), "food_remaining_pct": labels.grade})

    return answer
