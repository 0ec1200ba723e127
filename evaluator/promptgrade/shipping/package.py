"""Build the Lambda deployment zip: the handler, the promoted bundle, the grading path and its wheels.

Only the grading-path modules of promptgrade go in, so the zip cannot drag the lab (mlflow, pandas,
datasets) into production, and a grading-path module that starts importing the lab fails the build
here rather than at cold start. Third-party packages are installed from PyPI wheels for the Lambda's
platform (not the build machine's), so a zip built on a laptop runs on Amazon Linux. Every module
ships with its bytecode compiled for the runtime's Python (see ``bytecode.py``): /var/task is
read-only, so without it each cold start compiles everything again. The zip is deterministic — sorted
entries, fixed timestamps and modes, reproducible bytecode — so the same inputs give the same sha256
and a re-deploy of an unchanged build is recognisable as such.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal, get_args

from promptgrade.bundle import MANIFEST, Bundle, load_bundle
from promptgrade.errors import PromptgradeError
from promptgrade.providers.records import DEFAULT_PROVIDER, RECORDS, find
from promptgrade.references import REFERENCES_DIR
from promptgrade.shipping.bytecode import (
    Bytecode,
    BytecodeError,
    Interpreter,
    compile_tree,
    find_interpreter,
    missing_note,
)

HANDLER = "lambda_handler.app.handler"
HANDLER_PACKAGE = "lambda_handler"
BUNDLE_IN_ZIP = f"{HANDLER_PACKAGE}/bundle"
REQUIREMENTS_FILE = f"{HANDLER_PACKAGE}/requirements.txt"  # the Gemini bundle's lock (its record's)
DEFAULT_ZIP = f"{HANDLER_PACKAGE}/build/promptgrade-lambda.zip"  # template.yaml's CodeUri points here
DEFAULT_RUNTIME = "python3.12"
DEFAULT_ARCHITECTURE = "x86_64"

Architecture = Literal["x86_64", "arm64"]

# runtime -> (--python-version, glibc of its Amazon Linux). python3.11 runs on Amazon Linux 2
# (glibc 2.26), 3.12+ on Amazon Linux 2023 (glibc 2.34): a manylinux_2_28 wheel would install fine
# for 3.11 and then fail to load on AL2, so the platform the wheels are chosen for follows the glibc.
SUPPORTED_RUNTIMES: dict[str, tuple[str, int]] = {
    "python3.11": ("3.11", 26),
    "python3.12": ("3.12", 34),
    "python3.13": ("3.13", 34),
}
_MACHINE: dict[str, str] = {"x86_64": "x86_64", "arm64": "aarch64"}
# The manylinux glibc levels uv's --python-platform names (`uv pip install --help`): a runtime gets the
# newest one its glibc can load, and with it every older tag (AL2's 2.26 -> manylinux_2_17, i.e. 2014).
_UV_MANYLINUX: tuple[int, ...] = (40, 39, 38, 37, 36, 35, 34, 33, 32, 31, 28, 17)

# The promptgrade modules the Lambda imports: the one grading path, shared with the lab.
GRADING_PATH: tuple[str, ...] = (
    "__init__.py",
    "errors.py",
    "task.py",
    "yamlfile.py",
    "prompts.py",
    "references.py",  # reference images: what a prompt shows besides the tray, rendered in order
    "answers.py",
    "grading.py",
    "bundle.py",
    "images.py",
    "providers/__init__.py",
    "providers/base.py",
    "providers/records.py",  # the Lambda builds the bundle's provider from its record
    "stored_results.py",  # where an SQS-fed function keeps its results, one per (bundle, image)
)
# Each bundle's provider, and only it: a Bedrock zip carries neither google-genai nor its code.
PROVIDER_MODULES: dict[str, tuple[str, ...]] = {record.name: record.lambda_modules for record in RECORDS}


def requirements_file(provider: str) -> str:
    """The lock of the provider's dependencies: one per provider, so each zip holds only its own."""
    record = find(provider)
    if record is None:
        known = ", ".join(PROVIDER_MODULES)
        raise PackagingError(f"the bundle's provider {provider!r} cannot be packaged (known: {known})")
    return record.lambda_requirements


# What every Lambda Python runtime already has; shipping them only adds size and version skew.
RUNTIME_PROVIDED: frozenset[str] = frozenset({"boto3", "botocore", "s3transfer", "jmespath"})
# The lab: never in production. Matched against top-level names in the zip (packages, .libs, dist-info).
FORBIDDEN: frozenset[str] = frozenset(
    {"mlflow", "pandas", "datasets", "sklearn", "scikit_learn", "numpy", "torch", "torchvision"}
)
UNZIPPED_LIMIT_BYTES = 262_144_000  # Lambda's 250 MB limit on the unzipped function (and layers)
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


