"""Benchmarks 1 and 2: sweep throughput against the latency bound, and the naive one-at-a-time loop.

The local Gemini-REST server (its own process) answers every request after a fixed latency. A sweep of
N requests (N distinct images × the structured-JSON prompt) runs at each concurrency through the real
path — ``Sweep`` → ``run_sweep`` → ``GeminiProvider`` (google-genai over HTTP) — with a fresh answer
cache and MLflow store. The ideal rate is concurrency ÷ latency; the figure is the achieved rate over
the request phase (first candidate started → last example scored), and also end to end (``Sweep.run``,
which adds MLflow set-up and logging).

The naive way is the original study's Lambda loop, reconstructed: one synchronous google-genai call at
a time, retry-and-sleep on any exception. It runs over the first ``--naive-requests`` of the same
images with the same prompt and settings (its rate does not depend on how many it does, so a few
hundred give the rate without spending minutes), and the speed-up is measured in the same run.

To tell whether the ThreadingHTTPServer is the bottleneck, the server's own CPU time is read from
/proc during each sweep, and a minimal raw-socket client drives the server at the top concurrency.

    .venv/bin/python benchmarks/throughput.py            # 2,000 requests at 8, 32, 64; 200 naive
    .venv/bin/python benchmarks/throughput.py --quick    # 400 requests, 40 naive (a smoke test)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    FAKE_API_KEY,
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

PROMPT = "meal_tray_json@1"
MODEL = "gemini-2.5-flash"


def sweep_once(dataset: Path, n: int, concurrency: int, server: ServerProcess, tmp: Path) -> dict[str, Any]:
    from promptgrade.cache import AnswerCache
    from promptgrade.runner import CacheMode
    from promptgrade.sweep import Sweep

    with isolated_env(tmp) as env:
        experiment = write_experiment(
            tmp / "exp.yaml",
            dataset=dataset,
            base_url=server.base_url,
            prompts=[PROMPT],
            concurrency=concurrency,
            limit=n,
            name=f"throughput-c{concurrency}",
        )
        migrate_store(env["MLFLOW_TRACKING_URI"])
        loaded = time.perf_counter()
        sweep = Sweep(experiment)
        load_s = time.perf_counter() - loaded
        sweep.connect()
        server_cpu: list[float] = []
        timeline = Timeline(
            expected=n,
            on_first=lambda: server_cpu.append(server.cpu_seconds()),
            on_last=lambda: server_cpu.append(server.cpu_seconds()),
        )
        cache = CacheMode(AnswerCache(env["PROMPTGRADE_CACHE"]))
        started = time.perf_counter()
        report = sweep.run(tracking_uri=env["MLFLOW_TRACKING_URI"], listeners=[timeline], cache=cache)
        end_to_end = time.perf_counter() - started
    assert timeline.cpu_started is not None
    seconds = timeline.seconds
    [result] = report.results
    latencies = sorted(o.latency_ms or 0.0 for o in result.outcomes)
    distinct_images = len({e.image.sha256 for e in sweep.dataset.examples})
    client_cpu = timeline.cpu_last_done - timeline.cpu_started
    latency_s = server.latency_s
    return {
        "concurrency": concurrency,
        "latency_s": latency_s,
        "ideal_per_s": concurrency / latency_s,
        "achievable_per_s": n / (math.ceil(n / concurrency) * latency_s),
        "requests": result.calls,
        "examples": len(sweep.dataset.examples),
        "distinct_images": distinct_images,
        "statuses": timeline.statuses,
        "dataset_load_s": load_s,
        "request_phase_s": seconds,
        "end_to_end_s": end_to_end,
        "rate_per_s": n / seconds,
        "end_to_end_rate_per_s": n / end_to_end,
        "client_cpu_cores": client_cpu / seconds,
        "client_cpu_ms_per_request": client_cpu / n * 1000,
        # one event loop serialises each wave of responses: rate ≈ C / (latency + C × CPU per request)
        "wave_model_per_s": concurrency / (latency_s + concurrency * client_cpu / n),
        "server_cpu_cores": (server_cpu[1] - server_cpu[0]) / seconds,
        "server_cpu_ms_per_request": (server_cpu[1] - server_cpu[0]) / n * 1000,
        "client_latency_ms_p50": statistics.median(latencies),
        "client_latency_ms_p95": latencies[int(0.95 * (len(latencies) - 1))],
    }, sweep


def naive_loop(sweep: Any, server: ServerProcess, n: int) -> dict[str, Any]:
    """The study's Lambda, reconstructed: one call at a time; on any exception sleep and try again."""
    from google import genai
    from google.genai import types

    from promptgrade.answers import Prediction, parse_answer

    candidate = sweep.candidates[0]
    task = sweep.plan.task
    settings = candidate.settings
    client = genai.Client(api_key=FAKE_API_KEY, http_options=types.HttpOptions(base_url=server.base_url))
    config = types.GenerateContentConfig(
        temperature=settings.temperature,
        max_output_tokens=settings.max_output_tokens,
        response_mime_type="application/json",
        response_json_schema=task.response_schema(),
    )
    examples = sweep.dataset.examples[:n]
    parsed = retries = 0
    started = time.perf_counter()
    for example in examples:
        for attempt in range(5):
            try:
                response = client.models.generate_content(
                    model=MODEL,
                    contents=[
                        types.Part.from_bytes(data=example.image.data, mime_type=example.image.mime_type),
                        types.Part.from_text(text=candidate.rendered_prompt),
                    ],
                    config=config,
                )
                break
            except Exception:
                retries += 1
                time.sleep(2**attempt)
        else:
            continue
        parsed += isinstance(parse_answer(response.text, task), Prediction)
    seconds = time.perf_counter() - started
    return {
        "requests": len(examples),
        "seconds": seconds,
        "rate_per_s": len(examples) / seconds,
        "parsed": parsed,
        "retries": retries,
    }


