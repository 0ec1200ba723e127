"""Benchmark 7: the Lambda zip's size, its cold-start import time, and warm per-invocation overhead.

The zip is built with ``promptgrade.shipping.package.build_package`` from a bundle written by
``promptgrade.bundle.write_bundle`` (``meal_tray_json@1``, the meal-tray task), for this interpreter's
runtime and architecture so it can be imported here, then unzipped into an empty folder.

Cold start: a fresh interpreter that sees only the unzipped package and a stand-in for the Lambda
runtime's /var/runtime (links to boto3 and its dependencies, nothing else) imports
``lambda_handler.app``; ``-I -S`` keep the venv, user site and PYTHON* variables out, and the unzipped
tree is made read-only (and ``-B`` set) as Lambda's /var/task is, so nothing is written between runs.
Two trees side by side, runs alternating between them: the zip as shipped (with the unchecked-hash
bytecode ``package`` compiles for the runtime) and the same tree without its ``__pycache__`` folders
(the zip as it was before, which compiles every module on every cold start). The import is timed
inside the interpreter (several runs, median), and so is the whole process.

Warm overhead: in one such interpreter, the handler grades a 256×256 tray (a direct ``{"images": [...]}``
invocation, base64) repeatedly against the local Gemini-REST server with zero latency, its API key in a
Secrets Manager secret served by moto. The server's own time is taken out by timing, in the same
interpreter, a bare HTTP round trip (``http.client``, one connection per request like the SDK's to this
HTTP/1.0 server) carrying the same request body: overhead = median handler time − median round trip.

    .venv/bin/python benchmarks/lambda_cold_start.py
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import platform
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from pathlib import Path
from typing import Any

from common import (
    PYTHON,
    REPO,
    SAMPLE,
    Check,
    Report,
    ServerProcess,
    command_line,
    import_profile,
    load_note,
)

from promptgrade.testing.lambda_runtime import runtime_dir

MARK = "RESULT:"
REGION = "us-east-1"
SECRET_ID = "promptgrade/bench-gemini-key"
ARCHITECTURES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}


def build(tmp: Path) -> tuple[Any, float]:
    from promptgrade.bundle import Manifest, PromptInfo, write_bundle
    from promptgrade.prompts import PromptLibrary
    from promptgrade.shipping.package import build_package
    from promptgrade.task import load_task

    prompt = PromptLibrary(REPO / "prompts").get("meal_tray_json", 1)
    manifest = Manifest(
        prompt=PromptInfo(name=prompt.name, version=prompt.version, sha256=prompt.sha256),
        model="gemini-2.5-flash",
        task=load_task(REPO / "experiments" / "tasks" / "meal_tray.yaml"),
    )
    bundle = write_bundle(tmp / "bundle", prompt, manifest)
    pip_cache = Path(tempfile.gettempdir()) / "promptgrade-bench" / "pip-cache"
    started = time.perf_counter()
    report = build_package(
        bundle,
        tmp / "promptgrade-lambda.zip",
        runtime=f"python{sys.version_info.major}.{sys.version_info.minor}",
        architecture=ARCHITECTURES[platform.machine().lower()],  # type: ignore[arg-type]
        project_root=REPO,
        cache_dir=pip_cache,
        quiet=True,
    )
    return report, time.perf_counter() - started


def isolated(
    script: str, task: Path, runtime: Path, env: dict[str, str], *, bytecode: bool
) -> dict[str, Any]:
    prelude = f"import sys, time\nsys.path[:0] = [{str(task)!r}, {str(runtime)!r}]\n"
    flags = ["-I", "-S"] + ([] if bytecode else ["-B"])
    started = time.perf_counter()
    done = subprocess.run(
        [PYTHON, *flags, "-c", prelude + script],
        env=env,
        cwd=task.parent,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"isolated interpreter failed:\n{done.stderr[-3000:]}")
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith(MARK))
    return {**json.loads(line.removeprefix(MARK)), "process_wall_s": wall, "stderr": done.stderr}


COLD = textwrap.dedent(
    f"""
    started = time.perf_counter()
    import lambda_handler.app as app
    seconds = time.perf_counter() - started
    import json, sysconfig
    allowed = tuple(sys.path[:2]) + (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"])
    outside = sorted(n for n, m in list(sys.modules.items())
                     if getattr(m, "__file__", None) and not m.__file__.startswith(allowed))
    lab = [n for n in ("mlflow", "pandas", "datasets", "numpy") if n in sys.modules]
    print({MARK!r} + json.dumps({{"import_s": seconds, "modules": len(sys.modules), "outside": outside,
                                 "lab_loaded": lab, "app": app.__file__}}))
    """
)


def set_writable(tree: Path, writable: bool) -> None:
    """Lambda mounts /var/task read-only: a cold start there can neither write nor keep bytecode."""
    for path in [tree, *tree.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def without_bytecode(task: Path, target: Path) -> None:
    """A copy of the unzipped tree with every __pycache__ removed: the zip as it was before bytecode."""
    shutil.copytree(task, target, ignore=shutil.ignore_patterns("__pycache__"), symlinks=True)


def summarise(samples: list[dict[str, Any]], task: Path) -> dict[str, Any]:
    first = samples[0]
    assert first["app"].startswith(str(task)), first["app"]
    return {
        "runs": len(samples),
        "import_s": [s["import_s"] for s in samples],
        "import_s_median": statistics.median(s["import_s"] for s in samples),
        "process_wall_s_median": statistics.median(s["process_wall_s"] for s in samples),
        "modules_loaded": first["modules"],
        "modules_from_outside": first["outside"],
        "lab_loaded": first["lab_loaded"],
        "load": load_note(),
    }


def cold_starts(
    trees: dict[str, Path], runtime: Path, env: dict[str, str], runs: int
) -> dict[str, dict[str, Any]]:
    """``runs`` cold imports of each tree, alternating, so a change in the machine's load hits both."""
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for _ in range(runs):
        for name, task in trees.items():
            samples[name].append(isolated(COLD, task, runtime, env, bytecode=False))
    return {name: summarise(samples[name], trees[name]) for name in trees}


def heaviest_imports(task: Path, runtime: Path, env: dict[str, str]) -> list[tuple[str, float]]:
    """Top-level packages by import time, one run like the cold starts above."""
    script = f"import sys; sys.path[:0] = [{str(task)!r}, {str(runtime)!r}]\nimport lambda_handler.app"
    return import_profile(["-I", "-S", "-B", "-c", script], env)


def zip_bytes_without_bytecode(tree: Path, tmp: Path) -> int:
    """The size of the same zip without its .pyc, written the way ``package`` writes zips."""
    from promptgrade.shipping.package import _write_zip

    out = tmp / "no-bytecode.zip"
    _write_zip(tree, out)
    return out.stat().st_size


def zip_composition(path: Path, top: int = 8) -> list[tuple[str, float]]:
    """Compressed MiB per top-level entry of the zip (packages, their .libs and dist-info)."""
    sizes: dict[str, int] = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            root = info.filename.split("/", 1)[0]
            root = root.split("-", 1)[0] if root.endswith(".dist-info") else root
            sizes[root] = sizes.get(root, 0) + info.compress_size
    ranked = sorted(sizes.items(), key=lambda item: -item[1])
    return [(name, size / 2**20) for name, size in ranked[:top]]


WARM = textwrap.dedent(
    """
    import base64, http.client, json, os, statistics
    import lambda_handler.app as app
    image = base64.b64decode(os.environ["BENCH_IMAGE"])
    event = {"images": [{"id": "tray", "image_base64": base64.b64encode(image).decode()}]}
    started = time.perf_counter()
    first = app.handler(event, None)
    first_s = time.perf_counter() - started
    assert "categories" in first["results"][0], first
    handler_ms, model_ms = [], []
    for _ in range(int(os.environ["BENCH_WARM"])):
        started = time.perf_counter()
        out = app.handler(event, None)
        handler_ms.append((time.perf_counter() - started) * 1000)
        model_ms.append(out["results"][0]["timing_ms"]["model"])
    # the server's own time: the same request body, over a bare HTTP round trip
    runtime = app.runtime()
    body = json.dumps({"contents": [{"role": "user", "parts": [
        {"inlineData": {"mimeType": "image/jpeg", "data": base64.b64encode(image).decode()}},
        {"text": runtime.prompt_text}]}],
        "generationConfig": {"responseMimeType": "application/json",
                             "responseJsonSchema": runtime.bundle.task.response_schema()}})
    host, port = os.environ["PROMPTGRADE_GEMINI_BASE_URL"].removeprefix("http://").split(":")
    raw_ms = []
    for _ in range(int(os.environ["BENCH_WARM"])):
        started = time.perf_counter()
        connection = http.client.HTTPConnection(host, int(port))
        connection.request("POST", "/v1beta/models/gemini-2.5-flash:generateContent", body,
                           {"Content-Type": "application/json", "x-goog-api-key": "k"})
        response = connection.getresponse()
        response.read()
        connection.close()
        raw_ms.append((time.perf_counter() - started) * 1000)
        assert response.status == 200, response.status
    print("RESULT:" + json.dumps({"first_invocation_s": first_s, "handler_ms": handler_ms,
                                  "model_ms": model_ms, "raw_round_trip_ms": raw_ms}))
    """
)


def warm(task: Path, runtime: Path, base_env: dict[str, str], invocations: int) -> dict[str, Any]:
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's access log
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client(
            "secretsmanager",
            region_name=REGION,
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_secret(Name=SECRET_ID, SecretString=json.dumps({"api_key": "bench-key-not-real"}))
        image = (SAMPLE / "images" / "tray-0001.jpg").read_bytes()
        with ServerProcess(0.0) as server:
            env = {
                **base_env,
                "AWS_ENDPOINT_URL": endpoint,
                "PROMPTGRADE_API_KEY_SECRET_ID": SECRET_ID,
                "PROMPTGRADE_GEMINI_BASE_URL": server.base_url,
                "BENCH_IMAGE": base64.b64encode(image).decode(),
                "BENCH_WARM": str(invocations),
                "AWS_LAMBDA_LOG_LEVEL": "INFO",
            }
            out = isolated(WARM, task, runtime, env, bytecode=False)
    finally:
        moto.stop()
    handler = statistics.median(out["handler_ms"])
    raw = statistics.median(out["raw_round_trip_ms"])
    model = statistics.median(out["model_ms"])
    return {
        "invocations": invocations,
        "image": "data/sample/images/tray-0001.jpg (256x256 JPEG)",
        "first_invocation_s": out["first_invocation_s"],
        "handler_ms_median": handler,
        "handler_ms_p95": sorted(out["handler_ms"])[int(0.95 * (invocations - 1))],
        "model_call_ms_median": model,
        "raw_round_trip_ms_median": raw,
        "overhead_ms": handler - raw,
        "outside_model_call_ms": handler - model,
        "load": load_note(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7, help="cold starts to take the median of")
    parser.add_argument("--warm", type=int, default=200, help="warm invocations")
    args = parser.parse_args()
    report = Report("lambda_cold_start", command_line())
    print(f"lambda: build, cold import, warm overhead ({load_note()})")
    with tempfile.TemporaryDirectory(prefix="pg-bench-lambda-") as tmp_name:
        tmp = Path(tmp_name)
        package, build_s = build(tmp)
        print(f"  built {package.summary()} in {build_s:.1f} s", flush=True)
        composition = zip_composition(package.path)
        print("  largest in the zip (compressed MiB): " + ", ".join(f"{n} {m:.1f}" for n, m in composition))
        task = tmp / "var-task"
        with zipfile.ZipFile(package.path) as archive:
            archive.extractall(task)
        bare = tmp / "var-task-no-bytecode"
        without_bytecode(task, bare)
        bare_zip_bytes = zip_bytes_without_bytecode(bare, tmp)
        print(
            f"  {package.bytecode.summary()}; without it the zip is {bare_zip_bytes / 2**20:.2f} MiB "
            f"(+{(package.size_bytes - bare_zip_bytes) / 2**20:.2f} MiB for the bytecode)",
            flush=True,
        )
        if not package.bytecode.compiled:
            print(f"  note: {package.bytecode.note}", flush=True)
        for tree in (task, bare):
            set_writable(tree, False)
        runtime = runtime_dir(tmp)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp), "LANG": "C.UTF-8"}
        env |= {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_CONFIG_FILE": "/dev/null",
        }
        both = cold_starts({"shipped": task, "no_bytecode": bare}, runtime, env, args.runs)
        shipped, cold = both["shipped"], both["no_bytecode"]
        ratio = shipped["import_s_median"] / cold["import_s_median"]
        print(
            f"  cold import, read-only tree, {args.runs} runs each, alternating: as shipped (bytecode) median "
            f"{shipped['import_s_median']:.3f} s (process {shipped['process_wall_s_median']:.2f} s), "
            f"without bytecode {cold['import_s_median']:.3f} s (process {cold['process_wall_s_median']:.2f} s) "
            f"→ ×{ratio:.2f}; {shipped['modules_loaded']} modules, lab loaded: "
            f"{shipped['lab_loaded'] or 'none'}, from outside zip+runtime: {len(shipped['modules_from_outside'])}; "
            f"{shipped['load']}",
            flush=True,
        )
        heavy = heaviest_imports(task, runtime, env)
        heavy_bare = heaviest_imports(bare, runtime, env)
        print(
            "  slowest packages to import (self time summed, s), as shipped: "
            + ", ".join(f"{n} {s:.2f}" for n, s in heavy)
            + "; without bytecode: "
            + ", ".join(f"{n} {s:.2f}" for n, s in heavy_bare)
        )
        warmed = warm(task, runtime, env, args.warm)
        for tree in (task, bare):
            set_writable(tree, True)  # so the temp folder can be removed
        print(
            f"  warm: handler median {warmed['handler_ms_median']:.1f} ms (p95 {warmed['handler_ms_p95']:.1f}), "
            f"bare round trip to the server {warmed['raw_round_trip_ms_median']:.1f} ms, time inside the model "
            f"call {warmed['model_call_ms_median']:.1f} ms → overhead {warmed['overhead_ms']:.1f} ms "
            f"({warmed['outside_model_call_ms']:.1f} ms outside the model call); first invocation "
            f"{warmed['first_invocation_s'] * 1000:.0f} ms; {warmed['load']}",
            flush=True,
        )
    report.figures = {
        "zip": {
            "bytes": package.size_bytes,
            "mib": package.size_bytes / 2**20,
            "unzipped_bytes": package.unzipped_bytes,
            "files": package.files,
            "dependencies": package.dependencies,
            "runtime": package.runtime,
            "architecture": package.architecture,
            "build_s": build_s,
            "largest_entries_mib": composition,
            "bytecode": {
                "compiled": package.bytecode.compiled,
                "cache_tag": package.bytecode.cache_tag,
                "pyc_files": package.bytecode.files,
                "note": package.bytecode.note,
                "zip_bytes_without_bytecode": bare_zip_bytes,
            },
        },
        "cold_import_as_shipped": shipped,
        "cold_import_no_bytecode": cold,
        "cold_import_shipped_over_no_bytecode": ratio,
        "heaviest_imports_s": heavy,
        "heaviest_imports_no_bytecode_s": heavy_bare,
        "warm": warmed,
    }
    report.check(
        Check(
            "zip size",
            package.size_bytes / 1e6,
            20.0,
            "MB",
            higher=False,
            note=f"{package.size_bytes / 2**20:.2f} MiB; {bare_zip_bytes / 1e6:.1f} MB without the bytecode",
        )
    )
    report.check(
        Check(
            "cold import (as shipped"
            + (", with bytecode)" if package.bytecode.compiled else ", no bytecode)"),
            shipped["import_s_median"],
            1.0,
            "s",
            higher=False,
            note=f"without bytecode {cold['import_s_median']:.3f} s (×{ratio:.2f} in the same run)",
        )
    )
    report.check(Check("warm overhead per invocation", warmed["overhead_ms"], 30.0, "ms", higher=False))
    report.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