class PackagingError(PromptgradeError):
    """The Lambda zip cannot be built as asked (bad runtime, invalid bundle, missing wheel, lab code)."""


@dataclass(frozen=True)
class PackageReport:
    """What was built, so the caller can print it and a deploy can be traced to its inputs."""

    path: Path
    size_bytes: int
    files: int
    dependencies: dict[str, str]
    sha256: str
    unzipped_bytes: int
    runtime: str
    architecture: str
    prompt: str
    bytecode: Bytecode
    provider: str = DEFAULT_PROVIDER
    # pinned requirements (the lock) whose shipped version differs from the lab's: {name: (lab, shipped)}
    drift: dict[str, tuple[str, str]] = field(default_factory=dict)
    references: int = 0  # reference images the bundle's prompt shows
    # what they add to the zip: compressed bytes and zip headers (JPEG barely deflates)
    references_zipped_bytes: int = 0

    def summary(self) -> str:
        return (
            f"{self.path}: {self.size_bytes / 1_048_576:.1f} MiB zipped, "
            f"{self.unzipped_bytes / 1_048_576:.1f} MiB unzipped, {self.files} files, "
            f"{len(self.dependencies)} dependencies, {self.runtime}/{self.architecture}, "
            f"{self.bytecode.summary()}, prompt {self.prompt} on {self.provider}{self._references()}, "
            f"sha256 {self.sha256[:12]}…"
        )

    def _references(self) -> str:
        if not self.references:
            return ""
        each = self.references_zipped_bytes / self.references / 1024
        return (
            f" with {self.references} reference image(s) "
            f"({self.references_zipped_bytes / 1024:.1f} KiB zipped, {each:.1f} KiB each)"
        )

    def notes(self) -> list[str]:
        """What the user should know about this build: missing bytecode, versions that differ from the lab."""
        found = [self.bytecode.note] if self.bytecode.note else []
        found += [
            f"{name} {shipped} ships (the lab has {lab}): no {lab} wheel for {self.runtime}"
            for name, (lab, shipped) in sorted(self.drift.items())
        ]
        return found


def python_platform(runtime: str, architecture: str) -> str:
    """uv's name for the Lambda's platform: the newest manylinux its glibc can load (uv expands the
    older tags itself), so a wheel built for a newer glibc is never chosen."""
    _, glibc_minor = _runtime(runtime)
    machine = _MACHINE[_architecture(architecture)]
    minor = next(level for level in _UV_MANYLINUX if level <= glibc_minor)
    return f"{machine}-manylinux_2_{minor}"


def build_package(
    bundle_dir: Path,
    out: Path,
    *,
    runtime: str = DEFAULT_RUNTIME,
    architecture: Architecture = DEFAULT_ARCHITECTURE,
    project_root: Path,
    cache_dir: Path | None = None,
    bytecode_python: Path | None = None,
    quiet: bool = False,
) -> PackageReport:
    """Build the deployable zip at ``out`` and print one summary line (and any notes) to stderr unless ``quiet``.

    Cheap checks (runtime, bundle, sources, promptgrade imports, the interpreter for bytecode) run
    before the wheels are installed, so a mistake costs no download. ``cache_dir`` is uv's cache, to
    make repeated builds fast. ``bytecode_python`` is the interpreter that compiles the bytecode (it
    must be the runtime's Python version); without it one is looked for, and the zip ships without
    bytecode, with a note, if there is none.
    """
    inputs = _inputs(Path(bundle_dir), runtime, architecture, Path(project_root), bytecode_python)
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="promptgrade-package-") as tmp:
        staging = Path(tmp) / "zip"
        _stage_first_party(staging, inputs, Path(project_root))
        _stage_third_party(staging, inputs, python_platform(runtime, architecture), cache_dir)
        bytecode = _compile(staging, inputs, runtime)
        unzipped = _unzipped_size(staging)
        dependencies = _installed(staging)
        count = _write_zip(staging, out)

    report = PackageReport(
        path=out,
        size_bytes=out.stat().st_size,
        files=count,
        dependencies=dependencies,
        sha256=hashlib.sha256(out.read_bytes()).hexdigest(),
        unzipped_bytes=unzipped,
        runtime=runtime,
        architecture=architecture,
        prompt=inputs.bundle.prompt.ref,
        bytecode=bytecode,
        provider=inputs.provider,
        drift=_drift(inputs.requirements, dependencies),
        references=len(inputs.bundle.manifest.references),
        references_zipped_bytes=_zipped_bytes(out, f"{BUNDLE_IN_ZIP}/{REFERENCES_DIR}/"),
    )
    if not quiet:
        print(report.summary(), file=sys.stderr)
        for note in report.notes():
            print(f"  note: {note}", file=sys.stderr)
    return report


