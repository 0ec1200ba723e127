"""Given the Lambda zip, when the function cold-starts from a read-only /var/task, then nothing is compiled.

The zip is the session's real build (for this interpreter's runtime, so the bytecode is for this very
Python). A fresh, isolated interpreter imports the handler from the unzipped, read-only tree with
bytecode writing off, and counts every module the import system compiles from source; the same tree
without its ``__pycache__`` folders is the control that shows the count is not vacuous. A runtime with
no interpreter of its version on this machine ships without bytecode and ``package`` says so.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from typer.testing import CliRunner

from promptgrade.cli import app
from promptgrade.shipping.bytecode import find_interpreter
from promptgrade.shipping.package import SUPPORTED_RUNTIMES, PackagingError, build_package
from promptgrade.testing.lambda_runtime import runtime_dir

ROOT = Path(__file__).resolve().parents[2]
TAG = sys.implementation.cache_tag  # e.g. cpython-311
MARK = "RESULT:"

# Counts what the import system compiles from source. SourceLoader.get_code calls source_to_code
# only when it has no usable .pyc; an unchecked-hash .pyc is used without reading the source at all.
COUNT_COMPILES = textwrap.dedent(
    """
    import importlib._bootstrap_external as bootstrap, json, sys
    sys.path[:0] = [TASK, RUNTIME]
    compiled = []
    original = bootstrap.SourceLoader.source_to_code
    def counting(self, data, path, *args, **kwargs):
        compiled.append(str(path))
        return original(self, data, path, *args, **kwargs)
    bootstrap.SourceLoader.source_to_code = counting
    import lambda_handler.app
    ours = {name: module.__cached__ for name, module in sys.modules.items()  # Python modules, not .so
            if (getattr(module, "__file__", None) or "").startswith(TASK) and module.__file__.endswith(".py")}
    print(MARK + json.dumps({
        "compiled": [path for path in compiled if path.startswith(TASK)],
        "from_task": ours,
        "writes_bytecode": not sys.dont_write_bytecode,
    }))
    """
)


def cold_import(task: Path, runtime: Path) -> dict[str, Any]:
    prelude = f"TASK, RUNTIME, MARK = {str(task)!r}, {str(runtime)!r}, {MARK!r}\n"
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", prelude + COUNT_COMPILES],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(task.parent)},
        cwd=task.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith(MARK))
    return json.loads(line.removeprefix(MARK))


def read_only(tree: Path) -> None:
    """As Lambda mounts /var/task: nothing under it can be written."""
    for path in [*tree.rglob("*"), tree]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def writable(tree: Path) -> None:
    for path in [tree, *tree.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def test_every_module_ships_unchecked_hash_bytecode_for_the_runtime(lambda_zip: Any) -> None:
    report = lambda_zip.report
    assert report.bytecode.compiled and report.bytecode.cache_tag == TAG
    assert f"bytecode {TAG}" in report.summary() and report.bytecode.note == ""

    with zipfile.ZipFile(report.path) as archive:
        entries = archive.namelist()
        pycs = {e for e in entries if e.endswith(".pyc")}
        sources = [PurePosixPath(e) for e in entries if e.endswith(".py")]
        expected = {str(s.parent / "__pycache__" / f"{s.stem}.{TAG}.pyc") for s in sources}
        assert pycs == expected, "a module without its .pyc, or a .pyc without its module"
        assert report.bytecode.files == len(pycs)
        for name in pycs:
            header = archive.read(name)[:16]
            assert header[:4] == importlib.util.MAGIC_NUMBER, name  # this Python's bytecode
            # PEP 552 flags: bit 0 hash-based, bit 1 check_source; 0b01 = unchecked hash, no mtime
            assert int.from_bytes(header[4:8], "little") == 0b01, name
    for module in ("lambda_handler/app.py", "promptgrade/grading.py", "pydantic/main.py"):
        assert (
            str(PurePosixPath(module).parent / "__pycache__" / f"{PurePosixPath(module).stem}.{TAG}.pyc")
            in pycs
        )


def test_a_read_only_task_root_imports_the_handler_without_compiling_anything(
    lambda_zip: Any, tmp_path: Path
) -> None:
    task = tmp_path / "var-task"
    with zipfile.ZipFile(lambda_zip.report.path) as archive:
        archive.extractall(task)
    runtime = runtime_dir(tmp_path)
    read_only(task)
    try:
        shipped = cold_import(task, runtime)

        # the control: the same tree without bytecode compiles the grading path and its dependencies
        writable(task)
        for cache in list(task.rglob("__pycache__")):
            for pyc in cache.iterdir():
                pyc.unlink()
            cache.rmdir()
        read_only(task)
        without = cold_import(task, runtime)
    finally:
        writable(task)

    assert shipped["writes_bytecode"] is False
    assert len(shipped["from_task"]) > 100, "the handler's import did not load the zip's modules"
    assert shipped["compiled"] == [], "modules were compiled from source despite the shipped bytecode"
    cached = shipped["from_task"]
    assert cached["lambda_handler.app"] == str(task / "lambda_handler" / "__pycache__" / f"app.{TAG}.pyc")
    with zipfile.ZipFile(lambda_zip.report.path) as archive:
        in_zip = set(archive.namelist())
    assert {Path(path).relative_to(task).as_posix() for path in cached.values()} <= in_zip

    assert len(without["compiled"]) == len(without["from_task"]) == len(shipped["from_task"])
    assert not list(task.rglob("*.pyc")), "the read-only tree was written to"


def _other_runtime() -> str:
    local = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return next(runtime for runtime in SUPPORTED_RUNTIMES if runtime != local)


def test_a_runtime_without_an_interpreter_of_its_version_ships_no_bytecode_and_package_says_so(
    bundle_dir: Path,
    wheel_cache: Path,
    project_snapshot: Path,
    target: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime = _other_runtime()
    version = runtime.removeprefix("python")
    # no python3.X on PATH and no uv-managed Pythons: only this interpreter, of another version, is known
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setenv("UV_PYTHON_INSTALL_DIR", str(tmp_path / "no-uv-pythons"))
    assert find_interpreter(version) is None

    out = tmp_path / "other.zip"
    result = CliRunner(env={"COLUMNS": "300"}).invoke(
        app,
        [
            "package",
            "--bundle",
            str(bundle_dir),
            "--out",
            str(out),
            "--runtime",
            runtime,
            "--architecture",
            target[1],
            "--project-root",
            str(project_snapshot),
            "--wheel-cache",
            str(wheel_cache),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"{runtime}/{target[1]}, no bytecode (no Python {version} interpreter found)" in result.output
    assert (
        f"note: no bytecode in the zip: no Python {version} interpreter here (looked at this one, "
        f"python{version} on PATH and uv's), so {runtime} compiles every module on each cold start; "
        f"install Python {version} or pass --bytecode-python"
    ) in " ".join(result.output.split())
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
    assert "lambda_handler/app.py" in names
    assert not [n for n in names if n.endswith(".pyc") or "__pycache__" in n]


def test_an_interpreter_of_another_version_is_refused_before_any_download(
    bundle_dir: Path, tmp_path: Path
) -> None:
    runtime = _other_runtime()
    with pytest.raises(
        PackagingError,
        match=rf"is Python {sys.version_info.major}\.{sys.version_info.minor}, but the runtime needs "
        rf"Python {runtime.removeprefix('python')} bytecode",
    ):
        build_package(
            bundle_dir,
            tmp_path / "x.zip",
            runtime=runtime,
            project_root=ROOT,
            bytecode_python=Path(sys.executable),
        )
    with pytest.raises(PackagingError, match="not a working CPython interpreter"):
        build_package(bundle_dir, tmp_path / "x.zip", project_root=ROOT, bytecode_python=tmp_path / "nowhere")
    assert not (tmp_path / "x.zip").exists()
