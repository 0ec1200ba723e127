"""Given a swept and promoted prompt that shows five reference trays, when I package it and the unzipped
function grades a tray in a fresh interpreter, then the model receives exactly the request the sweep
sent for that tray — the same bytes, reference images included — and a bundle whose reference image
changed is refused by ``package`` before any download.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import boto3
import pytest
from promoted_references import N_REFERENCES, sweep_and_promote

from promptgrade.bundle import load_bundle
from promptgrade.shipping.package import PackagingError, build_package
from promptgrade.testing.gemini_server import FakeGemini
from promptgrade.testing.lambda_runtime import runtime_dir

REGION = "us-east-1"
SECRET_ID = "promptgrade/references-gemini-key"
MARK = "GRADED:"


def graded_in_a_fresh_interpreter(
    task_dir: Path, tmp_path: Path, event: dict, base_url: str, moto_server: str
) -> dict:
    """``event`` answered by the unzipped handler, in an interpreter that sees only the zip and the
    runtime's boto3, with its key in a Secrets Manager secret (moto) — as in AWS."""
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path[:0] = [{str(task_dir)!r}, {str(runtime_dir(tmp_path))!r}]
        import lambda_handler.app as app
        print({MARK!r} + json.dumps(app.handler(json.loads(sys.stdin.read()), None)))
        """
    )
    keys = ("PATH", "LANG")
    env = {k: os.environ.get(k, "") for k in keys} | {
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": moto_server,
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_CONFIG_FILE": "/dev/null",
        "PROMPTGRADE_API_KEY_SECRET_ID": SECRET_ID,
        "PROMPTGRADE_GEMINI_BASE_URL": base_url,
    }
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script],
        input=json.dumps(event),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(MARK)), None)
    assert line is not None, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(line.removeprefix(MARK))


def test_the_unzipped_function_sends_the_sweeps_request_byte_for_byte(
    tmp_path: Path,
    gemini_server: FakeGemini,
    fake_api_key: str,
    tracking: str,
    pip_cache: Path,
    project_snapshot: Path,
    target: tuple[str, str],
    moto_server: str,
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
        cache_dir=pip_cache,
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

    boto3.client(
        "secretsmanager",
        region_name=REGION,
        endpoint_url=moto_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_secret(Name=SECRET_ID, SecretString=json.dumps({"api_key": fake_api_key}))
    trays = promoted.examples[:3]
    event = {
        "images": [
            {"id": e.id, "image_base64": base64.b64encode(promoted.tray_file(e).read_bytes()).decode()}
            for e in trays
        ]
    }
    answer = '{"categories": ["soup"], "food_remaining_pct": 40}'
    with FakeGemini(default_answer=answer) as production:
        out = graded_in_a_fresh_interpreter(
            tmp_path / "var-task", tmp_path, event, production.base_url, moto_server
        )
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
