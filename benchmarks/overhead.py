"""Benchmark 3: CPU time per request spent by promptgrade itself, with the model answering instantly.

A sweep (N distinct images × two prompts, so each prepared image serves two requests) runs through the
real path against the local Gemini-REST server with zero latency, at concurrency 1 so that CPU can be
attributed exactly: the provider is wrapped so the thread CPU time spent inside ``GeminiProvider.complete``
(google-genai building the request, aiohttp, parsing the response) is summed separately. What is left is
promptgrade's own work:

* loading — reading the labels, preparing each image once (EXIF, RGB, bounded JPEG), hashing;
* per request — rendering/building the request, the answer cache (key, lookup, store), retries
  bookkeeping, parsing the answer, scoring, listeners;
* logging — MLflow: sweep and candidate runs, registry links, metrics and the predictions table.

A second sweep at concurrency 8 gives the whole client's CPU per request (SDK included) as a sweep
normally runs, and a few component micro-benchmarks show where promptgrade's per-request time goes.

    .venv/bin/python benchmarks/overhead.py             # 1,000 images × 2 prompts = 2,000 requests
    .venv/bin/python benchmarks/overhead.py --quick     # 200 images × 2 prompts
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    Check,
    Report,
    ServerProcess,
    Timeline,
    command_line,
    isolated_env,
    load_note,
    migrate_store,
    synthetic_folder,
    write_experiment,
)

PROMPTS = ["meal_tray_json@1", "meal_tray_freetext@1"]


class TimedProvider:
    """Forwards to the real provider and sums the thread CPU time spent inside its ``complete``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.model = inner.model
        self.base_url = inner.base_url
        self.cpu = 0.0
        self.calls = 0

    async def complete(self, request: Any) -> Any:
        started = time.thread_time()
        try:
            return await self.inner.complete(request)
        finally:
            self.cpu += time.thread_time() - started
            self.calls += 1

    async def aclose(self) -> None:
        await self.inner.aclose()


class Marks(Timeline):
    """A Timeline that also notes the CPU time at every ``per_candidate``-th example: at concurrency 1,
    the moment each candidate's last example is scored."""

    def __init__(self, expected: int, per_candidate: int) -> None:
        super().__init__(expected=expected)
        self.per_candidate = per_candidate
        self.boundaries: list[float] = []

    def example_done(self, candidate: object, outcome: Any) -> None:
        super().example_done(candidate, outcome)
        if self.done % self.per_candidate == 0:
            self.boundaries.append(self.cpu_last_done)


