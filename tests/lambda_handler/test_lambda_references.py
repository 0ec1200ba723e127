"""Given a bundle whose prompt shows graded reference trays, when the function grades a tray, then the
model receives the prompt's parts in order — text, each reference image, the tray — and a bundle whose
reference image is missing or altered is 500 ``config_error`` before any call to the model.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
from pathlib import Path

import pytest

from helpers.lambda_events import MODEL, b64, body_json, context, http_api_v2
from lambda_handler import app
from promptgrade.bundle import Bundle, Manifest, PromptInfo, load_bundle, write_bundle
from promptgrade.images import prepare_image
from promptgrade.prompts import PromptLibrary
from promptgrade.providers.base import GenerationSettings, TextPart
from promptgrade.references import Reference
from promptgrade.task import load_task
from promptgrade.testing.gemini_server import FakeGemini

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"
REFERENCE_IDS = ("tray-0001", "tray-0002", "tray-0003")  # train trays of the sample set
TRAY = "tray-0004"
MAX_SIDE = 256
ANSWER = '{"categories": ["soup"], "food_remaining_pct": 40}'


def sample_reference(example_id: str) -> Reference:
    with (SAMPLE / "labels.csv").open(encoding="utf-8") as rows:
        row = next(r for r in csv.DictReader(rows) if r["id"] == example_id)
    return Reference(
        id=example_id,
        categories=tuple(row["categories"].split(";")),
        grade=float(row["food_remaining_pct"]),
        image=prepare_image((SAMPLE / row["file"]).read_bytes(), max_side=MAX_SIDE),
        source=f"train:{example_id}",
    )


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    """A bundle as `promote` writes it for a prompt with three reference trays (overrides conftest's)."""
    prompt = PromptLibrary(ROOT / "prompts").get("meal_tray_anchors", 2)
    prompt = prompt.with_references(tuple(sample_reference(i) for i in REFERENCE_IDS))
    manifest = Manifest(
        prompt=PromptInfo(name=prompt.name, version=prompt.version, sha256=prompt.sha256),
        model=MODEL,
        settings=GenerationSettings(structured_output=True, temperature=0.0),
        task=load_task(ROOT / "experiments" / "tasks" / "meal_tray.yaml"),
        image_max_side=MAX_SIDE,
    )
    return write_bundle(tmp_path / "bundle", prompt, manifest)


def sent_parts(body: bytes) -> list[str]:
    """The request's parts in order: text as itself, an image as ``image:<sha256>``."""
    found = []
    for part in json.loads(body)["contents"][0]["parts"]:
        if "text" in part:
            found.append(part["text"])
        else:  # the SDK's URL-safe base64, unpadded
            data = part["inlineData"]["data"]
            image = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
            found.append(f"image:{hashlib.sha256(image).hexdigest()}")
    return found


def test_the_function_sends_the_references_and_the_tray_in_the_prompts_order(
    lambda_env: FakeGemini, bundle_dir: Path
) -> None:
    bundle: Bundle = load_bundle(bundle_dir)
    tray = (SAMPLE / "images" / f"{TRAY}.jpg").read_bytes()
    prepared = prepare_image(tray, max_side=MAX_SIDE)
    lambda_env.default_answer = ANSWER

    response = app.handler(http_api_v2({"image_base64": b64(tray), "id": TRAY}), context())

    assert response["statusCode"] == 200, response["body"]
    assert body_json(response)["food_remaining_pct"] == 40
    (request,) = lambda_env.requests
    references = [r.image.sha256 for r in bundle.prompt.references]
    assert list(request.image_sha256s) == [*references, prepared.sha256]  # k references, then the tray
    expected = [
        part.text if isinstance(part, TextPart) else f"image:{part.sha256}"
        for part in bundle.render().request_parts(prepared)
    ]
    assert sent_parts(request.body) == expected
    assert "Reference 1: soup; sandwich, food_remaining_pct = 100" in expected[0]


def test_a_warm_container_reads_the_reference_images_once(
    lambda_env: FakeGemini, bundle_dir: Path, tray_jpeg: bytes
) -> None:
    lambda_env.default_answer = ANSWER
    app.handler(http_api_v2({"image_base64": b64(tray_jpeg)}), context())
    for path in (bundle_dir / "references").iterdir():
        path.unlink()  # gone from disk: the container already holds the verified bytes

    response = app.handler(http_api_v2({"image_base64": b64(tray_jpeg)}), context())

    assert response["statusCode"] == 200
    assert [len(r.image_sha256s) for r in lambda_env.requests] == [len(REFERENCE_IDS) + 1] * 2


@pytest.mark.parametrize("change", ["altered", "missing"])
def test_a_bundle_whose_reference_image_changed_is_500_config_error_before_any_call(
    lambda_env: FakeGemini, bundle_dir: Path, tray_jpeg: bytes, change: str
) -> None:
    entry = load_bundle(bundle_dir).manifest.references[1]
    path = bundle_dir / "references" / entry.file
    if change == "altered":
        path.write_bytes(
            prepare_image(tray_jpeg, max_side=MAX_SIDE).data
        )  # a valid image, not the measured one
    else:
        path.unlink()

    response = app.handler(http_api_v2({"image_base64": b64(tray_jpeg)}), context())

    assert response["statusCode"] == 500
    error = body_json(response)["error"]
    assert error["code"] == "config_error"
    assert f"reference image of {entry.id}" in error["message"] and entry.file in error["message"]
    assert "edited after promotion" in error["message"]
    assert lambda_env.calls == 0
