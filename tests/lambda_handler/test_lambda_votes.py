"""Given a bundle promoted with ``samples: 3``, when the function grades a tray, then it asks the model
three times at once, reduces the answers with the sweep's vote, and says how far they agreed and
whether a person should look (``agreement``, ``needs_review``); a sample that fails does not vote, a
tray none of whose samples answered fails as one failed call does, and a bundle without samples asks
once and answers as it always did.

The local Gemini server scripts each tray's answers by order of arrival, so the vote, the agreement and
the summed usage below are computed by hand.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers.bundles import promoted_bundle, released_prompt
from helpers.lambda_events import MODEL, b64, body_json, context, http_api_v2, make_jpeg
from lambda_handler import app
from promptgrade.bundle import MANIFEST, load_bundle
from promptgrade.images import prepare_image
from promptgrade.providers.base import GenerationSettings
from promptgrade.testing.gemini_server import FakeGemini, Fault, RequestInfo

LATENCY_S = 0.4  # each answer's: three calls one after another would span at least twice this


def answer(categories: list[str], grade: float) -> str:
    return json.dumps({"categories": categories, "food_remaining_pct": grade})


# three different answers: two name soup first (with the same categories, so whichever of them is the
# earliest sample gives the same voted categories), one bread; the median grade is the bread answer's
THREE_WAYS = [answer(["soup", "bread"], 20), answer(["soup", "bread"], 90), answer(["bread"], 50)]
UNPARSEABLE = "I cannot tell from this photo."


def by_arrival(scripts: dict[str, list[str]]) -> Callable[[RequestInfo], str]:
    """The server's answer: the n-th answered request for a tray (by its sha256) gets its n-th answer."""
    arrivals: Counter[str] = Counter()
    lock = threading.Lock()  # the server answers each request on its own thread

    def reply(request: RequestInfo) -> str:
        sha = request.image_sha256 or ""
        with lock:
            index = arrivals[sha]
            arrivals[sha] += 1
        return scripts[sha][index]

    return reply


@pytest.fixture
def vote_settings() -> tuple[int, float | None]:
    """(samples, abstain_below) the bundle was promoted with; a test may parametrize it."""
    return 3, 0.7


@pytest.fixture
def bundle_dir(tmp_path: Path, vote_settings: tuple[int, float | None]) -> Path:
    """A bundle as `promote` writes it for a candidate swept with samples (overrides conftest's)."""
    samples, abstain_below = vote_settings
    settings = GenerationSettings(structured_output=True, temperature=0.7)
    return promoted_bundle(
        tmp_path / "bundle",
        released_prompt(),
        settings=settings,
        samples=samples,
        abstain_below=abstain_below,
    )


def grade(tray: bytes) -> dict[str, object]:
    return app.handler(http_api_v2({"image_base64": b64(tray), "id": "tray-17"}), context())


@pytest.mark.parametrize(
    ("vote_settings", "needs_review"),
    [((3, 0.7), True), ((3, 0.6), False), ((3, None), False)],
    ids=["agreement-below-threshold", "agreement-at-or-above", "no-abstention"],
)
def test_three_samples_are_asked_at_once_and_voted_as_the_sweep_votes(
    lambda_env: FakeGemini, tray_jpeg: bytes, needs_review: bool
) -> None:
    sha = prepare_image(tray_jpeg).sha256
    lambda_env.default_answer = by_arrival({sha: THREE_WAYS})
    lambda_env.latency_s = LATENCY_S

    response = grade(tray_jpeg)

    assert response["statusCode"] == 200, response["body"]
    result = body_json(response)
    prompt = app.runtime().bundle.manifest.prompt
    assert {k: v for k, v in result.items() if k not in ("timing_ms", "usage")} == {
        "id": "tray-17",
        "categories": ["soup", "bread"],  # soup first twice, bread once
        "food_remaining_pct": 50,  # the median of 20, 90 and 50
        "agreement": 2 / 3,
        "needs_review": needs_review,  # 2/3 < 0.7; 2/3 ≥ 0.6; no threshold: never
        "prompt": {"name": prompt.name, "version": prompt.version, "sha256": prompt.sha256},
        "model": MODEL,
    }
    requests = lambda_env.requests
    assert len(requests) == 3  # the k calls reached the model
    assert len({r.body for r in requests}) == 1  # the very same request, k times
    arrived = [r.received_at for r in requests]
    assert max(arrived) - min(arrived) < LATENCY_S  # all three were out before the first answered
    billed = lambda_env.usage
    assert result["usage"] == {
        "input_tokens": sum(u.input_tokens for u in billed),
        "output_tokens": sum(u.output_tokens for u in billed),
    }
    assert LATENCY_S * 1000 <= result["timing_ms"]["model"] < 2 * LATENCY_S * 1000  # the slowest sample