def sweep_cpu(dataset: Path, n: int, concurrency: int, server: ServerProcess, tmp: Path) -> dict[str, Any]:
    cpu0 = time.process_time()
    from promptgrade.cache import AnswerCache
    from promptgrade.runner import CacheMode
    from promptgrade.sweep import Sweep
    from promptgrade.tracking import Tracker  # noqa: F401  (imports are not the sweep's per-request cost)

    imports_cpu = time.process_time() - cpu0
    with isolated_env(tmp) as env:
        experiment = write_experiment(
            tmp / "exp.yaml",
            dataset=dataset,
            base_url=server.base_url,
            prompts=PROMPTS,
            concurrency=concurrency,
            limit=n,
            name=f"overhead-c{concurrency}",
        )
        store_s = migrate_store(env["MLFLOW_TRACKING_URI"])
        cpu = time.process_time()
        wall = time.perf_counter()
        sweep = Sweep(experiment)
        load_cpu = time.process_time() - cpu
        load_wall = time.perf_counter() - wall
        sweep.connect()
        assert sweep.providers is not None
        timed = {key: TimedProvider(provider) for key, provider in sweep.providers.items()}
        sweep.providers = dict(timed)  # type: ignore[arg-type]
        requests = len(sweep.candidates) * len(sweep.dataset.examples)
        timeline = Marks(expected=requests, per_candidate=len(sweep.dataset.examples))
        cache = CacheMode(AnswerCache(env["PROMPTGRADE_CACHE"]))
        server_cpu = server.cpu_seconds()
        cpu = time.process_time()
        wall = time.perf_counter()
        report = sweep.run(tracking_uri=env["MLFLOW_TRACKING_URI"], listeners=[timeline], cache=cache)
        run_cpu = time.process_time() - cpu
        run_wall = time.perf_counter() - wall
        server_cpu = server.cpu_seconds() - server_cpu
    assert timeline.cpu_started is not None
    sdk_cpu = sum(t.cpu for t in timed.values())
    calls = sum(t.calls for t in timed.values())
    request_phase_cpu = timeline.cpu_last_done - timeline.cpu_started
    tracking_cpu = run_cpu - request_phase_cpu  # MLflow set-up before the first request + logging after
    if concurrency == 1:
        # At concurrency 1 the candidates run one after another, so every candidate but the last is
        # logged to MLflow (between its last example and its candidate_done) inside the request phase.
        logged = sum(
            cpu_done - boundary
            for (_, cpu_done), boundary in zip(
                timeline.candidate_done_at[:-1], timeline.boundaries[:-1], strict=True
            )
        )
        request_phase_cpu -= logged
        tracking_cpu += logged
    statuses = timeline.statuses
    per_request = {
        "load_and_prepare": load_cpu / requests * 1000,
        "mlflow_logging": tracking_cpu / requests * 1000,
        "whole_client": (load_cpu + run_cpu) / requests * 1000,
    }
    if concurrency == 1:  # only then is the CPU inside ``complete`` the SDK's alone
        per_request |= {
            "runner_cache_parse_score": (request_phase_cpu - sdk_cpu) / requests * 1000,
            "promptgrade_total": (load_cpu + request_phase_cpu - sdk_cpu + tracking_cpu) / requests * 1000,
            "google_genai_sdk_and_http": sdk_cpu / requests * 1000,
        }
    return {
        "concurrency": concurrency,
        "images": len(sweep.dataset.examples),
        "candidates": len(sweep.candidates),
        "requests": requests,
        "api_calls": calls,
        "statuses": statuses,
        "cache_hits": report.cache_hits,
        "imports_cpu_s": imports_cpu,
        "load_cpu_s": load_cpu,
        "load_wall_s": load_wall,
        "run_cpu_s": run_cpu,
        "run_wall_s": run_wall,
        "request_phase_cpu_s": request_phase_cpu,
        "sdk_cpu_s": sdk_cpu,
        "tracking_cpu_s": tracking_cpu,
        "server_cpu_s": server_cpu,
        "mlflow_store_creation_s": store_s,
        "ms_per_request": per_request,
        "prepare_ms_per_image": load_cpu / len(sweep.dataset.examples) * 1000,
        "load": load_note(),
    }


