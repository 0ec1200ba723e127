"""Compiled bytecode for the Lambda zip, made by an interpreter of the target runtime's Python version.

Lambda's /var/task is read-only, so a zip without ``.pyc`` makes every cold start compile the grading
path and all its dependencies from source, and throw the result away. The packager therefore ships
``__pycache__/<module>.<cache tag>.pyc`` next to each source.

A ``.pyc`` is only valid for the Python version that wrote it (its magic number changes with every
minor version; the patch level does not matter), so it is compiled by an interpreter of exactly the
runtime's version — this one when the versions match, else ``python3.X`` on PATH or one uv knows —
and, when none is found, the zip ships without bytecode and the report says so: wrong-version bytecode
would be ignored at best.

The files are *unchecked-hash* pycs: no source mtime inside (the zip stays byte-for-byte reproducible)
and the importer never re-reads the source to validate them, which is what makes them cheap on a
read-only, never-edited /var/task. Code objects record ``/var/task/...`` (where Lambda unpacks the
zip) as their file name rather than the build's temp folder, and ``PYTHONHASHSEED=0`` with one
compiling process (files in sorted order) fixes the order in which set and frozenset constants are
marshalled: both keep the bytes reproducible.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from promptgrade.errors import PromptgradeError
from promptgrade.settings import child_environment

LAMBDA_TASK_ROOT = "/var/task"  # where Lambda unpacks the zip
_PROBE = (
    "import sys; print(sys.implementation.name, sys.implementation.cache_tag, '%d.%d' % sys.version_info[:2])"
)


class BytecodeError(PromptgradeError):
    """The interpreter asked for cannot compile for this runtime, or a shipped module does not compile."""


@dataclass(frozen=True)
class Bytecode:
    """What the zip carries: ``.pyc`` for ``cache_tag`` compiled by ``interpreter``, or why not (``note``)."""

    python_version: str
    cache_tag: str | None = None
    interpreter: str | None = None
    files: int = 0
    note: str = ""

    @property
    def compiled(self) -> bool:
        return self.cache_tag is not None

    def summary(self) -> str:
        if self.compiled:
            return f"bytecode {self.cache_tag} ({self.files} .pyc)"
        return f"no bytecode (no Python {self.python_version} interpreter found)"


@dataclass(frozen=True)
class Interpreter:
    path: str
    cache_tag: str
    version: str


def probe(python: str) -> Interpreter | None:
    """The CPython at ``python`` and its version, or None if it does not run (a pyenv shim for a
    version that is not selected exits non-zero) or is not CPython."""
    try:
        done = subprocess.run(
            [python, "-I", "-c", _PROBE], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = done.stdout.split()
    if done.returncode != 0 or len(parts) != 3 or parts[0] != "cpython":
        return None
    return Interpreter(path=python, cache_tag=parts[1], version=parts[2])


def _uv() -> str | None:
    beside = Path(sys.executable).parent / "uv"  # `make install` puts uv in the venv
    return shutil.which("uv") or (str(beside) if beside.is_file() else None)


def _candidates(python_version: str) -> list[str]:
    found: list[str] = []
    if f"{sys.version_info.major}.{sys.version_info.minor}" == python_version:
        found.append(sys.executable)
    on_path = shutil.which(f"python{python_version}")
    if on_path:
        found.append(on_path)
    uv = _uv()
    if uv:
        try:
            done = subprocess.run(
                [uv, "python", "find", "--no-project", python_version],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            done = None
        if done is not None and done.returncode == 0 and done.stdout.strip():
            found.append(done.stdout.strip().splitlines()[-1])
    return found


def find_interpreter(python_version: str, explicit: Path | None = None) -> Interpreter | None:
    """An interpreter of ``python_version`` (e.g. ``"3.12"``) to compile with, or None.

    An ``explicit`` interpreter that does not run or has another version is an error (it was asked
    for); otherwise this interpreter, ``python3.X`` on PATH and uv's are tried in that order.
    """
    if explicit is not None:
        found = probe(str(explicit))
        if found is None:
            raise BytecodeError("not a working CPython interpreter (--bytecode-python)", path=explicit)
        if found.version != python_version:
            raise BytecodeError(
                f"is Python {found.version}, but the runtime needs Python {python_version} bytecode "
                f"(--bytecode-python)",
                path=explicit,
            )
        return found
    for candidate in _candidates(python_version):
        found = probe(candidate)
        if found is not None and found.version == python_version:
            return found
    return None


def missing_note(python_version: str, runtime: str) -> str:
    return (
        f"no bytecode in the zip: no Python {python_version} interpreter here (looked at this one, "
        f"python{python_version} on PATH and uv's), so {runtime} compiles every module on each cold "
        f"start; install Python {python_version} or pass --bytecode-python"
    )


def compile_tree(root: Path, interpreter: Interpreter) -> int:
    """Compile every ``.py`` under ``root`` into unchecked-hash pycs; the number of pycs written."""
    env = child_environment(drop_prefix="PYTHON")
    env["PYTHONHASHSEED"] = "0"
    command = [
        interpreter.path,
        "-s",  # no user site-packages
        "-P",  # the working directory is not put on sys.path (3.11+)
        "-m",
        "compileall",
        "-q",
        "--invalidation-mode",
        "unchecked-hash",
        "-s",
        str(root),
        "-p",
        LAMBDA_TASK_ROOT,
        str(root),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        failed = next((line for line in lines if line.startswith("*** Error compiling")), None)
        detail = failed or (lines[-1] if lines else f"exit {done.returncode}")
        raise BytecodeError(f"Python {interpreter.version} cannot compile the zip's modules: {detail}")
    suffix = f".{interpreter.cache_tag}.pyc"
    return sum(1 for path in root.rglob("*.pyc") if path.name.endswith(suffix))