@dataclass(frozen=True)
class _Inputs:
    """What the cheap checks established, before anything is copied or downloaded."""

    python_version: str
    interpreter: Interpreter | None
    bundle_dir: Path
    bundle: Bundle
    provider: str
    requirements: Path
    sources: dict[str, Path]


def _inputs(
    bundle_dir: Path, runtime: str, architecture: str, project_root: Path, bytecode_python: Path | None
) -> _Inputs:
    python_version, _ = _runtime(runtime)
    _architecture(architecture)
    try:
        interpreter = find_interpreter(python_version, bytecode_python)
    except BytecodeError as exc:
        raise PackagingError(exc.message, path=exc.path) from None
    bundle = _load_bundle(bundle_dir)
    provider = bundle.manifest.provider
    requirements = project_root / requirements_file(provider)
    if not requirements.is_file():
        raise PackagingError(f"the Lambda's requirements file for {provider} is missing", path=requirements)
    sources = _sources(project_root, provider)
    return _Inputs(python_version, interpreter, bundle_dir, bundle, provider, requirements, sources)


def _stage_first_party(staging: Path, inputs: _Inputs, project_root: Path) -> None:
    """Our modules and the bundle, checked as they will ship: the bundle loads, every import resolves."""
    staging.mkdir()
    for relative, source in inputs.sources.items():
        target = staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    bundle_target = staging / BUNDLE_IN_ZIP
    (bundle_target / REFERENCES_DIR).mkdir(parents=True, exist_ok=True)
    # the manifest, the template and the reference images it lists: nothing else of the folder
    for name in (MANIFEST, inputs.bundle.manifest.prompt.file, *inputs.bundle.reference_files()):
        shutil.copyfile(inputs.bundle_dir / name, bundle_target / name)
    _load_bundle(bundle_target)  # what ships must load, not just what was given
    _check_first_party_imports(staging, project_root)


def _stage_third_party(staging: Path, inputs: _Inputs, platform: str, cache_dir: Path | None) -> None:
    """The lock's wheels for the Lambda's platform, without what the runtime has or the lab needs."""
    _install_wheels(staging, inputs.requirements, inputs.python_version, platform, cache_dir)
    _prune(staging)
    _check_forbidden(staging)
    _check_third_party_imports(staging)


def _compile(staging: Path, inputs: _Inputs, runtime: str) -> Bytecode:
    if inputs.interpreter is None:
        return Bytecode(inputs.python_version, note=missing_note(inputs.python_version, runtime))
    try:
        count = compile_tree(staging, inputs.interpreter)
    except BytecodeError as exc:
        raise PackagingError(exc.message) from None
    return Bytecode(inputs.python_version, inputs.interpreter.cache_tag, inputs.interpreter.path, count)


def _unzipped_size(staging: Path) -> int:
    unzipped = sum(p.stat().st_size for p in _files(staging))
    if unzipped > UNZIPPED_LIMIT_BYTES:
        raise PackagingError(
            f"the unzipped package is {unzipped / 1_048_576:.0f} MiB, over Lambda's 250 MB limit"
        )
    return unzipped


# -- inputs ------------------------------------------------------------------------------------


def _runtime(runtime: str) -> tuple[str, int]:
    try:
        return SUPPORTED_RUNTIMES[runtime]
    except KeyError:
        supported = ", ".join(SUPPORTED_RUNTIMES)
        raise PackagingError(f"unsupported Lambda runtime {runtime!r} (supported: {supported})") from None


def _architecture(architecture: str) -> str:
    if architecture not in get_args(Architecture):
        raise PackagingError(f"unsupported architecture {architecture!r} (supported: x86_64, arm64)")
    return architecture


def _load_bundle(bundle_dir: Path) -> Bundle:
    try:
        bundle = load_bundle(bundle_dir)
    except PromptgradeError as exc:
        raise PackagingError(f"cannot package this bundle: {exc}") from None
    name = bundle.manifest.prompt.file
    if PurePosixPath(name).name != name or name == MANIFEST:
        raise PackagingError(
            f"the manifest's template file {name!r} must be a plain file name", path=bundle_dir
        )
    return bundle