def test_a_failed_sample_does_not_vote_and_the_others_answer(
    lambda_env: FakeGemini, tray_jpeg: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    sha = prepare_image(tray_jpeg).sha256
    lambda_env.enqueue_fault(Fault.server_error())  # whichever sample arrives first
    lambda_env.default_answer = by_arrival({sha: [answer(["soup"], 20), answer(["soup"], 90)]})

    response = grade(tray_jpeg)

    assert response["statusCode"] == 200, response["body"]
    result = body_json(response)
    assert (result["categories"], result["food_remaining_pct"]) == (["soup"], 55)
    assert (result["agreement"], result["needs_review"]) == (1.0, False)  # both answers agree
    assert lambda_env.calls == 3
    billed = lambda_env.usage
    assert len(billed) == 2  # the failed call billed nothing
    assert result["usage"]["input_tokens"] == sum(u.input_tokens for u in billed)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    logged = next(line for line in lines if line["message"] == "graded")
    assert {k: logged[k] for k in ("samples", "answered", "agreement", "needs_review")} == {
        "samples": 3,
        "answered": 2,
        "agreement": 1.0,
        "needs_review": False,
    }


@pytest.mark.parametrize(
    ("faults", "answers", "status", "code", "retry_after"),
    [
        ([Fault.rate_limited("7s")] * 3, [], 503, "model_rate_limited", "7"),
        ([], [UNPARSEABLE] * 3, 502, "unparseable_answer", None),
        # the last to arrive is rate limited (a zero-second hang answers as usual), most likely not the
        # first sample: a retry may cure it, so that is what the caller (and S3's retries) is told
        ([Fault.hang(0)] * 2 + [Fault.rate_limited("7s")], [UNPARSEABLE] * 2, 503, "model_rate_limited", "7"),
    ],
    ids=["all-rate-limited", "all-unparseable", "unparseable-and-rate-limited"],
)
def test_a_tray_none_of_whose_samples_answered_fails_as_one_failed_call(
    lambda_env: FakeGemini,
    tray_jpeg: bytes,
    faults: list[Fault],
    answers: list[str],
    status: int,
    code: str,
    retry_after: str | None,
) -> None:
    for fault in faults:
        lambda_env.enqueue_fault(fault)
    lambda_env.default_answer = by_arrival({prepare_image(tray_jpeg).sha256: answers})

    response = grade(tray_jpeg)

    assert response["statusCode"] == status, response["body"]
    assert set(body_json(response)) == {"error"}  # no categories, no grade, no agreement
    assert body_json(response)["error"]["code"] == code
    assert response["headers"].get("retry-after") == retry_after
    assert lambda_env.calls == 3


def test_a_batch_votes_each_tray_on_its_own_samples(lambda_env: FakeGemini) -> None:
    trays = {"a": make_jpeg((200, 120, 40)), "b": make_jpeg((40, 90, 200))}
    shas = {name: prepare_image(data).sha256 for name, data in trays.items()}
    lambda_env.default_answer = by_arrival(
        {
            shas["a"]: THREE_WAYS,
            shas["b"]: [answer(["curry"], 60), answer(["curry"], 70), answer(["curry"], 80)],
        }
    )

    response = app.handler(
        {"images": [{"id": name, "image_base64": b64(data)} for name, data in trays.items()]}, context()
    )

    votes = [
        (r["id"], r["categories"], r["food_remaining_pct"], r["agreement"], r["needs_review"])
        for r in response["results"]
    ]
    assert votes == [("a", ["soup", "bread"], 50, 2 / 3, True), ("b", ["curry"], 70, 1.0, False)]
    assert lambda_env.images_sent() == Counter({shas["a"]: 3, shas["b"]: 3})


def test_a_bundle_promoted_before_samples_asks_once_and_answers_as_before(
    lambda_env: FakeGemini, bundle_dir: Path, tray_jpeg: bytes
) -> None:
    manifest = json.loads((bundle_dir / MANIFEST).read_text(encoding="utf-8"))
    for name in ("samples", "abstain_below"):
        del manifest[name]
    manifest["format_version"] = 2
    (bundle_dir / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    assert load_bundle(bundle_dir).manifest.samples == 1
    lambda_env.answer_for_image(prepare_image(tray_jpeg).sha256, THREE_WAYS[0])

    response = grade(tray_jpeg)

    assert response["statusCode"] == 200, response["body"]
    assert lambda_env.calls == 1
    assert set(body_json(response)) == {
        "id",
        "categories",
        "food_remaining_pct",
        "prompt",
        "model",
        "timing_ms",
        "usage",
    }
