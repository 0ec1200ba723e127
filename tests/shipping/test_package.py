"""Given a promoted bundle, when I package the Lambda, then the zip runs the grading path — and nothing else.

The zip is built for real from PyPI wheels, unzipped into an empty folder and imported by a fresh
interpreter that sees only that folder and what the Lambda runtime provides (boto3 and its
dependencies), then asked to grade an image against the local fake Gemini, with the API key read
from a Secrets Manager secret in a moto server — the way the function runs in AWS.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from PIL import Image

from helpers.checkout import copy_project
from promptgrade.errors import PromptgradeError
from promptgrade.shipping.package import (
    FORBIDDEN,
    GRADING_PATH,
    PROVIDER_MODULES,
    RUNTIME_PROVIDED,
    PackagingError,
    _check_forbidden,
    _check_third_party_imports,
    build_package,
    python_platform,
)
from promptgrade.testing.gemini_server import FakeGemini
from promptgrade.testing.lambda_runtime import runtime_dir as lambda_runtime_dir

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"

# What /var/runtime holds next to the Lambda's Python: boto3 and what it imports.
RESULT_MARK = "RESULT:"


def names(built: Any) -> list[str]:
    with zipfile.ZipFile(built.report.path) as archive:
        return archive.namelist()


def top_levels(entries: list[str]) -> set[str]:
    return {entry.split("/", 1)[0] for entry in entries}


# -- what is in the zip ----------------------------------------------------------------------------


def test_the_zip_holds_the_handler_the_bundle_and_only_the_grading_path(
    lambda_zip: Any, bundle_dir: Path, target: tuple[str, str]
) -> None:
    entries = names(lambda_zip)
    report = lambda_zip.report

    assert "lambda_handler/app.py" in entries
    assert not [e for e in entries if e.startswith("lambda_handler/") and not e.endswith((".py", ".pyc"))
                and not e.startswith("lambda_handler/bundle/")]  # fmt: skip
    assert sorted(e for e in entries if e.startswith("lambda_handler/bundle/")) == [
        "lambda_handler/bundle/manifest.json",
        "lambda_handler/bundle/prompt.jinja",
    ]
    with zipfile.ZipFile(report.path) as archive:
        for name in ("manifest.json", "prompt.jinja"):
            assert archive.read(f"lambda_handler/bundle/{name}") == (bundle_dir / name).read_bytes()

    shipped = sorted(
        e.removeprefix("promptgrade/")
        for e in entries
        if e.startswith("promptgrade/") and "/__pycache__/" not in e
    )
    assert shipped == sorted([*GRADING_PATH, *PROVIDER_MODULES["gemini"]])  # the bundle's provider only

    tops = {t.split("-", 1)[0].split(".", 1)[0].lower() for t in top_levels(entries)}
    assert not tops & FORBIDDEN, "the lab leaked into the Lambda zip"
    assert not tops & RUNTIME_PROVIDED, "boto3 & co. are the runtime's, not the zip's"
    # bytecode only as __pycache__/<module>.<tag>.pyc beside its source (test_bytecode.py checks which)
    assert not [e for e in entries if e.endswith(".pyo") or (e.endswith(".pyc") and "__pycache__/" not in e)]
    assert not [e for e in entries if e.startswith("bin/")]

    # the grading path's dependencies are really there, with their metadata (read by importlib.metadata)
    for dist in ("google-genai", "pydantic", "pydantic-settings", "Jinja2", "PyYAML", "pillow"):
        assert dist.lower() in {d.lower() for d in report.dependencies}
    assert any(e.startswith("google_genai-") and e.endswith(".dist-info/METADATA") for e in entries)

    assert report.files == len(entries)
    assert report.size_bytes == report.path.stat().st_size
    assert report.size_bytes < 50_000_000, "over the direct-upload limit: deploy would need an S3 bucket"
    assert (report.runtime, report.architecture) == target
    assert report.prompt == "meal_tray_json@v1"


def test_the_same_inputs_give_the_same_bytes(
    lambda_zip: Any, bundle_dir: Path, wheel_cache: Path, project_snapshot: Path, tmp_path: Path
) -> None:
    again = build_package(
        bundle_dir,
        tmp_path / "again.zip",
        runtime=lambda_zip.report.runtime,
        architecture=lambda_zip.report.architecture,
        project_root=project_snapshot,
        cache_dir=wheel_cache,
        quiet=True,
    )
    assert again.bytecode.compiled and again.bytecode.files > 1000  # the bytecode is reproducible too
    assert again.sha256 == lambda_zip.report.sha256
    with zipfile.ZipFile(again.path) as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}


# -- the zip runs where only the zip (and the runtime's boto3) is ----------------------------------


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_fresh_interpreter_grades_an_image_from_the_unzipped_package(
    lambda_zip: Any, moto_server: str, tmp_path: Path
) -> None:
    task_dir = tmp_path / "var-task"
    with zipfile.ZipFile(lambda_zip.report.path) as archive:
        archive.extractall(task_dir)
    runtime_dir = lambda_runtime_dir(tmp_path)

    secret_id = "promptgrade/test-gemini-key"
    boto3.client(
        "secretsmanager",
        region_name=REGION,
        endpoint_url=moto_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_secret(Name=secret_id, SecretString=json.dumps({"api_key": "test-key-from-secrets-manager"}))

    script = textwrap.dedent(
        f"""
        import importlib.util, json, sys, sysconfig
        sys.path[:0] = [{str(task_dir)!r}, {str(runtime_dir)!r}]
        lab = {sorted(FORBIDDEN)!r}
        visible = [name for name in lab if importlib.util.find_spec(name) is not None]
        import lambda_handler.app as app
        event = {{"images": [{{"id": "tray-1", "image_base64": {base64.b64encode(_png()).decode()!r}}}]}}
        result = app.handler(event, None)
        allowed = ({str(task_dir)!r}, {str(runtime_dir)!r}, sysconfig.get_paths()["stdlib"],
                   sysconfig.get_paths()["platstdlib"])
        outside = sorted(
            f"{{name}}: {{module.__file__}}" for name, module in list(sys.modules.items())
            if getattr(module, "__file__", None) and not module.__file__.startswith(allowed)
        )
        print({RESULT_MARK!r} + json.dumps({{
            "result": result, "lab_visible": visible, "outside": outside,
            "app": app.__file__, "path": sys.path,
        }}))
        """
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": moto_server,
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_CONFIG_FILE": "/dev/null",
        "PROMPTGRADE_API_KEY_SECRET_ID": secret_id,
    }
    answer = '{"categories": ["soup", "bread"], "grade": 40}'
    with FakeGemini(default_answer=answer) as gemini:
        env["PROMPTGRADE_GEMINI_BASE_URL"] = gemini.base_url
        started = time.perf_counter()
        # -I: no user site, no PYTHON* variables, no script dir; -S: not even the venv's site-packages.
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", script],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        seconds = time.perf_counter() - started
        requests = gemini.requests

    assert done.returncode == 0, done.stderr[-3000:]
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_MARK)), None)
    assert line is not None, done.stdout[-3000:] + done.stderr[-3000:]
    out = json.loads(line.removeprefix(RESULT_MARK))

    assert out["app"].startswith(str(task_dir))
    assert out["lab_visible"] == [], "the lab is importable: the test is not isolated"
    assert out["outside"] == [], "modules were loaded from outside the zip and the runtime"
    [graded] = out["result"]["results"]
    assert graded["id"] == "tray-1", graded
    assert graded["categories"] == ["soup", "bread"]
    assert graded["food_remaining_pct"] == 40
    assert graded["prompt"]["name"] == "meal_tray_json" and graded["prompt"]["version"] == 1
    assert graded["model"] == "gemini-2.5-flash"

    [request] = requests
    assert request.model == "gemini-2.5-flash"
    assert request.has_api_key
    assert "soup" in request.prompt  # the bundle's rendered prompt, with the task's categories
    print(f"cold start + one graded image in a fresh interpreter: {seconds:.1f} s")


# -- what the packager refuses ---------------------------------------------------------------------


def test_unsupported_runtimes_are_refused_before_any_download(bundle_dir: Path, tmp_path: Path) -> None:
    for runtime in ("python3.10", "python3.14", "nodejs22.x"):
        with pytest.raises(PackagingError, match=r"unsupported Lambda runtime .*python3\.11, python3\.12"):
            build_package(bundle_dir, tmp_path / "x.zip", runtime=runtime, project_root=ROOT)
    with pytest.raises(PackagingError, match="unsupported architecture"):
        build_package(bundle_dir, tmp_path / "x.zip", architecture="ppc64le", project_root=ROOT)  # type: ignore[arg-type]
    assert not (tmp_path / "x.zip").exists()


def test_a_missing_or_edited_bundle_is_refused(tmp_path: Path, make_bundle: Callable[[Path], Path]) -> None:
    with pytest.raises(PackagingError, match="no bundle here"):
        build_package(tmp_path / "nowhere", tmp_path / "x.zip", project_root=ROOT)

    edited = make_bundle(tmp_path / "edited")
    template = edited / "prompt.jinja"
    template.write_text(template.read_text(encoding="utf-8") + "\nAlso, be nice.\n", encoding="utf-8")
    with pytest.raises(PackagingError, match="edited after promotion") as caught:
        build_package(edited, tmp_path / "x.zip", project_root=ROOT)
    assert isinstance(caught.value, PromptgradeError)
    assert "\n" not in str(caught.value)


def test_a_grading_path_module_that_imports_the_lab_fails_the_build(
    tmp_path: Path, make_bundle: Callable[[Path], Path]
) -> None:
    project = copy_project(tmp_path / "project")
    grading = project / "evaluator" / "promptgrade" / "grading.py"
    grading.write_text(
        grading.read_text(encoding="utf-8") + "\nfrom promptgrade import scoring  # noqa\n", encoding="utf-8"
    )
    bundle = make_bundle(tmp_path / "bundle")
    with pytest.raises(
        PackagingError, match=r"grading\.py:\d+: imports promptgrade\.scoring, which is not in"
    ):
        build_package(bundle, tmp_path / "x.zip", project_root=project)


def test_the_lab_in_the_dependencies_fails_the_build(tmp_path: Path) -> None:
    """What uv resolved is checked before zipping (numpy itself is too big to download for a test)."""
    staging = tmp_path / "staging"
    (staging / "numpy").mkdir(parents=True)
    (staging / "numpy-2.1.0.dist-info").mkdir()
    (staging / "pydantic").mkdir()
    with pytest.raises(PackagingError, match="would contain numpy"):
        _check_forbidden(staging)


def test_a_handler_import_missing_from_the_requirements_fails_the_build(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    (staging / "lambda_handler").mkdir(parents=True)
    (staging / "promptgrade").mkdir()
    (staging / "pydantic").mkdir()
    (staging / "lambda_handler" / "app.py").write_text(
        "import json\nimport boto3\nimport pydantic\n"
        "try:\n    import orjson\nexcept ImportError:\n    orjson = None\n"
        "from aws_lambda_powertools import Logger\n",
        encoding="utf-8",
    )
    with pytest.raises(
        PackagingError, match=r"app\.py:8: imports aws_lambda_powertools, which is neither in"
    ):
        _check_third_party_imports(staging)


def test_the_wheels_platform_follows_the_runtimes_glibc() -> None:
    # Amazon Linux 2 (glibc 2.26): the newest manylinux uv names below it is 2_17 (manylinux2014), so a
    # manylinux_2_28 wheel, which would install and then fail to load, is never chosen
    assert python_platform("python3.11", "x86_64") == "x86_64-manylinux_2_17"
    assert python_platform("python3.12", "arm64") == "aarch64-manylinux_2_34"  # Amazon Linux 2023
    assert python_platform("python3.13", "x86_64") == "x86_64-manylinux_2_34"


def test_a_lock_that_cannot_be_installed_is_one_line_naming_the_file_and_platform(
    tmp_path: Path, make_bundle: Callable[[Path], Path]
) -> None:
    project = copy_project(tmp_path / "project")
    lock = project / "lambda_handler" / "requirements.txt"
    lock.write_text("promptgrade-no-such-wheel==1.0\n", encoding="utf-8")
    bundle = make_bundle(tmp_path / "bundle")
    out = tmp_path / "x.zip"

    with pytest.raises(PackagingError) as caught:  # offline here (UV_OFFLINE): uv finds nothing, says so
        build_package(bundle, out, runtime="python3.12", project_root=project, cache_dir=tmp_path / "cache")

    message = str(caught.value)
    assert "\n" not in message and caught.value.path == str(lock)
    assert "x86_64-manylinux_2_34, Python 3.12" in message and "promptgrade-no-such-wheel" in message
    assert not out.exists()