def components(dataset: Path, n: int, repeats: int = 3) -> dict[str, float]:
    """Microseconds per call of promptgrade's per-request steps (best of ``repeats`` passes)."""
    from promptgrade.cache import AnswerCache, cache_key
    from promptgrade.candidates import candidates_for
    from promptgrade.config import load_experiment, plan_experiment
    from promptgrade.data.loaders import load_dataset_split
    from promptgrade.grading import build_request, interpret
    from promptgrade.images import prepare_image
    from promptgrade.providers.base import Completion
    from promptgrade.scoring import score

    with tempfile.TemporaryDirectory(prefix="pg-bench-") as tmp, isolated_env(Path(tmp)):
        experiment = write_experiment(
            Path(tmp) / "exp.yaml",
            dataset=dataset,
            base_url="http://127.0.0.1:9",
            prompts=PROMPTS,
            concurrency=1,
            limit=n,
        )
        plan = plan_experiment(load_experiment(experiment))
        candidate = candidates_for(plan)[0]
        data = load_dataset_split(plan.experiment.dataset, plan.task, plan.experiment.base_dir)
        examples = data.examples
        raw = [(dataset / "images" / f"{e.id}.jpg").read_bytes() for e in examples[:200]]
        cache = AnswerCache(Path(tmp) / "c.sqlite")
        answer = Completion(
            text='{"categories": ["soup", "bread"], "food_remaining_pct": 40}', input_tokens=300
        )

        def best(step: Any, items: list[Any]) -> float:
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                for item in items:
                    step(item)
                times.append(time.perf_counter() - started)
            return min(times) / len(items) * 1e6

        requests = [
            build_request(candidate.rendered_prompt, plan.task, candidate.settings, e.image) for e in examples
        ]
        keys = [cache_key("gemini", candidate.model, r) for r in requests]
        out = {
            "prepare_image_us": best(lambda b: prepare_image(b, max_side=768), raw),
            "render_prompt_us": best(lambda _: candidate.prompt.render(plan.task), range(200)),
            "build_request_us": best(
                lambda e: build_request(candidate.rendered_prompt, plan.task, candidate.settings, e.image),
                examples,
            ),
            "cache_key_us": best(lambda r: cache_key("gemini", candidate.model, r), requests),
        }
        put_started = time.perf_counter()
        for key in keys:
            cache.put(key, "gemini", candidate.model, answer)
        out["cache_put_us"] = (time.perf_counter() - put_started) / len(keys) * 1e6
        out["cache_get_us"] = best(cache.get, keys)
        interpreted = interpret(answer, plan.task)
        out["parse_answer_us"] = best(lambda _: interpret(answer, plan.task), range(len(examples)))
        out["score_us"] = best(
            lambda e: score(e.id, e.labels.categories, e.labels.grade, interpreted, plan.task), examples
        )
        cache.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="200 images")
    args = parser.parse_args()
    if args.quick:
        args.images = 200
    report = Report("overhead", command_line())
    print(f"overhead: {args.images} images × {len(PROMPTS)} prompts, server latency 0 ({load_note()})")
    dataset = synthetic_folder(args.images)
    with ServerProcess(0.0) as server, tempfile.TemporaryDirectory(prefix="pg-bench-") as tmp:
        attributed = sweep_cpu(dataset, args.images, 1, server, Path(tmp) / "c1")
        normal = sweep_cpu(dataset, args.images, 8, server, Path(tmp) / "c8")
    parts = components(dataset, args.images)
    per = attributed["ms_per_request"]
    print(
        f"  concurrency 1 (attributed): {attributed['requests']} requests ({attributed['api_calls']} API calls, "
        f"statuses {attributed['statuses']}); CPU ms/request — promptgrade {per['promptgrade_total']:.2f} = "
        f"load+prepare {per['load_and_prepare']:.2f} + runner/cache/parse/score "
        f"{per['runner_cache_parse_score']:.2f} + MLflow {per['mlflow_logging']:.2f}; google-genai+HTTP "
        f"{per['google_genai_sdk_and_http']:.2f}; whole client {per['whole_client']:.2f}; prepare "
        f"{attributed['prepare_ms_per_image']:.2f} ms/image; run wall {attributed['run_wall_s']:.1f} s; "
        f"{attributed['load']}",
        flush=True,
    )
    per8 = normal["ms_per_request"]
    print(
        f"  concurrency 8: whole client {per8['whole_client']:.2f} CPU ms/request (SDK included; load+prepare "
        f"{per8['load_and_prepare']:.2f}, MLflow {per8['mlflow_logging']:.2f}); run wall {normal['run_wall_s']:.1f} s; "
        f"{normal['load']}",
        flush=True,
    )
    print(
        "  components (µs/call): " + ", ".join(f"{k.removesuffix('_us')} {v:.0f}" for k, v in parts.items())
    )
    report.figures = {"attributed_concurrency_1": attributed, "concurrency_8": normal, "components_us": parts}
    per = attributed["ms_per_request"]
    report.check(
        Check(
            "promptgrade CPU per request (SDK excluded)",
            per["promptgrade_total"],
            5.0,
            "ms",
            higher=False,
            note=f"image preparation amortised over {len(PROMPTS)} prompts; google-genai+HTTP adds "
            f"{per['google_genai_sdk_and_http']:.2f} ms",
        )
    )
    report.save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