def raw_probe(server: ServerProcess, sweep: Any, concurrency: int, total: int) -> dict[str, Any]:
    """The server alone: a minimal asyncio client (no SDK) sends the same request body ``total`` times."""
    example = sweep.dataset.examples[0]
    body = json.dumps(
        {
            "contents": [
                {
                    "role": "user",
                    "parts": [
                        {
                            "inlineData": {
                                "mimeType": "image/jpeg",
                                "data": base64.b64encode(example.image.data).decode(),
                            }
                        },
                        {"text": sweep.candidates[0].rendered_prompt},
                    ],
                }
            ],
            "generationConfig": {"temperature": 0.0, "maxOutputTokens": 256},
        }
    ).encode()
    host, port = server.base_url.removeprefix("http://").split(":")
    head = (
        f"POST /v1beta/models/{MODEL}:generateContent HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nx-goog-api-key: {FAKE_API_KEY}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()

    async def main() -> tuple[float, int]:
        semaphore = asyncio.Semaphore(concurrency)
        ok = 0

        async def one() -> None:
            nonlocal ok
            async with semaphore:
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(head + body)
                await writer.drain()
                data = await reader.read()
                writer.close()
                ok += data.startswith(b"HTTP/1.0 200")

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(total)))
        return time.perf_counter() - started, ok

    cpu = server.cpu_seconds()
    client_cpu = time.process_time()
    seconds, ok = asyncio.run(main())
    return {
        "concurrency": concurrency,
        "requests": total,
        "ok": ok,
        "rate_per_s": total / seconds,
        "ideal_per_s": concurrency / server.latency_s if server.latency_s else None,
        # with a fixed latency, ``total`` requests need ceil(total / concurrency) rounds at best
        "achievable_per_s": total / (math.ceil(total / concurrency) * server.latency_s)
        if server.latency_s
        else None,
        "server_cpu_cores": (server.cpu_seconds() - cpu) / seconds,
        "server_cpu_ms_per_request": (server.cpu_seconds() - cpu) / total * 1000,
        "probe_client_cpu_cores": (time.process_time() - client_cpu) / seconds,
    }