def _sources(project_root: Path, provider: str) -> dict[str, Path]:
    """Zip path -> source file for the handler's .py files, the grading path and the bundle's provider."""
    handler_dir = project_root / HANDLER_PACKAGE
    if not (handler_dir / "app.py").is_file():
        raise PackagingError("no Lambda handler here (expected lambda_handler/app.py)", path=handler_dir)
    sources: dict[str, Path] = {}
    for path in sorted(handler_dir.rglob("*.py")):
        relative = path.relative_to(handler_dir)
        if relative.parts[0] in {"tests", "build", "bundle"} or "__pycache__" in relative.parts:
            continue
        sources[f"{HANDLER_PACKAGE}/{relative.as_posix()}"] = path
    package_dir = project_root / "evaluator" / "promptgrade"
    for name in (*GRADING_PATH, *PROVIDER_MODULES[provider]):
        path = package_dir / name
        if not path.is_file():
            raise PackagingError("a grading-path module is missing", path=path)
        sources[f"promptgrade/{name}"] = path
    return sources


# -- third-party wheels ------------------------------------------------------------------------


def _install_wheels(
    target: Path, requirements: Path, python_version: str, platform: str, cache_dir: Path | None
) -> None:
    """The lock's wheels, installed by uv for the runtime's platform and Python (the lock's hashes
    checked). uv, not pip: the same wheels, chosen by the same tags, in about a tenth of the CPU
    (~1 s against ~10 s per build here, cached either way) — what most of a build used to be."""
    from uv import find_uv_bin

    command = [find_uv_bin(), "pip", "install", "--target", str(target)]
    command += ["--python", sys.executable, "--python-platform", platform, "--python-version", python_version]
    command += ["--only-binary", ":all:", "--no-compile", "--quiet", "--requirement", str(requirements)]
    if cache_dir is not None:
        command += ["--cache-dir", str(cache_dir)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PackagingError(
            f"the Lambda's dependencies cannot be installed for {platform}, Python {python_version}: "
            f"{_uv_error(result.stderr or result.stdout)}",
            path=requirements,
        )
    (target / ".lock").unlink(missing_ok=True)  # uv's lock on the target folder, not a file to ship


def _uv_error(output: str) -> str:
    """uv's error and its cause on one line ("error: No solution found…" / "cause: Because …")."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    wanted = [line for line in lines if line.startswith(("error:", "cause:"))] or lines[-1:]
    return ": ".join(line.split(":", 1)[1].strip() if ":" in line else line for line in wanted)


def _prune(staging: Path) -> None:
    """Drop what the runtime provides or never runs: console scripts, caches, packages' own tests."""
    shutil.rmtree(staging / "bin", ignore_errors=True)
    for entry in list(staging.iterdir()):
        if _distribution_stem(entry.name) in RUNTIME_PROVIDED:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    for directory in sorted(staging.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if not directory.is_dir():
            continue
        relative = directory.relative_to(staging)
        if directory.name == "__pycache__" or (
            # a package's own test suite (google/genai/tests is 2.6 MB); never ours
            directory.name == "tests" and len(relative.parts) >= 2 and relative.parts[0] not in _OURS
        ):
            shutil.rmtree(directory)
    for path in staging.rglob("*.py[co]"):
        path.unlink()


_OURS = frozenset({"promptgrade", HANDLER_PACKAGE})


def _distribution_stem(name: str) -> str:
    """``numpy``, ``numpy.libs``, ``numpy-2.1.dist-info`` and ``typing_extensions.py`` -> their name."""
    return re.split(r"[-.]", name, maxsplit=1)[0].lower().replace("-", "_")


def _check_forbidden(staging: Path) -> None:
    found = sorted({_distribution_stem(p.name) for p in staging.iterdir()} & FORBIDDEN)
    if found:
        raise PackagingError(
            f"the Lambda zip would contain {', '.join(found)}: the grading path must not depend on the lab; "
            f"find what pulls them in with `uv pip install --dry-run -r {REQUIREMENTS_FILE}`"
        )


def _installed(staging: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions(path=[str(staging)]):
        found[dist.metadata["Name"]] = dist.version
    return dict(sorted(found.items(), key=lambda kv: kv[0].lower()))


def _drift(requirements: Path, shipped: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Packages of the lock whose version differs from this environment's, i.e. from what was measured."""
    normalized = {_normalize(name): version for name, version in shipped.items()}
    drift: dict[str, tuple[str, str]] = {}
    for line in requirements.read_text(encoding="utf-8").splitlines():
        match = _NAME.match(line.split("#", 1)[0])
        if not match:
            continue
        name = match.group(1)
        try:
            lab = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        ship = normalized.get(_normalize(name))
        if ship is not None and ship != lab:
            drift[name] = (lab, ship)
    return drift


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# -- import checks -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Import:
    module: str
    names: tuple[str, ...]
    line: int


class _ImportCollector(ast.NodeVisitor):
    """Absolute imports that must resolve at run time; optional (try/except ImportError) and
    type-checking-only imports are skipped because a missing module there is handled or harmless."""

    def __init__(self, package: str) -> None:
        self.package = package
        self.found: list[_Import] = []

    def visit_Try(self, node: ast.Try) -> None:
        guarded = any(_catches_import_error(handler.type) for handler in node.handlers)
        for child in node.body if not guarded else []:
            self.visit(child)
        for child in [*node.handlers, *node.orelse, *node.finalbody]:
            self.visit(child)

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        ):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append(_Import(alias.name, (), node.lineno))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - node.level + 1]
            module = ".".join([*base, module] if module else base)
        self.found.append(_Import(module, tuple(a.name for a in node.names), node.lineno))


def _catches_import_error(handler_type: ast.expr | None) -> bool:
    if handler_type is None:
        return True
    names = handler_type.elts if isinstance(handler_type, ast.Tuple) else [handler_type]
    return any(isinstance(n, ast.Name) and n.id in {"ImportError", "ModuleNotFoundError"} for n in names)


def _shipped_modules(staging: Path) -> Iterator[tuple[Path, _Import]]:
    for top in sorted(_OURS):
        for path in sorted((staging / top).rglob("*.py")):
            # the package a relative import is resolved against: the folder holding the file
            package = ".".join(path.relative_to(staging).parts[:-1])
            collector = _ImportCollector(package)
            collector.visit(ast.parse(path.read_bytes(), filename=str(path)))
            for found in collector.found:
                yield path, found


def _module_exists(root: Path, module: str) -> bool:
    path = root.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _check_first_party_imports(staging: Path, project_root: Path) -> None:
    """A shipped module importing an unshipped promptgrade module would fail at cold start: fail now."""
    source_roots = {"promptgrade": project_root / "evaluator", HANDLER_PACKAGE: project_root}
    for path, found in _shipped_modules(staging):
        top = found.module.split(".")[0]
        if top not in _OURS:
            continue
        wanted = [found.module]
        # `from promptgrade import tracking` names a module, `from promptgrade.task import Task` does not
        wanted += [
            f"{found.module}.{name}"
            for name in found.names
            if _module_exists(source_roots[top], f"{found.module}.{name}")
        ]
        for module in wanted:
            if not _module_exists(staging, module):
                hint = "add it to GRADING_PATH if it is grading code" if top == "promptgrade" else ""
                raise PackagingError(
                    f"imports {module}, which is not in the Lambda zip"
                    + (f": the grading path must not import the lab ({hint})" if hint else ""),
                    path=path.relative_to(staging),
                    line=found.line,
                )


def _check_third_party_imports(staging: Path) -> None:
    """A shipped module importing a package the requirements lack would fail at cold start: fail now."""
    available = set(sys.stdlib_module_names) | RUNTIME_PROVIDED | _OURS | {"__future__"}
    for entry in staging.iterdir():
        available.add(entry.name.split(".", 1)[0])
    for path, found in _shipped_modules(staging):
        top = found.module.split(".")[0]
        if top and top not in available:
            raise PackagingError(
                f"imports {top}, which is neither in {REQUIREMENTS_FILE} nor provided by the Lambda runtime",
                path=path.relative_to(staging),
                line=found.line,
            )


# -- the zip -----------------------------------------------------------------------------------


def _files(root: Path) -> list[Path]:
    found: list[Path] = []
    for directory, _, names in os.walk(root):
        found += [Path(directory) / name for name in names]
    return found


def _zipped_bytes(path: Path, prefix: str) -> int:
    """What the entries under ``prefix`` cost in the zip: their compressed data and both headers
    (local: 30 bytes + name; central directory: 46 bytes + name; no extra fields are written)."""
    with zipfile.ZipFile(path) as archive:
        return sum(
            info.compress_size + 76 + 2 * len(info.filename.encode())
            for info in archive.infolist()
            if info.filename.startswith(prefix)
        )


def _write_zip(staging: Path, out: Path) -> int:
    """Sorted entries, fixed timestamps and modes: the same tree gives the same bytes, anywhere."""
    entries = sorted((p.relative_to(staging).as_posix(), p) for p in _files(staging))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for name, path in entries:
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.create_system = 3  # unix, so the mode bits below are honoured
            executable = path.stat().st_mode & 0o111
            info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes(), compresslevel=6)
    os.replace(partial, out)
    return len(entries)
