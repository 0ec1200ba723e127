"""Benchmark: what submitting a big sweep as Gemini batch jobs costs on the client, inline vs file.

A batch sweep's own work is building every request once and sending it in one job: inline (the SDK
converts each ``InlinedRequest`` — its per-request pydantic walk) or as a JSONL file (bodies from the
SDK's converters once per candidate, then only the image's base64 changes — ``gemini_wire``). This
measures both on N synthetic trays against the local server (in its own process), from
``GeminiBatches.create`` to the job's name, and the bytes per request on the wire.

    .venv/bin/python benchmarks/batch_submit.py            # 2,000 trays
    .venv/bin/python benchmarks/batch_submit.py --quick    # 500 trays
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import (
    Check,
    Report,
    ServerProcess,
    command_line,
    isolated_env,
    synthetic_folder,
    write_experiment,
)

TARGET_MS = 5.0  # per request: a 40,000-request sweep submits in under ~3.5 minutes of client time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="500 trays")
    args = parser.parse_args()
    images = 500 if args.quick else args.images
    report = Report("batch_submit", command_line())
    dataset = synthetic_folder(images)
    with (
        tempfile.TemporaryDirectory() as tmp,
        isolated_env(Path(tmp)),
        ServerProcess(latency_s=0.0) as server,
    ):
        from promptgrade.batch.executor import BatchExecutor
        from promptgrade.providers.gemini_batch import INLINE_LIMIT_BYTES, GeminiBatches, _inline_size
        from promptgrade.sweep import Sweep

        experiment = write_experiment(
            Path(tmp) / "exp.yaml",
            dataset=dataset,
            base_url=server.base_url,
            prompts=["meal_tray_json@1"],
            concurrency=8,
        )
        started = time.perf_counter()
        sweep = Sweep(experiment, batch=True)
        load_s = time.perf_counter() - started
        candidate = sweep.prompt_candidates[0]
        executor = BatchExecutor(sweep.plan, sweep.dataset, [candidate], {}, None, None)  # type: ignore[arg-type]
        requests = [(key, request) for key, _, request in executor.requests(candidate)]
        figures: dict[str, object] = {"requests": len(requests), "dataset_load_s": load_s}
        per_request = _inline_size(requests) / len(requests)
        fits = min(len(requests), int(0.9 * INLINE_LIMIT_BYTES / per_request))  # an inline job's most
        for route, batch in (("inline", requests[:fits]), ("file", requests)):
            client = GeminiBatches(candidate.model, server.base_url, timeout_s=600)
            client.inline_limit = INLINE_LIMIT_BYTES if route == "inline" else 0  # file: forced
            started = time.perf_counter()
            name, used = client.create(batch, f"bench-{route}")
            seconds = time.perf_counter() - started
            client.close()
            assert used == route, (used, route)
            per_ms = seconds * 1000 / len(batch)
            figures[route] = {
                "job": name,
                "requests": len(batch),
                "submit_s": seconds,
                "ms_per_request": per_ms,
            }
            print(f"  {route}: {len(batch)} requests submitted in {seconds:.2f} s ({per_ms:.2f} ms each)")
        figures["inline_kib_per_request"] = per_request / 1024
        figures["inline_requests_per_job_at_most"] = fits
        report.figures = figures
        inline, file = figures["inline"], figures["file"]
        assert isinstance(inline, dict) and isinstance(file, dict)
        report.check(
            Check(
                "file route, client ms per request",
                file["ms_per_request"],
                TARGET_MS,
                "ms",
                higher=False,
                note=f"inline {inline['ms_per_request']:.2f} ms; file/inline "
                f"{file['ms_per_request'] / inline['ms_per_request']:.2f}x; "
                f"~{figures['inline_kib_per_request']:.1f} KiB per request, at most {fits} inline per job",
            )
        )
    report.save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