def show(run: dict[str, Any]) -> None:
    run["ratio_to_ideal"] = run["rate_per_s"] / run["ideal_per_s"]
    run["end_to_end_ratio_to_ideal"] = run["end_to_end_rate_per_s"] / run["ideal_per_s"]
    run["load"] = load_note()
    print(
        f"  concurrency {run['concurrency']}, latency {run['latency_s'] * 1000:.0f} ms, {run['requests']} requests: "
        f"{run['rate_per_s']:.1f} req/s of ideal {run['ideal_per_s']:.0f} (ratio {run['ratio_to_ideal']:.3f}; "
        f"end to end {run['end_to_end_rate_per_s']:.1f} req/s, ratio {run['end_to_end_ratio_to_ideal']:.3f}); "
        f"client CPU {run['client_cpu_cores']:.2f} cores = {run['client_cpu_ms_per_request']:.2f} ms/req "
        f"(wave model {run['wave_model_per_s']:.1f} req/s); server CPU {run['server_cpu_cores']:.2f} cores "
        f"({run['server_cpu_ms_per_request']:.2f} ms/req); client-side latency p50 {run['client_latency_ms_p50']:.0f} ms, "
        f"p95 {run['client_latency_ms_p95']:.0f} ms; statuses {run['statuses']}; {run['load']}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.2, help="server latency, seconds")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--naive-requests", type=int, default=200)
    parser.add_argument(
        "--long-latency",
        type=float,
        default=1.0,
        help="also sweep at concurrency 32 with this server latency (0: skip), closer to a real model's",
    )
    parser.add_argument("--long-requests", type=int, default=640)
    parser.add_argument("--quick", action="store_true", help="400 requests, 40 naive")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.naive_requests = 400, 40
    report = Report("throughput", command_line())
    print(f"throughput: {args.requests} requests, latency {args.latency * 1000:.0f} ms ({load_note()})")
    dataset = synthetic_folder(args.requests)
    runs: list[dict[str, Any]] = []
    with ServerProcess(args.latency) as server, tempfile.TemporaryDirectory(prefix="pg-bench-") as tmp:
        sweep = None
        for concurrency in args.concurrency:
            run, sweep = sweep_once(
                dataset, args.requests, concurrency, server, Path(tmp) / f"c{concurrency}"
            )
            runs.append(run)
            show(run)
        assert sweep is not None
        naive = naive_loop(sweep, server, args.naive_requests)
        naive["load"] = load_note()
        print(
            f"  naive (one at a time, retry-and-sleep): {naive['rate_per_s']:.2f} req/s over {naive['requests']} "
            f"requests ({naive['parsed']} parsed, {naive['retries']} retries); {naive['load']}",
            flush=True,
        )
        top = max(args.concurrency)
        probe = raw_probe(server, sweep, top, min(args.requests, 20 * top))
        probe["load"] = load_note()
        print(
            f"  server alone (raw socket client, concurrency {top}): {probe['rate_per_s']:.1f} req/s of "
            f"{probe['achievable_per_s']:.0f} achievable "
            f"({probe['ok']}/{probe['requests']} ok), server CPU {probe['server_cpu_cores']:.2f} cores "
            f"({probe['server_cpu_ms_per_request']:.2f} ms/req); {probe['load']}",
            flush=True,
        )

    long_run = None
    if args.long_latency > 0:
        long_dataset = synthetic_folder(args.long_requests)
        with ServerProcess(args.long_latency) as slow, tempfile.TemporaryDirectory(prefix="pg-bench-") as tmp:
            long_run, _ = sweep_once(long_dataset, args.long_requests, 32, slow, Path(tmp) / "long")
        show(long_run)

    by_c = {r["concurrency"]: r for r in runs}
    report.figures = {
        "long_latency_sweep": long_run,
        "requests": args.requests,
        "latency_s": args.latency,
        "sweeps": runs,
        "naive": naive,
        "speedup_vs_naive": {str(c): by_c[c]["rate_per_s"] / naive["rate_per_s"] for c in by_c},
        "server_probe": probe,
    }
    for c, speedup in report.figures["speedup_vs_naive"].items():
        print(f"  speed-up over naive at concurrency {c}: {speedup:.1f}x")
    target_c = 32 if 32 in by_c else top
    run = by_c[target_c]
    report.check(
        Check(
            f"throughput at concurrency {target_c} / ideal",
            run["ratio_to_ideal"],
            0.9,
            "of ideal",
            higher=True,
            note=f"{run['rate_per_s']:.1f} of {run['ideal_per_s']:.0f} req/s",
        )
    )
    top_run = by_c[top]
    server_bound = top_run["server_cpu_cores"] > 0.85 or probe["rate_per_s"] < 0.9 * probe["achievable_per_s"]
    verdict = (
        "the server is (close to) the bottleneck"
        if server_bound
        else "the server is not the bottleneck: it answers at the latency bound on its own and used "
        f"{top_run['server_cpu_cores']:.2f} of its ~1 core (one GIL) during the sweep"
    )
    report.figures["server_bottleneck_at_top_concurrency"] = server_bound
    report.notes.append(f"concurrency {top}: {verdict}")
    print(f"  {verdict}")
    report.save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
