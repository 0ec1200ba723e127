"""Given a swept and promoted prompt that shows five reference trays, when I package it and the unzipped
function grades a tray in a fresh interpreter, then the model receives exactly the request the sweep
sent for that tray — the same bytes, reference images included — and a bundle whose reference image
changed is refused by ``package`` before any download. A bundle from before references still loads.
"""

from __future__ import annotations

import base64
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest

from helpers.promoted_references import N_REFERENCES, sweep_and_promote
from promptgrade.bundle import FORMAT_VERSION, MANIFEST, load_bundle
from promptgrade.errors import ConfigError
from promptgrade.shipping.package import PackagingError, build_package
from promptgrade.testing.gemini_server import FakeGemini
from promptgrade.testing.lambda_runtime import MARK, isolated_env, run_isolated

REGION = "us-east-1"
SECRET_ID = "promptgrade/references-gemini-key"
# the unzipped handler answers the event it reads from stdin (run by run_isolated)
GRADE = f"""
import json
import lambda_handler.app as app
print({MARK!r} + json.dumps(app.handler(json.loads(sys.stdin.read()), None)))
"""


def test_the_unzipped_function_sends_the_sweeps_request_byte_for_byte(
    tmp_path: Path,
    gemini_server: FakeGemini,
    fake_api_key: str,
    tracking: str,
    wheel_cache: Path,
    project_snapshot: Path,
    target: tuple[str, str],
    moto_server: str,
    aws_env: None,
    request: pytest.FixtureRequest,
) -> None:
    promoted = sweep_and_promote(tmp_path, gemini_server, tracking)
    bundle = load_bundle(promoted.bundle_dir)
    runtime, architecture = target

    report = build_package(
        promoted.bundle_dir,
        tmp_path / "dist" / "promptgrade-lambda.zip",
        runtime=runtime,
        architecture=architecture,  # type: ignore[arg-type]
        project_root=project_snapshot,
        cache_dir=wheel_cache,
        quiet=True,
    )

    files = bundle.reference_files()
    with zipfile.ZipFile(report.path) as archive:
        shipped = sorted(n for n in archive.namelist() if n.startswith("lambda_handler/bundle/"))
        assert shipped == sorted(
            f"lambda_handler/bundle/{name}" for name in ("manifest.json", "prompt.jinja", *files)
        )
        for name in files:  # the prepared images the sweep sent, byte for byte
            assert archive.read(f"lambda_handler/bundle/{name}") == (promoted.bundle_dir / name).read_bytes()
        archive.extractall(tmp_path / "var-task")
    assert report.references == N_REFERENCES
    each = report.references_zipped_bytes / N_REFERENCES
    assert 0 < each < 40_000  # ~10 KB per 256-px tray: JPEG hardly deflates
    assert f"with {N_REFERENCES} reference image(s)" in report.summary()
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n[references zip] {report.summary()}")

    secrets = boto3.client("secretsmanager", endpoint_url=moto_server)  # dummy credentials: aws_env
    secrets.create_secret(Name=SECRET_ID, SecretString=json.dumps({"api_key": fake_api_key}))
    trays = promoted.examples[:3]
    event = {
        "images": [
            {"id": e.id, "image_base64": base64.b64encode(promoted.tray_file(e).read_bytes()).decode()}
            for e in trays
        ]
    }
    answer = '{"categories": ["soup"], "food_remaining_pct": 40}'
    env = isolated_env(
        tmp_path,
        AWS_DEFAULT_REGION=REGION,
        AWS_ENDPOINT_URL=moto_server,
        PROMPTGRADE_API_KEY_SECRET_ID=SECRET_ID,
    )
    with FakeGemini(default_answer=answer) as production:
        env["PROMPTGRADE_GEMINI_BASE_URL"] = production.base_url
        out = run_isolated(GRADE, tmp_path / "var-task", env, stdin=json.dumps(event))
        sent = {r.image_sha256: r for r in production.requests}

    assert "results" in out, out
    assert [r["id"] for r in out["results"]] == [e.id for e in trays], out
    assert all(r["food_remaining_pct"] == 40 for r in out["results"]), out
    assert len(sent) == len(trays)
    for example in trays:
        measured = promoted.request_for(example)
        shipped_request = sent[example.image.sha256]  # the function prepared the tray as the sweep did
        assert len(shipped_request.image_sha256s) == N_REFERENCES + 1
        assert len(measured.body) > N_REFERENCES * 10_000  # the images are in it, base64
        assert shipped_request.body == measured.body  # what was measured is what production sends
        assert shipped_request.path == measured.path


def test_package_refuses_a_bundle_whose_reference_image_changed(
    tmp_path: Path,
    gemini_server: FakeGemini,
    fake_api_key: str,
    tracking: str,
    project_snapshot: Path,
    target: tuple[str, str],
) -> None:
    promoted = sweep_and_promote(tmp_path, gemini_server, tracking)
    name = load_bundle(promoted.bundle_dir).reference_files()[-1]
    (promoted.bundle_dir / name).write_bytes((promoted.bundle_dir / name).read_bytes() + b"\0")

    with pytest.raises(PackagingError, match="changed after it was recorded") as refused:
        build_package(
            promoted.bundle_dir,
            tmp_path / "never.zip",
            runtime=target[0],
            architecture=target[1],  # type: ignore[arg-type]
            project_root=project_snapshot,
            quiet=True,
        )

    assert name in str(refused.value)
    assert not (tmp_path / "never.zip").exists()


def test_a_bundle_written_before_references_still_loads_and_a_newer_one_is_refused(
    make_bundle: Callable[[Path], Path], tmp_path: Path
) -> None:
    bundle_dir = make_bundle(tmp_path / "bundle")
    assert not (bundle_dir / "references").exists()  # a prompt without references writes none
    manifest = json.loads((bundle_dir / MANIFEST).read_text(encoding="utf-8"))
    del manifest["references"]
    manifest["format_version"] = 1
    (bundle_dir / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")

    loaded = load_bundle(bundle_dir)

    assert loaded.prompt.references == () and loaded.prompt.sha256 == loaded.manifest.prompt.sha256
    assert loaded.render().parts == ()  # a plain prompt: the tray first, then the text, as always

    manifest["format_version"] = FORMAT_VERSION + 1
    (bundle_dir / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ConfigError, match=f"bundle format {FORMAT_VERSION + 1} is newer"):
        load_bundle(bundle_dir)
